import type { KubernetesObject, V1Container, V1PodTemplateSpec } from "@kubernetes/client-node";
import type { NixImage, RolloutTarget } from "../api/niximage.ts";
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

export function podTemplateOf(workload: Workload): V1PodTemplateSpec | undefined {
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

/** Whether the workload's pods run the current template, and how many are ready. */
export function workloadProgress(workload: Workload): { ready: boolean; updatedReplicas?: number; readyReplicas?: number; failed?: string } {
  const status = workload.status ?? {};
  const observed = (status.observedGeneration ?? 0) >= (workload.metadata?.generation ?? 0);
  const deadline = status.conditions?.find((c) => c.type === "Progressing" && c.status === "False" && c.reason === "ProgressDeadlineExceeded");
  switch (workload.kind) {
    case "Deployment":
    case "StatefulSet": {
      const want = (workload.spec as { replicas?: number } | undefined)?.replicas ?? 1;
      const updated = status.updatedReplicas ?? 0;
      const ready = status.readyReplicas ?? 0;
      return {
        ready: observed && updated >= want && ready >= want && (status.replicas ?? 0) <= want,
        updatedReplicas: updated,
        readyReplicas: ready,
        ...(deadline ? { failed: deadline.message ?? "ProgressDeadlineExceeded" } : {}),
      };
    }
    case "DaemonSet": {
      const want = status.desiredNumberScheduled ?? 0;
      return {
        ready: observed && (status.updatedNumberScheduled ?? 0) >= want && (status.numberReady ?? 0) >= want,
        updatedReplicas: status.updatedNumberScheduled,
        readyReplicas: status.numberReady,
      };
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
}

export const targetKey = (kind: string, name: string, container: string) => `${kind}/${name}/${container}`;

export function planRollout(input: PlanInput): RolloutPlan {
  const { image } = input;
  const before = new Map((image.status?.rollout ?? []).map((t) => [targetKey(t.kind, t.name, t.container), t]));
  const plan: RolloutPlan = { patches: [], refusals: [], targets: [] };
  const latest = image.status?.latestImage;
  const enabled = image.spec.rollout.policy === "Automatic";
  let latestProblem: string | undefined;
  if (latest) {
    try {
      const ref = parseImageReference(latest, "status.latestImage");
      if (!ref.digest) latestProblem = `${latest} has no digest; only repository@sha256:digest is rolled out`;
    } catch (error) {
      latestProblem = `the built image reference does not parse: ${(error as Error).message}`;
    }
  }
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
    const progress = workloadProgress(workload);
    const earlier = before.get(targetKey(workload.kind, name, container.name));
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
    };
    plan.targets.push(target);
    if (!enabled || !latest) continue;
    if (latestProblem) {
      plan.refusals.push({ workload, message: latestProblem });
      target.message = latestProblem;
      continue;
    }
    if (earlier?.rolledBackFrom === latest) {
      target.message = `rollout failed: ${latest} did not become ready and was rolled back; waiting for a new build`;
      continue;
    }
    if (progress.failed && container.image === latest) {
      target.message = `rollout failed: ${progress.failed}`;
      if (image.spec.rollout.rollbackOnFailure && earlier?.previousImage && earlier.previousImage !== latest) {
        plan.patches.push({ workload, container: container.name, init, image: earlier.previousImage, revision: undefined, previous: latest, rollback: true });
        target.rolledBackFrom = latest;
        target.message = `rollout failed (${progress.failed}); rolled back to ${earlier.previousImage}`;
      }
      continue;
    }
    if (container.image === latest) continue;
    if (container.image) target.previousImage = container.image;
    delete target.rolledBackFrom;
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

export function workloadPath(kind: WorkloadKind, namespace: string, name?: string): string {
  const base = kind === "CronJob" ? `/apis/batch/v1/namespaces/${namespace}/cronjobs` : `/apis/apps/v1/namespaces/${namespace}/${kind.toLowerCase()}s`;
  return name ? `${base}/${name}` : base;
}
