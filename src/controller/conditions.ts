import type { Condition } from "../api/niximage.ts";

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
  InvalidSpec: "InvalidSpec",
  PushSecretNotFound: "PushSecretNotFound",
  RevisionUnavailable: "RevisionUnavailable",
  Suspended: "Suspended",
  NotBuilt: "NotBuilt",
} as const;
export type Reason = (typeof reasons)[keyof typeof reasons];

export type ConditionType = "Ready" | "Reconciling" | "Stalled";

export interface DesiredCondition {
  type: ConditionType;
  status: "True" | "False" | "Unknown";
  reason: Reason;
  message: string;
}

/** The three conditions for one overall state. */
export function conditionsFor(state: { phase: "Ready" | "InProgress" | "Stalled" | "Suspended"; reason: Reason; message: string }): DesiredCondition[] {
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
