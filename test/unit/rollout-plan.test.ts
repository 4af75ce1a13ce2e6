import { describe, expect, it } from "vitest";
import { nixImageSchema, type NixImage, type NixImageStatus } from "../../src/api/niximage.ts";
import { applyBody, chosenContainer, patchApplied, planRollout, workloadProgress, type Workload } from "../../src/rollout/rollout-plan.ts";

const now = new Date("2026-11-22T10:00:00Z");
const latest = `registry.example.com/shop/web@sha256:${"a".repeat(64)}`;

function image(status: NixImageStatus = { latestImage: latest, latestRevision: { url: "github:a/b", rev: "1".repeat(40) } }, rollout: object = {}): NixImage {
  return {
    ...nixImageSchema.parse({
      apiVersion: "niximage.io/v1alpha1",
      kind: "NixImage",
      metadata: { name: "web", namespace: "shop" },
      spec: { flake: "github:a/b", image: { repository: "registry.example.com/shop/web" }, rollout },
    }),
    status,
  };
}

function deployment(
  name: string,
  containers: { name: string; image: string }[],
  annotations: Record<string, string> = {},
  extra: Partial<Workload> = {},
): Workload {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: "shop", uid: `uid-${name}`, generation: 2, annotations: { "niximage.io/from": "web", ...annotations } },
    spec: { template: { spec: { containers } } },
    ...extra,
  } as Workload;
}

describe("chosenContainer", () => {
  it.each([
    ["the only container", [{ name: "web", image: "x" }], {}, "web"],
    [
      "the named one of several",
      [
        { name: "a", image: "x" },
        { name: "b", image: "x" },
      ],
      { "niximage.io/container": "b" },
      "b",
    ],
  ])("picks %s", (_what, containers, annotations, want) => {
    const chosen = chosenContainer(deployment("d", containers, annotations));
    expect("container" in chosen && chosen.container.name).toBe(want);
  });

  it.each([
    [
      "several, none named",
      [
        { name: "a", image: "x" },
        { name: "b", image: "x" },
      ],
      {},
      /2 containers \(a, b\).*niximage.io\/container/,
    ],
    [
      "a name that does not exist",
      [{ name: "web", image: "x" }],
      { "niximage.io/container": "wbe" },
      /container "wbe".*does not exist; this workload has: web/,
    ],
  ])("refuses %s", (_what, containers, annotations, message) => {
    const chosen = chosenContainer(deployment("d", containers, annotations));
    expect("problem" in chosen && chosen.problem).toMatch(message);
  });
});

describe("planRollout", () => {
  it("patches a target that runs something else, remembering what it ran", () => {
    const plan = planRollout({ image: image(), now, workloads: [deployment("web", [{ name: "web", image: "busybox:1" }])] });
    expect(plan.patches).toEqual([
      expect.objectContaining({ container: "web", image: latest, previous: "busybox:1", rollback: false, revision: "1".repeat(40) }),
    ]);
    expect(plan.targets[0]).toMatchObject({ kind: "Deployment", name: "web", previousImage: "busybox:1" });
  });

  it("leaves a target that already runs the digest alone", () => {
    const plan = planRollout({ image: image(), now, workloads: [deployment("web", [{ name: "web", image: latest }])] });
    expect(plan.patches).toEqual([]);
  });

  it("does nothing without an image yet, or with policy Disabled, but still reports targets", () => {
    expect(planRollout({ image: image({}), now, workloads: [deployment("web", [{ name: "web", image: "x" }])] }).patches).toEqual([]);
    const disabled = planRollout({ image: image(undefined, { policy: "Disabled" }), now, workloads: [deployment("web", [{ name: "web", image: "x" }])] });
    expect(disabled.patches).toEqual([]);
    expect(disabled.targets).toHaveLength(1);
  });

  it("refuses a latest image without a digest", () => {
    const plan = planRollout({
      image: image({ latestImage: "registry.example.com/shop/web:latest" }),
      now,
      workloads: [deployment("web", [{ name: "web", image: "x" }])],
    });
    expect(plan.patches).toEqual([]);
    expect(plan.refusals[0]!.message).toMatch(/no digest/);
  });

  const failing = {
    status: { observedGeneration: 2, conditions: [{ type: "Progressing", status: "False", reason: "ProgressDeadlineExceeded", message: "timed out" }] },
  };

  it("rolls back after ProgressDeadlineExceeded when asked, and never rolls that digest out again", () => {
    const before: NixImageStatus = {
      latestImage: latest,
      rollout: [{ kind: "Deployment", name: "web", container: "web", previousImage: "old@sha256:" + "b".repeat(64) }],
    };
    const plan = planRollout({
      image: image(before, { rollbackOnFailure: true }),
      now,
      workloads: [deployment("web", [{ name: "web", image: latest }], {}, failing)],
    });
    expect(plan.patches).toEqual([expect.objectContaining({ image: "old@sha256:" + "b".repeat(64), rollback: true })]);
    expect(plan.targets[0]).toMatchObject({ rolledBackFrom: latest });

    const after: NixImageStatus = { latestImage: latest, rollout: plan.targets };
    const again = planRollout({
      image: image(after, { rollbackOnFailure: true }),
      now,
      workloads: [deployment("web", [{ name: "web", image: "old@sha256:" + "b".repeat(64) }])],
    });
    expect(again.patches).toEqual([]);
    expect(again.targets[0]!.message).toMatch(/^rollout failed/);
  });

  it("only reports a failed rollout when rollback is off", () => {
    const before: NixImageStatus = { latestImage: latest, rollout: [{ kind: "Deployment", name: "web", container: "web", previousImage: "old:1" }] };
    const plan = planRollout({ image: image(before), now, workloads: [deployment("web", [{ name: "web", image: latest }], {}, failing)] });
    expect(plan.patches).toEqual([]);
    expect(plan.targets[0]!.message).toBe("rollout failed: timed out");
  });
});

