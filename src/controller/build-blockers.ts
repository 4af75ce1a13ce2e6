import type { CoreV1Event, V1ContainerStatus, V1PersistentVolumeClaim, V1Pod } from "@kubernetes/client-node";

/**
 * Why a running builder Job is not getting anywhere, read from objects the controller already
 * has (the pod's status, the store volume's phase) and, only when those cannot say, from the
 * Warning Events the Job controller or the volume controller recorded (a Job that cannot create
 * its pod has no other trace). Pure: the reconciler reads the Events, this decides.
 * The build stays Running: most of these are fixed without a new commit (push the builder
 * image, free a node, create the Secret), and the Job's own deadline still ends it.
 */

export const blockerReasons = {
  /** A step's image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName). */
  BuilderImagePullFailed: "BuilderImagePullFailed",
  /** The scheduler finds no node for the builder pod. */
  BuilderUnschedulable: "BuilderUnschedulable",
  /** The store volume claim stays Pending (no storage class, an access mode the class cannot provision). */
  StoreVolumePending: "StoreVolumePending",
  /** The Job cannot create its pod (Pod Security admission, ResourceQuota, LimitRange): FailedCreate. */
  BuilderPodRejected: "BuilderPodRejected",
  /** A step cannot start: a Secret or ConfigMap it uses is missing (CreateContainerConfigError). */
  BuilderConfigError: "BuilderConfigError",
} as const;
type BlockerReason = (typeof blockerReasons)[keyof typeof blockerReasons];

export interface BuildBlocker {
  reason: BlockerReason;
  message: string;
}

/** How long a Job may have no pod, or its store volume stay Pending, before it is said. */
export const blockerGraceMs = { noPod: 3_000, volumePending: 10_000, podStarting: 10_000 } as const;
/** How often a Job that may be blocked is looked at again while nothing it watches changes. */
const blockerRecheckMs = 5_000;

const pullReasons = new Set(["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"]);
const configReasons = new Set(["CreateContainerConfigError", "CreateContainerError"]);

