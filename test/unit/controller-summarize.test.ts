// The one status function: decided status + apply outcomes + error -> the status written and the
// Events to record. Table-driven, with the real decide for the decisions.
import { describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { decide, type Action } from "../../src/controller/decide.ts";
import { NotLeaderError, StaleCacheError, classifyError } from "../../src/controller/reconcile-errors.ts";
import { summarize } from "../../src/controller/summarize.ts";
import { KubeHttpError } from "../../src/runtime/kube-request.ts";
import type { Workload } from "../../src/rollout/rollout-plan.ts";
import { digest1, imageJob, now, nowIso, observe, pushResultFor, repository, testConfig, testImage } from "./controller-fixtures.ts";

const config = testConfig();
const conditions = (status: NixImageStatus) =>
  Object.fromEntries((status.conditions ?? []).map((c) => [c.type, `${c.status}/${c.reason}`])) as Record<string, string | undefined>;

describe("classifyError", () => {
  it.each([
    [new KubeHttpError(422, "Job.batch is invalid"), "permanent"],
    [new KubeHttpError(403, "forbidden"), "permanent"],
    [new KubeHttpError(400, "bad request"), "permanent"],
    [new KubeHttpError(404, "not found"), "permanent"],
    [new KubeHttpError(409, "conflict"), "conflict"],
    [new StaleCacheError("stale"), "conflict"],
    [new KubeHttpError(500, "etcdserver: request timed out"), "transient"],
    [new KubeHttpError(503, "unavailable"), "transient"],
    [new KubeHttpError(429, "too many requests"), "transient"],
    [Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:6443"), { code: "ECONNREFUSED" }), "transient"],
    [new NotLeaderError("PATCH niximages/status"), "not-leader"],
  ])("%s -> %s", (error, want) => {
    expect(classifyError(error)).toBe(want);
  });
});

describe("summarize: errors while applying a build start", () => {
  const image = testImage();
  const decision = decide(observe(image));
  const create = decision.actions.find((a): a is Extract<Action, { type: "createJob" }> => a.type === "createJob")!;

  it("without an error: the decided state, BuildStarted announced", () => {
    const { status, events } = summarize({ previous: {}, decision, generation: 1, now });
    expect(conditions(status)).toEqual({ Ready: "Unknown/Building", Reconciling: "True/Building", Stalled: "False/Building" });
    expect(status.lastBuild?.job).toBe("web-build-1");
    expect(events.map((e) => e.reason)).toEqual(["BuildStarted"]);
  });

  it.each([
    [new KubeHttpError(422, 'Job.batch "web-build-1" is invalid: metadata.labels: Invalid value: too long'), false, "False/JobRejected", "True/JobRejected"],
    [new KubeHttpError(403, "jobs.batch is forbidden"), false, "False/JobRejected", "True/JobRejected"],
    [new KubeHttpError(403, "persistentvolumeclaims is forbidden"), true, "False/StoreVolumeRejected", "True/StoreVolumeRejected"],
    [new KubeHttpError(503, "the server is currently unable to handle the request"), false, "False/RetryingAfterError", "False/RetryingAfterError"],
    [new Error("socket hang up"), true, "False/RetryingAfterError", "False/RetryingAfterError"],
  ])("%s (in the lease: %s) -> Ready %s, Stalled %s; no build recorded", (error, lease, ready, stalled) => {
    const { status, events } = summarize({ previous: {}, decision, error: { error, action: create, lease }, generation: 1, now });
    expect(conditions(status).Ready).toBe(ready);
    expect(conditions(status).Stalled).toBe(stalled);
    expect(conditions(status).Reconciling).toBe(stalled.startsWith("True") ? `False/${stalled.slice(5)}` : "True/RetryingAfterError");
    expect(status.lastBuild).toBeUndefined();
    expect(status.buildCount).toBeUndefined();
    expect(events.some((e) => e.reason === "BuildStarted")).toBe(false);
    const ready_ = status.conditions!.find((c) => c.type === "Ready")!;
    expect(ready_.message).toContain(lease ? "leasing store volume niximage-store-0 failed" : "creating Job web-build-1 failed");
    expect(ready_.message).toContain(error.message);
    expect(ready_.lastTransitionTime).toBe(nowIso);
    // A refused write is announced once, as a Warning with the same reason.
    expect(events.filter((e) => e.eventType === "Warning").map((e) => e.reason)).toEqual(stalled.startsWith("True") ? [stalled.slice(5)] : []);
  });

  it("a refused write announced once: the same Stalled state again sends no second Event", () => {
    const error = { error: new KubeHttpError(422, "invalid"), action: create };
    const first = summarize({ previous: {}, decision, error, generation: 1, now });
    const again = summarize({ previous: first.status, decision, error, generation: 1, now: new Date(now.getTime() + 600_000) });
    expect(again.events.filter((e) => e.reason === "JobRejected")).toEqual([]);
    expect(again.status.conditions).toEqual(first.status.conditions);
  });

  it("keeps the previous build of record when a later build's Job is refused", () => {
    const previous: NixImageStatus = {
      buildCount: 1,
      latestImage: `${repository}@${digest1}`,
      lastBuild: { job: "web-build-1", number: 1, reasons: ["SpecChanged"], result: "Succeeded", digest: digest1 },
    };
    const d = decide(observe(testImage({}, { annotations: { "niximage.io/rebuild": "1" }, status: previous }), { jobs: [] }));
    const action = d.actions.find((a): a is Extract<Action, { type: "createJob" }> => a.type === "createJob")!;
    expect(action.job.metadata?.name).toBe("web-build-2");
    const { status } = summarize({ previous, decision: d, error: { error: new KubeHttpError(422, "invalid"), action }, generation: 1, now });
    expect(status.lastBuild).toEqual(previous.lastBuild);
    expect(status.buildCount).toBe(1);
    expect(status.latestImage).toBe(previous.latestImage);
  });
});

describe("summarize: errors outside the actions", () => {
  const decision = decide(observe(testImage()));
  it.each([
    [new KubeHttpError(403, 'secrets "regcred" is forbidden'), "False/SecretNotReadable", "True/SecretNotReadable"],
    [new KubeHttpError(503, "unavailable"), "False/RetryingAfterError", "False/RetryingAfterError"],
  ])("a Secret check that failed (%s) is shown with what was being done", (error, ready, stalled) => {
    const { status } = summarize({
      previous: {},
      decision,
      error: { error, what: "checking the Secrets named in spec.image", reason: "SecretNotReadable" },
      generation: 1,
      now,
    });
    expect(conditions(status).Ready).toBe(ready);
    expect(conditions(status).Stalled).toBe(stalled);
    expect(status.conditions!.find((c) => c.type === "Ready")!.message).toMatch(/^checking the Secrets named in spec.image failed: /);
  });
});

describe("summarize: rollout outcomes", () => {
  const built = testImage();
  const job = imageJob(built, config, { number: 1, result: pushResultFor(), completionTime: "2026-11-22T09:10:00Z" });
  const workload = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "web", namespace: "shop", uid: "u1", generation: 1, annotations: { "niximage.io/from": "web" } },
    spec: { template: { spec: { containers: [{ name: "web", image: "busybox:1" }] } } },
  } as Workload;
  const decision = decide(observe(built, { jobs: [job], workloads: [workload] }));
  const patch = decision.actions.find((a): a is Extract<Action, { type: "rollout" }> => a.type === "rollout")!.patch;

  it("the decided status already says what the patch does (written before it is sent)", () => {
    expect(decision.status.rollout).toEqual([
      expect.objectContaining({ image: `${repository}@${digest1}`, previousImage: "busybox:1", ready: false, patchedAt: nowIso }),
    ]);
  });

  it.each([
    ["landed", undefined, "False/RollingOut", "RolledOut", `${repository}@${digest1}`],
    ["refused", new KubeHttpError(403, "deployments.apps is forbidden"), "False/RolloutFailed", "RolloutFailed", "busybox:1"],
    ["failed", new KubeHttpError(500, "internal error"), "False/RolloutFailed", "RolloutFailed", "busybox:1"],
  ])("patch %s -> RolledOut %s, Event %s, target runs %s", (_what, error, rolledOut, event, runs) => {
    const { status, events } = summarize({ previous: {}, decision, rollouts: [{ patch, ...(error ? { error } : {}) }], generation: 1, now });
    expect(conditions(status).RolledOut).toBe(rolledOut);
    expect(conditions(status).Ready).toBe("True/Succeeded");
    expect(events.map((e) => e.reason)).toContain(event);
    expect(status.rollout![0]!.image).toBe(runs);
    // What was recorded before the patch stays, so the next reconcile sends it again.
    expect(status.rollout![0]!.previousImage).toBe("busybox:1");
  });
});
