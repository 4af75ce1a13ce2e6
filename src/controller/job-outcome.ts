import type { V1ContainerStatus, V1Job, V1OwnerReference, V1Pod } from "@kubernetes/client-node";
import {
  cacheResultSchema,
  parseStepResult,
  pushResultSchema,
  STORE_INCOMPATIBLE_EXIT_CODE,
  TRANSIENT_EXIT_CODE,
  warmResultSchema,
  type PushStepResult,
  type WarmResult,
} from "../builder/step-results.ts";
import type { BuildBlocker } from "./build-blockers.ts";
import { annotations, labels } from "./names.ts";

/**
 * What the controller needs to know about one builder Job, read from the Job and its pods.
 * The push step's termination message carries the result; a failed step's termination
 * message carries its last log lines (terminationMessagePolicy FallbackToLogsOnError).
 * Failures are sorted: transient ones (a registry outage seen by the push step, an evicted or
 * preempted pod, a result lost with its pod) are retried; the rest would repeat with the same
 * inputs. Only pods whose controller is this Job (by UID) count: labels are for selection.
 *
 * The cache step (config.binaryCache) runs beside push/report and never decides the build: the
 * result is taken as soon as push (report) has exited 0 with its result, while the cache copy may
 * still run, and also when the cache step then fails the Job. Its own outcome is `cacheCopy`.
 */

export interface StepFailure {
  step: string;
  exitCode?: number;
  reason?: string;
  message: string;
  /** The failure may pass: the build is retried with backoff. */
  transient?: boolean;
}

export interface JobView {
  name: string;
  kind: "Image" | "Warm";
  number: number;
  state: "Running" | "Succeeded" | "Failed";
  reasons: string[];
  specHash?: string;
  builderHash?: string;
  rebuildToken?: string;
  flake?: string;
  storeVolume?: string;
  /** When the controller started the build, by its clock (the Job's startTime is the API server's). */
  requestedAt?: string;
  startTime?: string;
  completionTime?: string;
  result?: PushStepResult;
  warmResult?: WarmResult;
  failure?: StepFailure;
  /** Which try of the same inputs this build is (1 = the first). */
  attempt?: number;
  /** When a failed Job was marked failed (a failed Job has no completionTime). */
  failedAt?: string;
  /** Whether a pod of this Job may still run (the store volume is in use until none does). */
  podsActive?: boolean;
  /** Pods labelled for this Job whose controller is not this Job: ignored. */
  foreignPods?: string[];
  /** Why a running build is not getting anywhere (build-blockers.ts), set by the reconciler. */
  blocked?: BuildBlocker;
  /** Look at this running build again after this long (a grace period ends, Events may arrive). */
  recheckInMs?: number;
  /** The cache step's outcome once it has terminated without copying the closure (config.binaryCache). */
  cacheCopyFailed?: { cache?: string; message: string };
}

function jobState(job: V1Job): JobView["state"] {
  for (const condition of job.status?.conditions ?? []) {
    if (condition.status !== "True") continue;
    if (condition.type === "Complete" || condition.type === "SuccessCriteriaMet") return "Succeeded";
    if (condition.type === "Failed" || condition.type === "FailureTarget") return "Failed";
  }
  return "Running";
}

const asTime = (t: Date | string | undefined) => (t === undefined ? undefined : typeof t === "string" ? t : t.toISOString());

/** The controller owner of an object, if any. */
export const controllerOf = (refs: readonly V1OwnerReference[] | undefined) => refs?.find((r) => r.controller === true);

