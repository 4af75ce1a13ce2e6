import type { NixImageStatus } from "../api/niximage.ts";
import { targetKey, type ContainerPatch } from "../rollout/rollout-plan.ts";
import { conditionsFor, mergeConditions, reasons, rolledOutCondition, type Reason, type Summary } from "./conditions.ts";
import type { Action, Decision, EventAction } from "./decide.ts";
import { classifyError, errorText } from "./reconcile-errors.ts";

/**
 * The one status function (Flux's result finaliser): the status decide wanted, what applying
 * it did, and the error that stopped it, folded into the status to write, with one `now`.
 * Errors reach status: a write the API server refused (400/403/404/422) makes the NixImage
 * Stalled with a reason naming what was refused; anything else shows as Reconciling while
 * the work queue retries it with backoff.
 */

/** What happened to one rollout patch. */
export interface RolloutOutcome {
  patch: ContainerPatch;
  error?: unknown;
  /** The field managers that owned the container's image in the live workload just before the patch, other than ours. */
  imageManagers?: string[];
}

interface SummarizeInput {
  /** The status as the API server has it (conditions keep their lastTransitionTime). */
  previous: NixImageStatus;
  decision: Decision;
  rollouts?: readonly RolloutOutcome[];
  /** The error that stopped applying the decision, the action it came from (and whether in its volume lease). */
  error?: {
    error: unknown;
    action?: Action;
    lease?: boolean;
    /** What was being done, when not an action, and its reason when refused. */ what?: string;
    reason?: Reason;
  };
  generation: number;
  now: Date;
}

interface Summarized {
  status: NixImageStatus;
  /** Events to record after the status is written. */
  events: EventAction[];
}

const rejectedReason = (action: Action | undefined, lease: boolean): Reason => {
  if (action?.type === "createJob") return lease ? reasons.StoreVolumeRejected : reasons.JobRejected;
  return reasons.WriteRejected;
};

function describeAction(action: Action | undefined, lease: boolean): string {
  switch (action?.type) {
    case "createJob":
      return lease
        ? `leasing store volume ${"create" in action.lease ? action.lease.create.metadata?.name : action.lease.volume}`
        : `creating Job ${action.job.metadata?.name}`;
    case "deleteJob":
      return `deleting Job ${action.name}`;
    case "rollout":
      return `updating ${action.patch.workload.kind}/${action.patch.workload.metadata?.name}`;
    default:
      return "reconciling";
  }
}

const what = (patch: ContainerPatch) => `${patch.workload.kind}/${patch.workload.metadata?.name} container ${patch.container}`;

export function summarize(input: SummarizeInput): Summarized {
  const { previous, decision, generation, now } = input;
  const status: NixImageStatus = structuredClone(decision.status);
  let summary: Summary = decision.summary;
  let events = decision.actions.filter((a): a is EventAction => a.type === "event");

  for (const { patch, error, imageManagers } of input.rollouts ?? []) {
    const target = status.rollout?.find(
      (t) => targetKey(t.kind, t.name, t.container) === targetKey(patch.workload.kind, patch.workload.metadata?.name ?? "", patch.container),
    );
    // A set-back being counted: name who made it.
    if (target?.contest && imageManagers && imageManagers.length > 0) target.contest.by = imageManagers.join(", ").slice(0, 512);
    if (error === undefined) {
      events.push(
        patch.rollback
          ? {
              type: "event",
              eventType: "Warning",
              reason: "RolledBack",
              message: `${what(patch)}: rollout of ${patch.previous} failed; restored ${patch.image}`,
            }
          : {
              type: "event",
              eventType: "Normal",
              reason: "RolledOut",
              message: `${what(patch)} set to ${patch.image}${patch.revision ? ` (revision ${patch.revision.slice(0, 12)})` : ""}`,
            },
      );
      continue;
    }
    // The patch did not land: the workload still runs what it ran. What was recorded before
    // it (the previous image, a rolled-back digest) stays, so the next reconcile sends it again.
    const message = `could not update ${what(patch)}: ${errorText(error)}`;
    if (target) {
      if (patch.previous) target.image = patch.previous;
      else delete target.image;
      target.ready = false;
      target.message = `rollout failed: ${message}`;
    }
    events.push({ type: "event", eventType: "Warning", reason: "RolloutFailed", message });
  }

  if (input.error) {
    const { error, action } = input.error;
    const lease = input.error.lease === true;
    const kind = classifyError(error);
    if (action?.type === "createJob") {
      // No build started: the status keeps the build of record it had.
      const name = action.job.metadata?.name;
      status.buildCount = previous.buildCount;
      if (status.buildCount === undefined) delete status.buildCount;
      for (const key of ["lastBuild", "lastWarmBuild"] as const) {
        if (status[key]?.job === name) {
          if (previous[key]) status[key] = previous[key] as never;
          else delete status[key];
        }
      }
      events = events.filter((e) => !(e.reason === "BuildStarted" && e.message.includes(`${name} `)));
    }
    const text = `${input.error.what ?? describeAction(action, lease)} failed: ${errorText(error)}`;
    if (kind === "permanent") {
      const reason = input.error.reason ?? rejectedReason(action, lease);
      summary = {
        phase: "Stalled",
        reason,
        message: `${text}. The API server refuses this write, so it is not retried until the NixImage or the operator's permissions change.`,
      };
      const before = previous.conditions?.find((c) => c.type === "Stalled");
      if (!(before?.status === "True" && before.reason === reason && before.message === summary.message)) {
        events.push({ type: "event", eventType: "Warning", reason, message: summary.message });
      }
    } else {
      summary = { phase: "Retrying", reason: reasons.RetryingAfterError, message: `${text}; retrying with backoff` };
    }
  }

  const rolledOut = rolledOutCondition(status.rollout ?? [], status.latestImage);
  status.conditions = mergeConditions(previous.conditions, [...conditionsFor(summary), ...(rolledOut ? [rolledOut] : [])], generation, now);
  return { status, events };
}
