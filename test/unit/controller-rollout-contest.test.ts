import { describe, expect, it } from "vitest";
import { nixImageSchema, type NixImage, type NixImageStatus, type RolloutTarget } from "../../src/api/niximage.ts";
import { boundReapplies, contestPolicy, imageManagers } from "../../src/controller/rollout-contest.ts";
import { rolledOutCondition } from "../../src/controller/conditions.ts";
import { planRollout, type Workload } from "../../src/rollout/rollout-plan.ts";

const start = new Date("2026-11-22T10:00:00Z");
const latest = `registry.example.com/shop/web@sha256:${"a".repeat(64)}`;
const fromGit = "registry.example.com/shop/web:main";

function image(rollout: RolloutTarget[] | undefined): NixImage {
  const status: NixImageStatus = { latestImage: latest, latestRevision: { url: "github:a/b", rev: "1".repeat(40) }, ...(rollout ? { rollout } : {}) };
  return {
    ...nixImageSchema.parse({
      apiVersion: "niximage.io/v1alpha1",
      kind: "NixImage",
      metadata: { name: "web", namespace: "shop" },
      spec: { flake: "github:a/b", image: { repository: "registry.example.com/shop/web" } },
    }),
    status,
  };
}

const deployment = (image: string): Workload =>
  ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "web", namespace: "shop", uid: "uid-web", annotations: { "niximage.io/from": "web" } },
    spec: { template: { spec: { containers: [{ name: "app", image }] } } },
  }) as Workload;

/** Reconciles every `stepMs` against a writer that sets the image back after each of our patches (while `fights(t)`). */
function fight(steps: number, stepMs: number, fights: (t: number) => boolean = () => true) {
  let rollout: RolloutTarget[] | undefined;
  let live = fromGit;
  const patchedAt: number[] = [];
  const events: string[] = [];
  for (let i = 0; i < steps; i++) {
    const now = new Date(start.getTime() + i * stepMs);
    const plan = planRollout({ image: image(rollout), workloads: [deployment(live)], now });
    const result = boundReapplies(plan, rollout ?? [], latest, now);
    events.push(...result.events.map((e) => e.message));
    if (plan.patches.length > 0) {
      patchedAt.push(now.getTime());
      live = latest;
    }
    rollout = plan.targets;
    if (fights(now.getTime())) live = fromGit;
  }
  return { patchedAt, events, target: rollout![0]! };
}

describe("rollout contest: a writer that keeps setting the image back", () => {
  it("every 10 s for 9 minutes: the rollout plus 3 re-applies, then it waits, says so once, and names no one it does not know", () => {
    const { patchedAt, events, target } = fight(54, 10_000);
    expect(patchedAt.length).toBe(1 + contestPolicy.maxReapplies);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatch(
      /^rollout contested: another writer set the image of container app back 4 times since 2026-11-22T10:00:10Z; the operator stops applying .* until 2026-11-22T10:10:10Z/,
    );
    expect(events[0]).toContain("spec.ignore");
    expect(target).toMatchObject({ image: fromGit, ready: false, contest: { reverts: 4, since: "2026-11-22T10:00:10Z" } });
    expect(rolledOutCondition([target], latest)).toMatchObject({ status: "False", reason: "RolloutContested" });
  });

  it("bounded over an hour: at most 1 + maxReapplies patches per window", () => {
    const { patchedAt } = fight(360, 10_000);
    const windows = Math.ceil((360 * 10_000) / contestPolicy.windowMs);
    expect(patchedAt.length).toBeLessThanOrEqual(windows * (1 + contestPolicy.maxReapplies));
    // Without the bound it would be one patch per set-back: 360.
    expect(patchedAt.length).toBeLessThan(40);
  });

  it("once the other writer stops, the next window's apply sticks and the contest is forgotten", () => {
    const stopAt = start.getTime() + 5 * 60_000;
    const { patchedAt, target } = fight(150, 10_000, (t) => t < stopAt);
    expect(target.image).toBe(latest);
    expect(target.message).toBeUndefined();
    expect(target.contest).toBeUndefined();
    expect(patchedAt.at(-1)!).toBeGreaterThanOrEqual(Date.parse("2026-11-22T10:10:10Z"));
  });

  it("a one-off change (kubectl set image) is put right at once and is no contest", () => {
    const { patchedAt, events, target } = fight(20, 10_000, (t) => t === start.getTime() + 30_000);
    expect(patchedAt.length).toBe(2);
    expect(events).toEqual([]);
    expect(target.image).toBe(latest);
    expect(rolledOutCondition([{ ...target, ready: true }], latest)).toMatchObject({ status: "True" });
  });
});

describe("imageManagers", () => {
  it("names the managers other than ours that own the container's image", () => {
    const live = {
      ...deployment(fromGit),
      metadata: {
        ...deployment(fromGit).metadata,
        managedFields: [
          {
            manager: "nix-image-operator",
            operation: "Apply",
            fieldsV1: { "f:spec": { "f:template": { "f:spec": { "f:containers": { 'k:{"name":"app"}': { "f:image": {} } } } } } },
          },
          {
            manager: "kustomize-controller",
            operation: "Apply",
            fieldsV1: { "f:spec": { "f:template": { "f:spec": { "f:containers": { 'k:{"name":"app"}': { "f:image": {}, "f:name": {} } } } } } },
          },
          { manager: "kubectl-edit", operation: "Update", fieldsV1: { "f:spec": { "f:replicas": {} } } },
        ],
      },
    } as Workload;
    expect(imageManagers(live, "app", false)).toEqual(["kustomize-controller (Apply)"]);
    expect(imageManagers(live, "other", false)).toEqual([]);
  });
});