describe("planRollout: intent, trust, own deadlines", () => {
  const old = "old@sha256:" + "b".repeat(64);
  const failing = {
    status: { observedGeneration: 2, conditions: [{ type: "Progressing", status: "False", reason: "ProgressDeadlineExceeded", message: "timed out" }] },
  };

  it("records the previous image, the image set and when, in the targets it returns with the patch", () => {
    const plan = planRollout({ image: image(), now, workloads: [deployment("web", [{ name: "web", image: old }])] });
    expect(plan.patches).toHaveLength(1);
    expect(plan.targets[0]).toEqual(expect.objectContaining({ image: latest, previousImage: old, ready: false, patchedAt: "2026-11-22T10:00:00Z" }));
  });

  it.each([
    ["another repository", `registry.example.com/shop/other@sha256:${"a".repeat(64)}`, /not in spec.image.repository/],
    ["another registry", `evil.example.com/shop/web@sha256:${"a".repeat(64)}`, /not in spec.image.repository/],
    ["a tag", "registry.example.com/shop/web:latest", /no digest/],
    ["a tag and a digest", `registry.example.com/shop/web:v1@sha256:${"a".repeat(64)}`, /not in spec.image.repository/],
  ])("never rolls out a latestImage in %s", (_what, latestImage, message) => {
    const plan = planRollout({ image: image({ latestImage }), now, workloads: [deployment("web", [{ name: "web", image: old }])] });
    expect(plan.patches).toEqual([]);
    expect(plan.refusals[0]!.message).toMatch(message);
  });

  it("sends a recorded rollback again while the workload still runs the rolled-back digest (the patch did not land)", () => {
    const recorded: NixImageStatus = {
      latestImage: latest,
      rollout: [{ kind: "Deployment", name: "web", container: "web", image: old, previousImage: old, rolledBackFrom: latest }],
    };
    const plan = planRollout({ image: image(recorded, { rollbackOnFailure: true }), now, workloads: [deployment("web", [{ name: "web", image: latest }])] });
    expect(plan.patches).toEqual([expect.objectContaining({ image: old, rollback: true })]);
    expect(plan.targets[0]).toMatchObject({ rolledBackFrom: latest, image: old });
  });

  it("a stale ProgressDeadlineExceeded (generation not observed yet) is no failure", () => {
    const before: NixImageStatus = { latestImage: latest, rollout: [{ kind: "Deployment", name: "web", container: "web", previousImage: old }] };
    const stale = { status: { ...failing.status, observedGeneration: 1 } };
    const plan = planRollout({
      image: image(before, { rollbackOnFailure: true }),
      now,
      workloads: [deployment("web", [{ name: "web", image: latest }], {}, stale)],
    });
    expect(plan.patches).toEqual([]);
    expect(plan.targets[0]!.message).toBeUndefined();
  });

  const statefulSet = (img: string, status: Workload["status"] = { observedGeneration: 2, updatedReplicas: 0, readyReplicas: 0 }) =>
    ({
      apiVersion: "apps/v1",
      kind: "StatefulSet",
      metadata: { name: "db", namespace: "shop", uid: "uid-db", generation: 2, annotations: { "niximage.io/from": "web" } },
      spec: { replicas: 1, template: { spec: { containers: [{ name: "db", image: img }] } } },
      status,
    }) as Workload;
  const daemonSet = (img: string) =>
    ({
      apiVersion: "apps/v1",
      kind: "DaemonSet",
      metadata: { name: "agent", namespace: "shop", uid: "uid-agent", generation: 2, annotations: { "niximage.io/from": "web" } },
      spec: { template: { spec: { containers: [{ name: "agent", image: img }] } } },
      status: { observedGeneration: 2, desiredNumberScheduled: 1, updatedNumberScheduled: 1, numberReady: 0 },
    }) as Workload;

  it.each([
    ["StatefulSet", statefulSet],
    ["DaemonSet", daemonSet],
  ])("%s: a progress deadline of our own from patchedAt; looks again when it ends, then rolls back", (kind, make) => {
    const first = planRollout({ image: image(undefined, { rollbackOnFailure: true, progressDeadline: "5m" }), now, workloads: [make(old)] });
    expect(first.patches).toHaveLength(1);
    expect(first.checkAgainInMs).toBe(300_000);
    const recorded: NixImageStatus = { latestImage: latest, rollout: first.targets };
    const later = (ms: number) =>
      planRollout({
        image: image(recorded, { rollbackOnFailure: true, progressDeadline: "5m" }),
        now: new Date(now.getTime() + ms),
        workloads: [make(latest)],
      });
    const waiting = later(60_000);
    expect(waiting.patches).toEqual([]);
    expect(waiting.checkAgainInMs).toBe(240_000);
    const failed = later(300_000);
    expect(failed.patches).toEqual([expect.objectContaining({ image: old, rollback: true })]);
    expect(failed.targets[0]).toMatchObject({ kind, rolledBackFrom: latest });
    expect(failed.targets[0]!.message).toMatch(/progress deadline/);
  });

  it("StatefulSet ready in time: no failure, no rollback", () => {
    const first = planRollout({ image: image(undefined, { rollbackOnFailure: true }), now, workloads: [statefulSet(old)] });
    const recorded: NixImageStatus = { latestImage: latest, rollout: first.targets };
    const ready = planRollout({
      image: image(recorded, { rollbackOnFailure: true }),
      now: new Date(now.getTime() + 3_600_000),
      workloads: [statefulSet(latest, { observedGeneration: 2, updatedReplicas: 1, readyReplicas: 1 })],
    });
    expect(ready.patches).toEqual([]);
    expect(ready.targets[0]).toMatchObject({ ready: true });
    expect(ready.targets[0]!.message).toBeUndefined();
  });
});

