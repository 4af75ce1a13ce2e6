import type { RolloutTarget } from "../api/niximage.ts";
import { targetKey, type RolloutPlan, type Workload } from "../rollout/rollout-plan.ts";
import { fieldManager } from "./names.ts";

/**
 * Another writer that keeps setting a container's image back (a GitOps tool applying the image
 * from Git, with force) must not meet an operator that answers every time: per container, the
 * operator applies its image again at most `maxReapplies` times per `windowMs` after set-backs,
 * then waits for the rest of the window and says who fights (the field manager that owns the
 * image field now) and how to stop it. Pure: the counts live in status.rollout[].contest.
 */
export const contestPolicy = { windowMs: 10 * 60_000, maxReapplies: 3 } as const;

type Contest = NonNullable<RolloutTarget["contest"]>;

const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
const age = (time: string, now: Date) => now.getTime() - Date.parse(time);
const held = (c: Contest | undefined, now: Date): boolean =>
  c !== undefined && c.reverts > contestPolicy.maxReapplies && age(c.since, now) < contestPolicy.windowMs;

/** The message on a held target; `rolledOutCondition` shows it as RolloutContested. */
export const contestedPrefix = "rollout contested";

function contestedMessage(target: RolloutTarget, latest: string, c: Contest): string {
  const until = rfc3339(new Date(Date.parse(c.since) + contestPolicy.windowMs));
  return (
    `${contestedPrefix}: ${c.by ? `field manager ${c.by}` : "another writer"} set the image of container ${target.container} back ${c.reverts} times since ${c.since}; ` +
    `the operator stops applying ${latest} until ${until}. Stop the other tool from writing this image: leave \`image\` of this container out of Git, ` +
    "or have Flux ignore it (Kustomization spec.ignore on /spec/template/spec/containers/N/image) or Argo CD (ignoreDifferences with managedFieldsManagers: [nix-image-operator], " +
    "RespectIgnoreDifferences=true, ServerSideApply=true); see the README, Using it with GitOps"
  );
}

export interface ContestResult {
  /** Warnings to record on the workload when a container becomes contested. */
  events: { workload: Workload; message: string }[];
  /** Look again when a hold ends. */
  checkAgainInMs?: number;
}

/**
 * Applies the bound to a plan in place. A set-back is a patch planned for a container whose
 * target status says it already ran the latest image (we set it, or saw it), while the latest
 * image did not change: someone else wrote it since.
 */
export function boundReapplies(plan: RolloutPlan, earlierTargets: readonly RolloutTarget[], latest: string | undefined, now: Date): ContestResult {
  const result: ContestResult = { events: [] };
  if (!latest) return result;
  const before = new Map(earlierTargets.map((t) => [targetKey(t.kind, t.name, t.container), t]));
  const waitFor = (c: Contest) => {
    const left = Date.parse(c.since) + contestPolicy.windowMs - now.getTime();
    result.checkAgainInMs = Math.min(result.checkAgainInMs ?? Infinity, Math.max(0, left));
  };
  for (const target of plan.targets) {
    const key = targetKey(target.kind, target.name, target.container);
    const earlier = before.get(key);
    const c = earlier?.contest;
    const index = plan.patches.findIndex(
      (p) => !p.rollback && p.image === latest && targetKey(p.workload.kind, p.workload.metadata?.name ?? "", p.container) === key,
    );
    const patch = index >= 0 ? plan.patches[index] : undefined;
    if (!patch) {
      // Nothing to apply (it runs the latest image, or is not ours to update): keep a recent record, and a hold's message.
      if (c && age(c.lastAt, now) < contestPolicy.windowMs) target.contest = c;
      if (c && held(c, now) && target.image !== latest) {
        target.message = contestedMessage(target, latest, c);
        waitFor(c);
      }
      continue;
    }
    const setBack = earlier?.image === latest && patch.previous !== latest;
    let contest = c && age(c.lastAt, now) < contestPolicy.windowMs ? c : undefined;
    if (setBack && !held(c, now)) {
      const stamp = rfc3339(now);
      contest =
        c && age(c.since, now) < contestPolicy.windowMs
          ? { ...c, reverts: c.reverts + 1, lastAt: stamp }
          : { ...(c?.by ? { by: c.by } : {}), reverts: 1, since: stamp, lastAt: stamp };
    }
    if (!contest) continue;
    target.contest = contest;
    if (!held(contest, now)) continue;
    // Hold: no patch; the target says what runs and why it stays.
    plan.patches.splice(index, 1);
    target.image = patch.previous;
    if (patch.previous === undefined) delete target.image;
    for (const field of ["previousImage", "rolledBackFrom", "patchedAt"] as const) {
      if (earlier?.[field]) target[field] = earlier[field];
      else delete target[field];
    }
    target.ready = false;
    target.message = contestedMessage(target, latest, contest);
    waitFor(contest);
    if (!held(c, now)) result.events.push({ workload: patch.workload, message: target.message });
  }
  return result;
}

/**
 * The field managers other than the operator that own a container's `image` in a live
 * workload's managedFields (the informer cache drops managedFields; the caller reads the live object).
 */
export function imageManagers(live: Workload, container: string, init: boolean): string[] {
  const path = [
    "f:spec",
    ...(live.kind === "CronJob" ? ["f:jobTemplate", "f:spec"] : []),
    "f:template",
    "f:spec",
    init ? "f:initContainers" : "f:containers",
    `k:{"name":"${container}"}`,
    "f:image",
  ];
  const owns = (fields: unknown) =>
    path.reduce<unknown>((node, key) => (node !== null && typeof node === "object" ? (node as Record<string, unknown>)[key] : undefined), fields) !== undefined;
  const managers = new Set<string>();
  for (const m of live.metadata?.managedFields ?? []) {
    if (m.manager && m.manager !== fieldManager && owns(m.fieldsV1)) managers.add(`${m.manager} (${m.operation ?? "?"})`);
  }
  return [...managers];
}
