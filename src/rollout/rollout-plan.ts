import type { KubernetesObject, V1Container, V1PodTemplateSpec } from "@kubernetes/client-node";
import type { NixImage, RolloutTarget } from "../api/niximage.ts";
import { parseDuration } from "../api/duration.ts";
import { parseImageReference } from "../oci/image-reference.ts";

/**
 * Which workloads run which container of a NixImage, and what to change: pure. Consent lives on
 * the workload (annotation `niximage.io/from: <NixImage name>`, same namespace), so nothing is
 * touched that did not ask. Only the chosen container's `image` is set, to repo@sha256:digest,
 * plus the flake revision on the pod template; a target already there is left alone.
 */

export const rolloutAnnotations = {
  from: "niximage.io/from",
  container: "niximage.io/container",
  /** On the pod template: the flake revision the digest was built from (`kubectl rollout history`). */
  revision: "niximage.io/revision",
} as const;

export const workloadKinds = ["Deployment", "StatefulSet", "DaemonSet", "CronJob"] as const;
export type WorkloadKind = (typeof workloadKinds)[number];

export interface Workload extends KubernetesObject {
  kind: WorkloadKind;
  spec?: {
    template?: V1PodTemplateSpec;
    jobTemplate?: { spec?: { template?: V1PodTemplateSpec } };
    progressDeadlineSeconds?: number;
  };
  status?: {
    observedGeneration?: number;
    replicas?: number;
    updatedReplicas?: number;
    readyReplicas?: number;
    availableReplicas?: number;
    numberReady?: number;
    updatedNumberScheduled?: number;
    desiredNumberScheduled?: number;
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
  };
}

function podTemplateOf(workload: Workload): V1PodTemplateSpec | undefined {
  return workload.kind === "CronJob" ? workload.spec?.jobTemplate?.spec?.template : workload.spec?.template;
}

export interface ContainerPatch {
  workload: Workload;
  container: string;
  init: boolean;
  image: string;
  revision: string | undefined;
  /** The image before the patch, for a rollback. */
  previous: string | undefined;
  /** Restores the previous image after a failed rollout. */
  rollback: boolean;
}

export interface Refusal {
  workload: Workload;
  message: string;
}

export interface RolloutPlan {
  patches: ContainerPatch[];
  refusals: Refusal[];
  targets: RolloutTarget[];
}

/** Finds the container a workload asked to be updated, or says why it cannot. */
export function chosenContainer(workload: Workload): { container: V1Container; init: boolean } | { problem: string } {
  const spec = podTemplateOf(workload)?.spec;
  const containers = spec?.containers ?? [];
  const inits = spec?.initContainers ?? [];
  const wanted = workload.metadata?.annotations?.[rolloutAnnotations.container];
  if (wanted) {
    const main = containers.find((c) => c.name === wanted);
    if (main) return { container: main, init: false };
    const init = inits.find((c) => c.name === wanted);
    if (init) return { container: init, init: true };
    const names = [...containers, ...inits].map((c) => c.name).join(", ");
    return { problem: `container "${wanted}" (annotation ${rolloutAnnotations.container}) does not exist; this workload has: ${names}` };
  }
  if (containers.length === 1) return { container: containers[0]!, init: false };
  return {
    problem: `this workload has ${containers.length} containers (${containers.map((c) => c.name).join(", ")}): name the one to update with the annotation ${rolloutAnnotations.container}`,
  };
}

/**
 * Whether the workload's pods run the current template, how many are ready, and whether the
 * rollout failed. A Deployment says so itself (ProgressDeadlineExceeded, for the generation it
 * observed); StatefulSets and DaemonSets never do, so theirs is a deadline of our own, counted
 * from when the operator set the image (`patchedAt`).
 */