const imageOf = (pod: V1Pod, container: string) =>
  [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find((c) => c.name === container)?.image ?? "?";

/** A message from elsewhere, cut, without its final period (ours follows). */
const clip = (text: string | undefined, max = 600) =>
  (text ?? "")
    .trim()
    .slice(0, max)
    .replace(/[.\s]+$/, "");

/** What a pod's own status says is stopping it (pull errors, config errors, unschedulable). */
function podBlocker(pod: V1Pod): BuildBlocker | undefined {
  const statuses: V1ContainerStatus[] = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  for (const status of statuses) {
    const waiting = status.state?.waiting;
    if (!waiting?.reason) continue;
    if (pullReasons.has(waiting.reason)) {
      const image = imageOf(pod, status.name);
      return {
        reason: blockerReasons.BuilderImagePullFailed,
        message: `step ${status.name} cannot pull its image ${image} (${waiting.reason}: ${clip(waiting.message) || "no message"}). Check that the image exists and the node can pull from its registry (operator config builder.nixImage / builder.pushImage); the kubelet keeps retrying, so the build goes on once the image can be pulled, until the Job's deadline`,
      };
    }
    if (configReasons.has(waiting.reason)) {
      return {
        reason: blockerReasons.BuilderConfigError,
        message: `step ${status.name} cannot start (${waiting.reason}: ${clip(waiting.message) || "no message"}). Create the Secret or ConfigMap it names in namespace ${pod.metadata?.namespace}; the kubelet retries, so the build goes on once it exists, until the Job's deadline`,
      };
    }
  }
  const scheduled = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
  if (scheduled?.status === "False" && scheduled.reason === "Unschedulable") {
    return {
      reason: blockerReasons.BuilderUnschedulable,
      message: `the builder pod ${pod.metadata?.name} cannot be scheduled: ${clip(scheduled.message) || "no message from the scheduler"}. Free or add node capacity, or lower spec.build.resources.requests (they apply to every step); it is scheduled as soon as a node fits, until the Job's deadline`,
    };
  }
  return undefined;
}

const eventTime = (e: CoreV1Event) => String(e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? e.metadata?.creationTimestamp ?? "");

/** The newest Event with one of these reasons. */
function newestEvent(events: readonly CoreV1Event[] | undefined, reasons: readonly string[]): CoreV1Event | undefined {
  return (events ?? []).filter((e) => reasons.includes(e.reason ?? "")).sort((a, b) => eventTime(b).localeCompare(eventTime(a)))[0];
}

export interface BlockerInput {
  now: Date;
  /** When the controller asked for the build (its own clock). */
  requestedAt?: string;
  /** The Job's newest own pod, if any. */
  pod?: V1Pod;
  storeVolume?: V1PersistentVolumeClaim;
  /** Events about the Job (read only when it has no pod past the grace period). */
  jobEvents?: readonly CoreV1Event[];
  /** Events about the store volume (read only when it is Pending past the grace period). */
  volumeEvents?: readonly CoreV1Event[];
  /** Events about the pod (read only when it is on a node and still Pending past the grace period). */
  podEvents?: readonly CoreV1Event[];
}

export interface BlockerCheck {
  blocker?: BuildBlocker;
  /** Look again after this long: the grace period ends, or Events may still arrive. */
  recheckInMs?: number;
  /** Which Events the reconciler should read for a full answer. */
  needEvents?: { job?: boolean; volume?: boolean; pod?: boolean };
}

/** Why a running build is stuck, if it is: the most specific signal first. */
export function buildBlocker(input: BlockerInput): BlockerCheck {
  const { pod, storeVolume, now } = input;
  const age = input.requestedAt ? now.getTime() - Date.parse(input.requestedAt) : Number.POSITIVE_INFINITY;
  const ownBlocker = pod && podBlocker(pod);
  if (ownBlocker && ownBlocker.reason !== blockerReasons.BuilderUnschedulable) return { blocker: ownBlocker };

  // No pod past the grace period: the Job controller's FailedCreate says why (quota, Pod Security).
  const podMissing = !pod && age >= blockerGraceMs.noPod;
  // A pod not on a node yet while its store volume stays Pending: the volume is why.
  const unplaced = !pod || (!pod.spec?.nodeName && pod.status?.phase !== "Running" && pod.status?.phase !== "Succeeded" && pod.status?.phase !== "Failed");
  const volumePending = unplaced && storeVolume?.status?.phase === "Pending" && age >= blockerGraceMs.volumePending;
  // On a node and still Pending: pulling an image, or a volume that cannot be mounted (a missing
  // ConfigMap or Secret, e.g. spec.build.caBundleRef), which only the kubelet's FailedMount Event says.
  const starting = !!pod?.spec?.nodeName && pod.status?.phase === "Pending" && age >= blockerGraceMs.podStarting;
  const needEvents = {
    ...(podMissing && input.jobEvents === undefined ? { job: true } : {}),
    ...(volumePending && input.volumeEvents === undefined ? { volume: true } : {}),
    ...(starting && !ownBlocker && input.podEvents === undefined ? { pod: true } : {}),
  };
  if (Object.keys(needEvents).length > 0) return { needEvents, ...(ownBlocker ? { blocker: ownBlocker } : {}) };

  const rejected = podMissing ? newestEvent(input.jobEvents, ["FailedCreate"]) : undefined;
  if (rejected) {
    return {
      blocker: {
        reason: blockerReasons.BuilderPodRejected,
        message: `the builder Job cannot create its pod: ${clip(rejected.message, 900)}. If a ResourceQuota refuses it, raise the quota or lower spec.build.resources (every step's requests and limits count); if Pod Security admission refuses it, the namespace's pod-security.kubernetes.io/enforce level must allow the builder pod (baseline: its build step keeps capabilities the restricted level refuses). The Job keeps trying until its deadline`,
      },
      recheckInMs: blockerRecheckMs,
    };
  }
  if (volumePending) {
    const event = newestEvent(input.volumeEvents, ["ProvisioningFailed", "FailedBinding", "ExternalProvisioning", "WaitForFirstConsumer"]);
    const how = `${storeVolume.spec?.storageClassName ? `storage class ${storeVolume.spec.storageClassName}` : "no storage class"}, access modes ${(storeVolume.spec?.accessModes ?? []).join(", ") || "none"}`;
    return {
      blocker: {
        reason: blockerReasons.StoreVolumePending,
        message: `store volume ${storeVolume.metadata?.name} (${how}) is still Pending${event ? `: ${event.reason}: ${clip(event.message)}` : ""}. Set the operator config's store.storageClassName to a class that can provision it (and store.accessMode to ReadWriteOnce where the class does not support ReadWriteOncePod), or create a matching PersistentVolume; the build goes on once it is bound, until the Job's deadline`,
      },
      recheckInMs: blockerRecheckMs,
    };
  }
  if (ownBlocker) return { blocker: ownBlocker };
  if (starting) {
    const mount = newestEvent(input.podEvents, ["FailedMount"]);
    if (mount && /\b(configmap|secret)\b/i.test(mount.message ?? "")) {
      return {
        blocker: {
          reason: blockerReasons.BuilderConfigError,
          message: `the builder pod ${pod.metadata?.name} cannot mount its volumes (FailedMount: ${clip(mount.message)}). Create the ConfigMap or Secret it names in namespace ${pod.metadata?.namespace} (spec.build.caBundleRef, the operator config's registries[].caBundle, the Secrets in the spec); the kubelet retries, so the build goes on once it exists, until the Job's deadline`,
        },
        recheckInMs: blockerRecheckMs,
      };
    }
    return { recheckInMs: blockerRecheckMs };
  }
  // Not stuck (yet): look again when a grace period ends, or while there is no pod to watch.
  if (!pod) return { recheckInMs: podMissing ? blockerRecheckMs : blockerGraceMs.noPod - age };
  if (unplaced && storeVolume?.status?.phase === "Pending") return { recheckInMs: blockerGraceMs.volumePending - age };
  if (pod.spec?.nodeName && pod.status?.phase === "Pending") return { recheckInMs: Math.max(1, blockerGraceMs.podStarting - age) };
  return {};
}
