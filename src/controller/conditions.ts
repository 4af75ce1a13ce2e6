import type { Condition } from "../api/niximage.ts";
import { blockerReasons } from "./build-blockers.ts";
import { contestedPrefix } from "./rollout-contest.ts";

/**
 * kstatus-compatible conditions, computed in one place. Reasons are PascalCase constants;
 * `lastTransitionTime` moves only when a condition's status flips.
 */
export const reasons = {
  Succeeded: "Succeeded",
  Building: "Building",
  WaitingForStoreVolume: "WaitingForStoreVolume",
  WaitingForCapacity: "WaitingForCapacity",
  BuildFailed: "BuildFailed",
  /** The prepare step refused the store volume: its Nix database is of another schema version. */
  StoreIncompatible: "StoreIncompatible",
  InvalidSpec: "InvalidSpec",
  PushSecretNotFound: "PushSecretNotFound",
  /** spec.image.attestations.signingKeySecretRef names a Secret that does not exist. */
  SigningKeySecretNotFound: "SigningKeySecretNotFound",
  /** spec.sshKeySecretRef or spec.sourceCredentialsSecretRef names a Secret that does not exist. */
  SourceSecretNotFound: "SourceSecretNotFound",
  PushSecretNotAllowed: "PushSecretNotAllowed",
  RevisionUnavailable: "RevisionUnavailable",
  Suspended: "Suspended",
  NotBuilt: "NotBuilt",
  RolledOut: "RolledOut",
  RollingOut: "RollingOut",
  RolloutFailed: "RolloutFailed",
  RolloutRefused: "RolloutRefused",
  /** Another writer keeps setting a workload's image back: the operator stopped applying it for a while (rollout-contest.ts). */
  RolloutContested: "RolloutContested",
  /** The API server refused to create the builder Job (400/403/404/422): retrying cannot help. */
  JobRejected: "JobRejected",
  /** The API server refused the store volume claim or its lease. */
  StoreVolumeRejected: "StoreVolumeRejected",
  /** The operator may not read a Secret named in the spec (it checks only that it exists). */
  SecretNotReadable: "SecretNotReadable",
  /** The API server refused another of our writes. */
  WriteRejected: "WriteRejected",
  /** A write failed for a reason that may pass (5xx, 429, timeout, network): retried with backoff. */
  RetryingAfterError: "RetryingAfterError",
  /** A Job or pod labelled as ours that is not ours (by controller UID): ignored. */
  ForeignObjectIgnored: "ForeignObjectIgnored",
  /** A build failed for a reason that may pass (registry outage, evicted pod, lost result). */
  RetryingBuild: "RetryingBuild",
  /** A running build cannot progress (build-blockers.ts): it stays Running until fixed or its deadline. */
  ...blockerReasons,
} as const;
export type Reason = (typeof reasons)[keyof typeof reasons];

type ConditionType = "Ready" | "Reconciling" | "Stalled" | "RolledOut";

export interface DesiredCondition {
  type: ConditionType;
  status: "True" | "False" | "Unknown";
  reason: Reason;
  message: string;
}

export type Phase = "Ready" | "InProgress" | "Retrying" | "Stalled" | "Suspended";

/** One overall state: what decide concludes, or what an error turns it into. */
export interface Summary {
  phase: Phase;
  reason: Reason;
  message: string;
}

/** The three conditions for one overall state. */
export function conditionsFor(state: Summary): DesiredCondition[] {
  const { phase, reason, message } = state;
  switch (phase) {
    case "Ready":
      return [
        { type: "Ready", status: "True", reason, message },
        { type: "Reconciling", status: "False", reason, message },
        { type: "Stalled", status: "False", reason, message },
      ];
    case "InProgress":
      return [
        { type: "Ready", status: "Unknown", reason, message },
        { type: "Reconciling", status: "True", reason, message },
        { type: "Stalled", status: "False", reason, message },
      ];
    case "Retrying":
      // Something failed and is retried: not ready, but not given up on either.
      return [
        { type: "Ready", status: "False", reason, message },
        { type: "Reconciling", status: "True", reason, message },
        { type: "Stalled", status: "False", reason, message },
      ];
    case "Stalled":
      return [
        { type: "Ready", status: "False", reason, message },
        { type: "Reconciling", status: "False", reason, message },
        { type: "Stalled", status: "True", reason, message },
      ];
    case "Suspended":
      return [
        { type: "Ready", status: "Unknown", reason, message },
        { type: "Reconciling", status: "False", reason, message },
        { type: "Stalled", status: "False", reason, message },
      ];
  }
}

/** Merges desired conditions into the current ones, keeping lastTransitionTime unless status flips. */
export function mergeConditions(current: readonly Condition[] | undefined, desired: readonly DesiredCondition[], generation: number, now: Date): Condition[] {
  return desired.map((want) => {
    const had = current?.find((c) => c.type === want.type);
    const lastTransitionTime = had && had.status === want.status ? had.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, "Z");
    return { type: want.type, status: want.status, observedGeneration: generation, lastTransitionTime, reason: want.reason, message: want.message };
  });
}

/** The RolledOut view: do the opted-in workloads run the latest image? Undefined without targets. */
export function rolledOutCondition(
  targets: readonly { kind: string; name: string; ready?: boolean; message?: string }[],
  latestImage: string | undefined,
): DesiredCondition | undefined {
  if (targets.length === 0 || !latestImage) return undefined;
  const failed = targets.filter((t) => t.message?.startsWith("rollout failed"));
  const contested = targets.filter((t) => t.message?.startsWith(contestedPrefix));
  const refused = targets.filter((t) => t.message && !t.message.startsWith("rollout failed") && !t.message.startsWith(contestedPrefix) && !t.ready);
  const pending = targets.filter((t) => !t.ready);
  const list = (ts: typeof targets) => ts.map((t) => `${t.kind}/${t.name}`).join(", ");
  if (failed.length > 0) return { type: "RolledOut", status: "False", reason: reasons.RolloutFailed, message: `${list(failed)}: ${failed[0]!.message}` };
  if (contested.length > 0)
    return { type: "RolledOut", status: "False", reason: reasons.RolloutContested, message: `${list(contested)}: ${contested[0]!.message}` };
  if (refused.length > 0) return { type: "RolledOut", status: "False", reason: reasons.RolloutRefused, message: `${list(refused)}: ${refused[0]!.message}` };
  if (pending.length > 0)
    return { type: "RolledOut", status: "False", reason: reasons.RollingOut, message: `waiting for ${list(pending)} to run ${latestImage}` };
  return { type: "RolledOut", status: "True", reason: reasons.RolledOut, message: `${targets.length} workload(s) run ${latestImage}` };
}
