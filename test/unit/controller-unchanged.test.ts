// Exact no-op (issue 14): a new commit that evaluates to the Nix output of the image in use ends
// as Unchanged: the push step is told the output path, nothing is pushed, the image and the
// rollout stay, latestRevision moves on, one Normal BuildUnchanged Event.
import { describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { builderHash, specHash } from "../../src/controller/build-inputs.ts";
import { decide, type Action } from "../../src/controller/decide.ts";
import { digest1, imageJob, now, observe, pushResultFor, repository, rev1, rev2, testConfig, testImage, volume } from "./controller-fixtures.ts";

const outPath = "/nix/store/wkjazii3rjn901h0xl6rdlwhiblf3pc2-web-1.0";
const config = testConfig();

function settledImage(extra: Partial<NixImageStatus> = {}) {
  const base = testImage({ triggers: { interval: "1m" } });
  const status: NixImageStatus = {
    latestImage: `${repository}@${digest1}`,
    latestRevision: { url: `github:acme/shop/${rev1}`, rev: rev1 },
    latestOutput: { outPath, digest: digest1, specHash: specHash(base), builderHash: builderHash(config) },
    buildCount: 1,
    lastBuild: {
      job: "web-build-1",
      number: 1,
      kind: "Image",
      reasons: ["SpecChanged"],
      result: "Succeeded",
      digest: digest1,
      revision: { url: "u", rev: rev1 },
      specHash: specHash(base),
      builderHash: builderHash(config),
      outPath,
    },
    ...extra,
  };
  return testImage({ triggers: { interval: "1m" } }, { status });
}

const pushArgs = (actions: Action[]) => {
  const create = actions.find((a) => a.type === "createJob");
  return create?.type === "createJob" ? create.job.spec!.template.spec!.containers[0]!.args! : [];
};

describe("exact no-op", () => {
  it("a build for a new commit only tells the push step the output of the image in use", () => {
    const image = settledImage();
    const job1 = imageJob(image, config, { number: 1, result: { ...pushResultFor(digest1, rev1), outPath } });
    const decision = decide(observe(image, { config, jobs: [job1], polledRevision: rev2, storeVolumes: [volume("niximage-store-0")] }));
    const args = pushArgs(decision.actions);
    expect(args.slice(args.indexOf("--unchanged-out-path"), args.indexOf("--unchanged-out-path") + 4)).toEqual([
      "--unchanged-out-path",
      outPath,
      "--unchanged-digest",
      digest1,
    ]);
  });

  it("not for a spec change, a rebuild request, or when the output record does not match the image in use", () => {
    const image = settledImage();
    const job1 = imageJob(image, config, { number: 1, result: { ...pushResultFor(digest1, rev1), outPath } });
    const base = { config, jobs: [job1], storeVolumes: [volume("niximage-store-0")] };
    const rebuild = testImage({ triggers: { interval: "1m" } }, { status: image.status!, annotations: { "niximage.io/rebuild": "x" } });
    expect(pushArgs(decide(observe(rebuild, { ...base, polledRevision: rev2 })).actions)).not.toContain("--unchanged-out-path");
    const respec = testImage({ triggers: { interval: "1m" }, image: { repository, tags: ["v2"] } }, { status: image.status! });
    expect(pushArgs(decide(observe(respec, { ...base, polledRevision: rev2 })).actions)).not.toContain("--unchanged-out-path");
    const otherImage = settledImage({ latestImage: `${repository}@sha256:${"b".repeat(64)}` });
    // (no Job of record here: it would set latestImage from its own result)
    expect(pushArgs(decide(observe(otherImage, { ...base, jobs: [], polledRevision: rev2 })).actions)).not.toContain("--unchanged-out-path");
    const newBuilder = settledImage({ latestOutput: { ...image.status!.latestOutput!, builderHash: "0000" } });
    expect(pushArgs(decide(observe(newBuilder, { ...base, jobs: [], polledRevision: rev2 })).actions)).not.toContain("--unchanged-out-path");
  });

  it("an Unchanged result: same image, new latestRevision, one BuildUnchanged, no BuildSucceeded, no new build", () => {
    const running = settledImage({
      buildCount: 2,
      lastBuild: { job: "web-build-2", number: 2, kind: "Image", reasons: ["RevisionChanged"], result: "Running", flake: `github:acme/shop/${rev2}` },
    });
    const result = {
      ...pushResultFor(digest1, rev2),
      tags: [],
      layers: { total: 0, pushed: 0, skipped: 0, mounted: 0 },
      bytesPushed: 0,
      outPath,
      unchanged: true,
    };
    const job2 = imageJob(running, config, { number: 2, reasons: ["RevisionChanged"], result });
    const decision = decide(observe(running, { config, jobs: [job2], polledRevision: rev2, storeVolumes: [volume("niximage-store-0")] }));
    expect(decision.status.latestImage).toBe(`${repository}@${digest1}`);
    expect(decision.status.latestRevision?.rev).toBe(rev2);
    expect(decision.status.lastBuild).toMatchObject({ job: "web-build-2", result: "Unchanged", outPath, bytesPushed: 0 });
    expect(decision.status.latestOutput).toEqual(running.status!.latestOutput);
    const events = decision.actions.filter((a) => a.type === "event");
    expect(events.map((e) => e.type === "event" && e.reason)).toEqual(["BuildUnchanged"]);
    expect(events[0]).toMatchObject({ eventType: "Normal", message: expect.stringContaining(`revision ${rev2.slice(0, 12)} builds the same Nix output`) });
    expect(decision.actions.filter((a) => a.type === "createJob" || a.type === "rollout")).toEqual([]);
    expect(decision.summary.phase).toBe("Ready");

    // Decided again (the status above written): nothing new to say or do.
    const again = decide(
      observe(testImage({ triggers: { interval: "1m" } }, { status: decision.status }), { config, jobs: [job2], polledRevision: rev2, now }),
    );
    expect(again.actions).toEqual([]);
  });

  it("a pushed build records what the image was made from", () => {
    const running = settledImage({
      buildCount: 2,
      lastBuild: { job: "web-build-2", number: 2, kind: "Image", reasons: ["RevisionChanged"], result: "Running" },
    });
    const digest2 = `sha256:${"c".repeat(64)}`;
    const out2 = "/nix/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-web-1.1";
    const job2 = imageJob(running, config, { number: 2, reasons: ["RevisionChanged"], result: { ...pushResultFor(digest2, rev2), outPath: out2 } });
    const decision = decide(observe(running, { config, jobs: [job2], polledRevision: rev2 }));
    expect(decision.status.latestImage).toBe(`${repository}@${digest2}`);
    expect(decision.status.latestOutput).toEqual({ outPath: out2, digest: digest2, specHash: specHash(running), builderHash: builderHash(config) });
    expect(decision.actions.filter((a) => a.type === "event").map((e) => e.type === "event" && e.reason)).toEqual(["BuildSucceeded"]);
  });
});
