import { describe, expect, it } from "vitest";
import { withoutBookkeeping, workloadProjection } from "../../src/controller/cache-projections.ts";
import type { Workload } from "../../src/rollout/rollout-plan.ts";

const deployment = (annotations: Record<string, string>): Workload => ({
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: {
    name: "web",
    namespace: "shop",
    uid: "u1",
    resourceVersion: "7",
    generation: 3,
    annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{...}", "team.example/owner": "a", ...annotations },
    managedFields: [{ manager: "kubectl", operation: "Apply" }],
  },
  spec: { template: { spec: { containers: [{ name: "main", image: "x" }] } } },
  status: { observedGeneration: 3 },
});

describe("cache projections", () => {
  it("drop managedFields and the last-applied copy, keep everything else", () => {
    const slim = withoutBookkeeping(deployment({ "niximage.io/from": "web" }));
    expect(slim.metadata?.managedFields).toBeUndefined();
    expect(slim.metadata?.annotations).toEqual({ "team.example/owner": "a", "niximage.io/from": "web" });
    expect(slim.spec).toEqual(deployment({}).spec);
  });

  it("keep an opted-in workload whole, and only a stub of any other", () => {
    expect(workloadProjection(deployment({ "niximage.io/from": "web" })).spec?.template?.spec?.containers).toHaveLength(1);
    expect(workloadProjection(deployment({ "niximage.io/container": "main" }))).toEqual({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: "shop", uid: "u1", resourceVersion: "7", generation: 3, annotations: { "niximage.io/container": "main" } },
    });
    expect(workloadProjection(deployment({})).metadata?.annotations).toBeUndefined();
  });
});
