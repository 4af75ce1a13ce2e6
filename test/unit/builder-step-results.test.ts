// One schema per step result, shared by the step that writes it and the controller that reads
// it: what the writers produce always parses, and what is out of the status bounds never does.
import { describe, expect, it } from "vitest";
import { fitResult } from "../../src/builder/push-result.ts";
import { parseStepResult, pushResultSchema, resultBounds, warmResultSchema, type PushStepResult } from "../../src/builder/step-results.ts";
import { fitWarmReport, warmReportOf } from "../../src/builder/warm-report.ts";

const revision = { url: "git+https://example.com/acme/web?rev=" + "3".repeat(40), rev: "3".repeat(40), lastModified: 1_700_000_000, narHash: "sha256-x" };
const result: PushStepResult = {
  image: `127.0.0.1:5000/acme/web@sha256:${"a".repeat(64)}`,
  digest: `sha256:${"a".repeat(64)}`,
  tags: ["rev-333333333333"],
  format: "package",
  revision,
  layers: { total: 3, pushed: 1, skipped: 2, mounted: 0 },
  bytesPushed: 10,
  seconds: { build: 1 },
};

describe("step results: the writers' output parses with the readers' schemas", () => {
  it("a push result with too many tags and phases is cut to the bounds by the writer", () => {
    const big = {
      ...result,
      tags: Array.from({ length: 100 }, (_, i) => `t${i}`),
      seconds: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`phase${i}`, i])),
    };
    big.seconds["x".repeat(40)] = 1;
    const parsed = parseStepResult(pushResultSchema, fitResult(big));
    expect(parsed).toBeDefined();
    expect(parsed!.tags.length).toBeLessThanOrEqual(resultBounds.tags);
    expect(Object.keys(parsed!.seconds).length).toBeLessThanOrEqual(resultBounds.phases);
    expect(parsed!.digest).toBe(result.digest);
  });

  it("a warm report of a huge closure diff keeps at most the status's number of entries, names and versions cut", () => {
    const many = Array.from({ length: 600 }, (_, i) => ({ name: `p${i}`, to: "1" }));
    const diff = {
      added: many,
      removed: [{ name: "n".repeat(300), from: "v".repeat(200) }],
      changed: [{ name: "c", from: "1", to: "2".repeat(200) }],
    } as unknown as Parameters<typeof warmReportOf>[2];
    const report = warmReportOf(revision, { build: 1 }, diff);
    expect(report.closureDiff!.added).toHaveLength(resultBounds.closureChanges);
    expect(warmResultSchema.safeParse(report).success).toBe(true);
    expect(parseStepResult(warmResultSchema, fitWarmReport(report))).toBeDefined();
  });
});

describe("step results: the readers refuse what is out of bounds (it could not be written to status)", () => {
  it.each([
    ["a digest that is not sha256", { ...result, digest: "md5:abc" }],
    ["a locked URL over 2048 characters", { ...result, revision: { ...revision, url: "u".repeat(2049) } }],
    ["a narHash over 128 characters", { ...result, revision: { ...revision, narHash: "h".repeat(129) } }],
    ["a phase name over 32 characters", { ...result, seconds: { ["k".repeat(33)]: 1 } }],
    ["more than 32 phases", { ...result, seconds: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`p${i}`, 1])) }],
    ["a negative count", { ...result, layers: { ...result.layers, pushed: -1 } }],
    ["an unknown format", { ...result, format: "tarball" }],
  ])("push result: %s", (_what, bad) => {
    expect(parseStepResult(pushResultSchema, JSON.stringify(bad))).toBeUndefined();
  });

  it.each([
    ["257 added packages", { closureDiff: { added: Array.from({ length: 257 }, () => ({ name: "a" })), removed: [], changed: [] } }],
    ["a package name over 256 characters", { closureDiff: { added: [{ name: "n".repeat(257) }], removed: [], changed: [] } }],
    ["a version over 128 characters", { closureDiff: { added: [{ name: "n", to: "v".repeat(129) }], removed: [], changed: [] } }],
  ])("warm report: %s", (_what, bad) => {
    expect(parseStepResult(warmResultSchema, JSON.stringify(bad))).toBeUndefined();
  });

  it("text that is not JSON (a failure message) is no result", () => {
    expect(parseStepResult(pushResultSchema, "error: registry said 503")).toBeUndefined();
    expect(parseStepResult(pushResultSchema, undefined)).toBeUndefined();
  });
});