describe("workloadProgress", () => {
  it.each([
    ["all updated and ready", { observedGeneration: 2, replicas: 2, updatedReplicas: 2, readyReplicas: 2 }, true],
    ["old pods still there", { observedGeneration: 2, replicas: 3, updatedReplicas: 2, readyReplicas: 2 }, false],
    ["generation not observed yet", { observedGeneration: 1, replicas: 2, updatedReplicas: 2, readyReplicas: 2 }, false],
  ])("Deployment: %s", (_what, status, ready) => {
    const d = { ...deployment("web", [{ name: "web", image: "x" }]), spec: { replicas: 2, template: {} }, status } as Workload;
    expect(workloadProgress(d).ready).toBe(ready);
  });
});

describe("applyBody", () => {
  it("names only the container's image and the revision annotation", () => {
    const d = deployment("web", [{ name: "web", image: "x" }]);
    expect(applyBody({ workload: d, container: "web", init: false, image: latest, revision: "r1", previous: "x", rollback: false })).toEqual({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: "shop" },
      spec: { template: { metadata: { annotations: { "niximage.io/revision": "r1" } }, spec: { containers: [{ name: "web", image: latest }] } } },
    });
  });

  it("reaches a CronJob's pod template and init containers", () => {
    const cron = { apiVersion: "batch/v1", kind: "CronJob", metadata: { name: "n", namespace: "shop" } } as Workload;
    expect(applyBody({ workload: cron, container: "m", init: true, image: latest, revision: undefined, previous: undefined, rollback: false })).toEqual({
      apiVersion: "batch/v1",
      kind: "CronJob",
      metadata: { name: "n", namespace: "shop" },
      spec: { jobTemplate: { spec: { template: { metadata: {}, spec: { initContainers: [{ name: "m", image: latest }] } } } } },
    });
  });
});

describe("patchApplied", () => {
  const patch = (workload: Workload, revision?: string) => ({
    workload,
    container: "web",
    init: false,
    image: latest,
    revision,
    previous: "x",
    rollback: false,
  });

  it("is true only when the live container has the image and the pod template the revision", () => {
    const done = deployment("web", [{ name: "web", image: latest }]);
    done.spec!.template!.metadata = { annotations: { "niximage.io/revision": "r1" } };
    expect(patchApplied(done, patch(done, "r1"))).toBe(true);
    expect(patchApplied(done, patch(done))).toBe(true);
    expect(patchApplied(done, patch(done, "r2"))).toBe(false);
    const old = deployment("web", [{ name: "web", image: "x" }]);
    expect(patchApplied(old, patch(old))).toBe(false);
  });

  it("looks at the container the patch names, in the list it names", () => {
    const other = deployment("web", [
      { name: "sidecar", image: latest },
      { name: "web", image: "x" },
    ]);
    expect(patchApplied(other, patch(other))).toBe(false);
    expect(patchApplied(other, { ...patch(other), container: "sidecar", init: true })).toBe(false);
  });
});