export function workloadProgress(
  workload: Workload,
  deadline?: { patchedAt: string | undefined; ms: number; now: Date },
): { ready: boolean; updatedReplicas?: number; readyReplicas?: number; failed?: string; checkAgainInMs?: number } {
  const status = workload.status ?? {};
  const observed = (status.observedGeneration ?? 0) >= (workload.metadata?.generation ?? 0);
  const own = (ready: boolean) => {
    const since = deadline?.patchedAt ? Date.parse(deadline.patchedAt) : Number.NaN;
    if (ready || !deadline || Number.isNaN(since)) return {};
    const left = since + deadline.ms - deadline.now.getTime();
    return left <= 0
      ? { failed: `${workload.kind} ${workload.metadata?.name} did not run the new image ready within the progress deadline (spec.rollout.progressDeadline)` }
      : { checkAgainInMs: left };
  };
  switch (workload.kind) {
    case "Deployment": {
      const want = (workload.spec as { replicas?: number } | undefined)?.replicas ?? 1;
      const updated = status.updatedReplicas ?? 0;
      const ready = status.readyReplicas ?? 0;
      const deadlineExceeded =
        observed && status.conditions?.find((c) => c.type === "Progressing" && c.status === "False" && c.reason === "ProgressDeadlineExceeded");
      return {
        ready: observed && updated >= want && ready >= want && (status.replicas ?? 0) <= want,
        updatedReplicas: updated,
        readyReplicas: ready,
        ...(deadlineExceeded ? { failed: deadlineExceeded.message ?? "ProgressDeadlineExceeded" } : {}),
      };
    }
    case "StatefulSet": {
      const want = (workload.spec as { replicas?: number } | undefined)?.replicas ?? 1;
      const updated = status.updatedReplicas ?? 0;
      const ready = observed && updated >= want && (status.readyReplicas ?? 0) >= want;
      return { ready, updatedReplicas: updated, readyReplicas: status.readyReplicas ?? 0, ...own(ready) };
    }
    case "DaemonSet": {
      const want = status.desiredNumberScheduled ?? 0;
      const ready = observed && (status.updatedNumberScheduled ?? 0) >= want && (status.numberReady ?? 0) >= want;
      return { ready, updatedReplicas: status.updatedNumberScheduled, readyReplicas: status.numberReady, ...own(ready) };
    }
    case "CronJob":
      // The next run uses the new image; there is nothing to wait for.
      return { ready: true };
  }
}

export interface PlanInput {
  /** The NixImage with the status just decided (latestImage may be new). */
  image: NixImage;
  /** Workloads in the NixImage's namespace that name it in `niximage.io/from`. */
  workloads: readonly Workload[];
  now: Date;
}

export const targetKey = (kind: string, name: string, container: string) => `${kind}/${name}/${container}`;

const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");

/**
 * Why `latest` must not be rolled out, if it must not: only `spec.image.repository@sha256:…`
 * ever is, so a status that names another repository (a stale one after a spec change, or one
 * written by someone else) changes nothing.
 */
function latestImageProblem(latest: string, repository: string): string | undefined {
  try {
    const ref = parseImageReference(latest, "status.latestImage");
    if (!ref.digest) return `${latest} has no digest; only repository@sha256:digest is rolled out`;
    if (latest !== `${repository}@${ref.digest}`) return `${latest} is not in spec.image.repository (${repository}); only ${repository}@sha256:… is rolled out`;
    return undefined;
  } catch (error) {
    return `the built image reference does not parse: ${(error as Error).message}`;
  }
}

/**
 * What to change, with the status that records it: a target's `previousImage`, `rolledBackFrom`
 * and `patchedAt` are written BEFORE its patch is sent, so a crash or a lost status write in
 * between can neither lose the previous image nor send a rolled-back digest again. A rollback
 * whose patch did not land is sent again (the target still runs the digest it was rolled back from).
 */
