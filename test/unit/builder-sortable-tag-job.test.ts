// The builder Job asks the push step for the sortable tag only in hand-off mode
// (rollout.policy Disabled), with the controller's time of the build decision.
import { describe, expect, it } from "vitest";
import { builderJob, type BuilderJobInput } from "../../src/controller/builder-job.ts";
import { testConfig, testImage } from "./controller-fixtures.ts";

function pushArgs(policy: "Automatic" | "Disabled", requestedAt: string | undefined): string[] {
  const input: BuilderJobInput = {
    image: testImage({ rollout: { policy } }),
    kind: "Image",
    number: 3,
    reasons: ["RevisionChanged"],
    flake: `github:acme/shop/${"1".repeat(40)}`,
    storeVolume: "niximage-store-0",
    specHash: "0123456789abcdef",
    builderHash: "fedcba9876543210",
    ...(requestedAt !== undefined ? { requestedAt } : {}),
    config: testConfig(),
  };
  return builderJob(input).spec!.template.spec!.containers.find((c) => c.name === "push")!.args!;
}

describe("sortable tag in the builder Job", () => {
  it("is requested with rollout.policy Disabled, from the build decision's time", () => {
    const args = pushArgs("Disabled", "2026-12-03T18:30:05Z");
    expect(args.slice(args.indexOf("--sortable-tag-time"), args.indexOf("--sortable-tag-time") + 2)).toEqual(["--sortable-tag-time", "2026-12-03T18:30:05Z"]);
  });

  it("is not requested when the operator rolls out itself", () => {
    expect(pushArgs("Automatic", "2026-12-03T18:30:05Z")).not.toContain("--sortable-tag-time");
    expect(pushArgs("Disabled", undefined)).not.toContain("--sortable-tag-time");
  });
});