const memoryLimit = (pod: V1Pod, container: string) =>
  [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find((c) => c.name === container)?.resources?.limits?.memory;

/** The pod was evicted, preempted or otherwise disrupted: nothing the build did. */
function disruption(pod: V1Pod): StepFailure | undefined {
  const target = pod.status?.conditions?.find((c) => c.type === "DisruptionTarget" && c.status === "True");
  if (pod.status?.reason !== "Evicted" && pod.status?.reason !== "Preempting" && !target) return undefined;
  const reason = target?.reason ?? pod.status?.reason ?? "Disrupted";
  const message = pod.status?.message ?? target?.message ?? "the builder pod was disrupted";
  return { step: "pod", reason, message: `the builder pod was stopped from outside (${reason}): ${message}`.slice(0, 4000), transient: true };
}

/** The step that failed: the first init container or container that terminated non-zero (the cache step never decides the build). */
export function failedStep(pod: V1Pod): StepFailure | undefined {
  const statuses: V1ContainerStatus[] = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].filter(
    (s) => s.name !== "cache",
  );
  for (const status of statuses) {
    const terminated = status.state?.terminated ?? status.lastState?.terminated;
    if (terminated && terminated.exitCode !== 0) {
      const log = (terminated.message ?? "").trim();
      if (terminated.reason === "OOMKilled") {
        const limit = memoryLimit(pod, status.name);
        return {
          step: status.name,
          exitCode: terminated.exitCode,
          reason: "OOMKilled",
          message:
            `step ${status.name} was killed for using more memory than its limit (${limit ?? "no limit set: the node ran out"}); raise spec.build.resources.limits.memory${log ? `. Last output: ${log}` : ""}`.slice(
              -4000,
            ),
        };
      }
      if (status.name === "prepare" && terminated.exitCode === STORE_INCOMPATIBLE_EXIT_CODE) {
        // Not the build's doing and not passing: every build on this volume fails alike until it is replaced.
        const claim = pod.spec?.volumes?.find((v) => v.name === "store")?.persistentVolumeClaim?.claimName ?? "?";
        return {
          step: status.name,
          exitCode: terminated.exitCode,
          reason: "StoreIncompatible",
          message: `the prepare step refused store volume ${claim} (PVC ${pod.metadata?.namespace ?? "?"}/${claim}): ${log}`.slice(0, 4000),
        };
      }
      return {
        step: status.name,
        exitCode: terminated.exitCode,
        reason: terminated.reason,
        message: log.slice(-4000) || `step ${status.name} exited with code ${terminated.exitCode}`,
        // Only the word of steps that run no flake outputs is taken: push, and fetch (source server or network down).
        ...((status.name === "push" || status.name === "fetch") && terminated.exitCode === TRANSIENT_EXIT_CODE ? { transient: true } : {}),
      };
    }
  }
  return undefined;
}

/** The main container's termination: undefined while it has not terminated (or the cache does not show it yet). */
function terminationOf(pod: V1Pod, container: string): { exitCode: number; message: string | undefined; finishedAt: string | undefined } | undefined {
  const terminated = pod.status?.containerStatuses?.find((s) => s.name === container)?.state?.terminated;
  return terminated ? { exitCode: terminated.exitCode, message: terminated.message, finishedAt: asTime(terminated.finishedAt) } : undefined;
}

/** The step whose exit 0 completes the build: push (image builds) or report (warm builds). */
const resultStep = (kind: JobView["kind"]) => (kind === "Image" ? "push" : "report");

/**
 * The pod finished the build itself, whatever the Job says: its push (report) step exited 0 and
 * only the cache step may still run, or may have failed the Job (config.binaryCache).
 */
function doneBeforeCache(job: V1Job, pod: V1Pod | undefined, kind: JobView["kind"]): boolean {
  if (!pod || !job.spec?.template.spec?.containers?.some((c) => c.name === "cache")) return false;
  return terminationOf(pod, resultStep(kind))?.exitCode === 0;
}

/** What failed in the cache step, once it has terminated without copying (undefined while it runs or after a copy). */
function cacheCopyFailure(pod: V1Pod | undefined): JobView["cacheCopyFailed"] {
  const end = pod && terminationOf(pod, "cache");
  if (!end) return undefined;
  const result = parseStepResult(cacheResultSchema, end.message);
  if (result?.copied) return undefined;
  if (result) return { cache: result.cache, message: result.error ?? "nix copy failed" };
  // Not the step's JSON: it failed before copying (its message, or its last log lines).
  const text = (end.message ?? "").trim();
  return { message: (text || `the cache step exited with code ${end.exitCode}`).slice(-1000) };
}

const terminalPod = (pod: V1Pod) => pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed";

/** Newest pod first: with podReplacementPolicy Failed, the last pod tells the story. */
function newestPod(pods: readonly V1Pod[]): V1Pod | undefined {
  return [...pods].sort((a, b) => String(asTime(b.metadata?.creationTimestamp)).localeCompare(String(asTime(a.metadata?.creationTimestamp))))[0];
}

const ownPods = (job: V1Job, labelled: readonly V1Pod[]) =>
  labelled.filter((p) => job.metadata?.uid !== undefined && controllerOf(p.metadata?.ownerReferences)?.uid === job.metadata.uid);

/** The Job's newest pod whose controller is this Job (by UID). */
export const newestOwnPod = (job: V1Job, labelled: readonly V1Pod[]) => newestPod(ownPods(job, labelled));