export function planRollout(input: PlanInput): RolloutPlan & { checkAgainInMs?: number } {
  const { image, now } = input;
  const before = new Map((image.status?.rollout ?? []).map((t) => [targetKey(t.kind, t.name, t.container), t]));
  const plan: RolloutPlan & { checkAgainInMs?: number } = { patches: [], refusals: [], targets: [] };
  const latest = image.status?.latestImage;
  const enabled = image.spec.rollout.policy === "Automatic";
  const deadlineMs = parseDuration(image.spec.rollout.progressDeadline);
  const latestProblem = latest ? latestImageProblem(latest, image.spec.image.repository) : undefined;
  const sorted = [...input.workloads].sort((a, b) => `${a.kind}/${a.metadata?.name}`.localeCompare(`${b.kind}/${b.metadata?.name}`));
  for (const workload of sorted) {
    const name = workload.metadata?.name ?? "";
    const chosen = chosenContainer(workload);
    if ("problem" in chosen) {
      plan.refusals.push({ workload, message: chosen.problem });
      plan.targets.push({
        kind: workload.kind,
        name,
        container: workload.metadata?.annotations?.[rolloutAnnotations.container] ?? "",
        message: chosen.problem,
      });
      continue;
    }
    const { container, init } = chosen;
    const earlier = before.get(targetKey(workload.kind, name, container.name));
    const progress = workloadProgress(workload, { patchedAt: earlier?.patchedAt, ms: deadlineMs, now });
    const target: RolloutTarget = {
      kind: workload.kind,
      name,
      container: container.name,
      ...(container.image ? { image: container.image } : {}),
      ready: progress.ready && container.image === latest,
      ...(progress.updatedReplicas !== undefined ? { updatedReplicas: progress.updatedReplicas } : {}),
      ...(progress.readyReplicas !== undefined ? { readyReplicas: progress.readyReplicas } : {}),
      ...(earlier?.previousImage ? { previousImage: earlier.previousImage } : {}),
      ...(earlier?.rolledBackFrom ? { rolledBackFrom: earlier.rolledBackFrom } : {}),
      ...(earlier?.patchedAt ? { patchedAt: earlier.patchedAt } : {}),
    };
    plan.targets.push(target);
    if (!enabled || !latest) continue;
    if (latestProblem) {
      plan.refusals.push({ workload, message: latestProblem });
      target.message = latestProblem;
      continue;
    }
    const rollback = (from: string, to: string, why: string) => {
      plan.patches.push({ workload, container: container.name, init, image: to, revision: undefined, previous: from, rollback: true });
      target.image = to;
      target.ready = false;
      target.rolledBackFrom = from;
      target.patchedAt = rfc3339(now);
      target.message = `rollout failed (${why}); rolled back to ${to}`;
    };
    if (earlier?.rolledBackFrom === latest) {
      // Rolled back before: never again this digest. A rollback recorded whose patch did not
      // land (the workload still runs the digest) is sent again.
      if (container.image === latest && earlier.previousImage && earlier.previousImage !== latest)
        rollback(latest, earlier.previousImage, "rollback not applied yet");
      else target.message = `rollout failed: ${latest} did not become ready and was rolled back; waiting for a new build`;
      continue;
    }
    if (container.image === latest) {
      if (progress.failed) {
        target.message = `rollout failed: ${progress.failed}`;
        if (image.spec.rollout.rollbackOnFailure && earlier?.previousImage && earlier.previousImage !== latest)
          rollback(latest, earlier.previousImage, progress.failed);
      } else if (progress.checkAgainInMs !== undefined) {
        plan.checkAgainInMs = Math.min(plan.checkAgainInMs ?? Infinity, progress.checkAgainInMs);
      }
      continue;
    }
    if (container.image) target.previousImage = container.image;
    delete target.rolledBackFrom;
    target.image = latest;
    target.ready = false;
    target.patchedAt = rfc3339(now);
    if (workload.kind === "StatefulSet" || workload.kind === "DaemonSet") plan.checkAgainInMs = Math.min(plan.checkAgainInMs ?? Infinity, deadlineMs);
    plan.patches.push({
      workload,
      container: container.name,
      init,
      image: latest,
      revision: image.status?.latestRevision?.rev,
      previous: container.image,
      rollback: false,
    });
  }
  return plan;
}

/**
 * The server-side apply body that sets just one container's image (and the revision annotation
 * on the pod template). Containers are a list keyed by name, so the field manager ends up
 * owning exactly `image` of that entry and nothing else of the workload.
 */
export function applyBody(patch: ContainerPatch): object {
  const { workload } = patch;
  const containerField = patch.init ? "initContainers" : "containers";
  const template = {
    metadata: patch.revision ? { annotations: { [rolloutAnnotations.revision]: patch.revision } } : {},
    spec: { [containerField]: [{ name: patch.container, image: patch.image }] },
  };
  const apiVersion = workload.kind === "CronJob" ? "batch/v1" : "apps/v1";
  return {
    apiVersion,
    kind: workload.kind,
    metadata: { name: workload.metadata?.name, namespace: workload.metadata?.namespace },
    spec: workload.kind === "CronJob" ? { jobTemplate: { spec: { template } } } : { template },
  };
}

/**
 * Whether the live workload already carries this patch: the reconcile that sent it may have lost
 * the reply, or the cache it decided from may predate it (a restarted API server, a dropped watch).
 */
export function patchApplied(live: Workload, patch: ContainerPatch): boolean {
  const template = podTemplateOf(live);
  const containers = (patch.init ? template?.spec?.initContainers : template?.spec?.containers) ?? [];
  const imageSet = containers.some((c) => c.name === patch.container && c.image === patch.image);
  const revisionSet = patch.revision === undefined || template?.metadata?.annotations?.[rolloutAnnotations.revision] === patch.revision;
  return imageSet && revisionSet;
}

export function workloadPath(kind: WorkloadKind, namespace: string, name?: string): string {
  const base = kind === "CronJob" ? `/apis/batch/v1/namespaces/${namespace}/cronjobs` : `/apis/apps/v1/namespaces/${namespace}/${kind.toLowerCase()}s`;
  return name ? `${base}/${name}` : base;
}