export function jobView(job: V1Job, labelled: readonly V1Pod[]): JobView {
  const meta = job.metadata ?? {};
  const kind = meta.labels?.[labels.buildKind] === "Warm" ? "Warm" : "Image";
  const pods = ownPods(job, labelled);
  const pod = newestPod(pods);
  const early = doneBeforeCache(job, pod, kind);
  const state = early ? "Succeeded" : jobState(job);
  const failedCondition = job.status?.conditions?.find((c) => (c.type === "Failed" || c.type === "FailureTarget") && c.status === "True");
  const view: JobView = {
    name: meta.name ?? "",
    kind,
    number: Number(meta.labels?.[labels.buildNumber] ?? 0),
    state,
    reasons: (meta.annotations?.[annotations.reasons] ?? "").split(",").filter(Boolean),
    specHash: meta.annotations?.[annotations.specHash],
    builderHash: meta.annotations?.[annotations.builderHash],
    rebuildToken: meta.annotations?.[annotations.rebuildToken],
    flake: meta.annotations?.[annotations.revision],
    storeVolume: job.spec?.template.spec?.volumes?.find((v) => v.name === "store")?.persistentVolumeClaim?.claimName,
    requestedAt: meta.annotations?.[annotations.requestedAt],
    startTime: asTime(job.status?.startTime),
    // With a cache step, the build ends with its push (report) step, whenever the Job completes.
    completionTime: (early && pod ? terminationOf(pod, resultStep(kind))?.finishedAt : undefined) ?? asTime(job.status?.completionTime),
    attempt: Math.max(1, Math.trunc(Number(meta.annotations?.[annotations.attempt] ?? 1)) || 1),
    podsActive: pods.some((p) => !terminalPod(p)),
    foreignPods: labelled.filter((p) => !pods.includes(p)).map((p) => p.metadata?.name ?? ""),
  };
  const cacheFailed = cacheCopyFailure(pod);
  if (cacheFailed) view.cacheCopyFailed = cacheFailed;
  if (state === "Failed" && failedCondition) view.failedAt = asTime(failedCondition.lastTransitionTime);
  if (state === "Succeeded" && kind === "Image") {
    const main = pod && terminationOf(pod, "push");
    if (!pod) {
      // The pod went before its result was read (deleted, garbage collected): nothing wrong
      // with the build, but there is no image to show for it.
      view.state = "Failed";
      view.failedAt = view.completionTime;
      view.failure = { step: "push", reason: "ResultLost", message: "the builder pod was deleted before its result was read", transient: true };
    } else if (!main) {
      // The Job says done, the cache does not show the push step's end yet: wait for it.
      view.state = "Running";
    } else {
      view.result = parseStepResult(pushResultSchema, main.exitCode === 0 ? main.message : undefined);
      if (!view.result) {
        view.state = "Failed";
        view.failedAt = view.completionTime;
        view.failure = { step: "push", message: "the push step finished without a readable result in its termination message" };
      }
    }
  } else if (state === "Succeeded" && pod) {
    const report = terminationOf(pod, "report");
    view.warmResult = parseStepResult(warmResultSchema, report?.exitCode === 0 ? report.message : undefined);
  }
  if (view.state === "Failed" && !view.failure) {
    const deadline = failedCondition?.reason === "DeadlineExceeded";
    view.failure = (pod && (disruption(pod) ?? failedStep(pod))) ?? {
      step: "job",
      reason: failedCondition?.reason,
      message: failedCondition?.message ?? "the builder Job failed",
      // Without a pod to tell why, only a deadline is the build's own doing.
      ...(!pod && !deadline ? { transient: true } : {}),
    };
  }
  return view;
}

/**
 * PURE: the Warning Event for a build whose closure did not reach the cluster binary cache: what
 * failed, that the build itself is not affected, and what to do. The cache step's message names
 * the cache without query or credentials; URL credentials are cut here too, as a last line.
 */
export function cacheCopyFailedMessage(view: JobView, namespace: string): string | undefined {
  const failed = view.cacheCopyFailed;
  if (!failed) return undefined;
  const where = failed.cache ? ` to the binary cache ${redactUserinfo(failed.cache)}` : " to the binary cache";
  const reason = redactUserinfo(failed.message).replace(/\s+/g, " ").trim().slice(0, 500).replace(/\.+$/, "");
  return (
    `build ${view.name}: copying the closure${where} failed: ${reason}. The build's result does not depend on it; ` +
    `builds on other store volumes build this closure again instead of substituting it. What to do: check config.binaryCache ` +
    `(uploadUrl, the signing key and credentials Secrets) and that builder pods can reach the cache (config.builder.networkPolicy.allowedCidrs ` +
    `for an in-cluster cache); details: kubectl logs -n ${namespace} job/${view.name} -c cache`
  );
}

/** `scheme://user:password@host` -> `scheme://host`, anywhere in a text. */
const redactUserinfo = (text: string) => text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s/@]+@/gi, "$1");
