import { describe, expect, it } from "vitest";
import { fitMessage, fitResult } from "../../src/builder/push-result.ts";
import { pushResultSchema, TERMINATION_MESSAGE_LIMIT, type PushStepResult } from "../../src/builder/step-results.ts";

const base: PushStepResult = {
  image: `127.0.0.1:5000/acme/web@sha256:${"a".repeat(64)}`,
  digest: `sha256:${"a".repeat(64)}`,
  tags: ["rev-3c5716757368-wkjazii3", "latest"],
  format: "package",
  revision: {
    url: "git+https://example.com/acme/web?ref=main&rev=3c5716757368b589fa04d2ffb66ac586ef5cf676",
    rev: "3c5716757368b589fa04d2ffb66ac586ef5cf676",
    lastModified: 1700000000,
    narHash: "sha256-pQtc3b6Uzagku7kRa1g1FOBjF4phPHC97hHwm8nYaHQ=",
  },
  layers: { total: 12, pushed: 1, skipped: 11, mounted: 0 },
  bytesPushed: 123456,
  seconds: { plan: 0.01, layers: 1.2, config: 0.01, manifest: 0.02, tags: 0.01, total: 1.25 },
};

describe("the push step's termination message", () => {
  it("is the compact JSON the controller parses", () => {
    const text = fitResult(base);
    expect(JSON.parse(text)).toEqual(base);
    const parsed = pushResultSchema.parse(JSON.parse(text));
    expect(parsed).toMatchObject({ digest: base.digest, layers: { pushed: 1, skipped: 11, mounted: 0 }, bytesPushed: 123456 });
  });

  it("fits 4096 bytes: extra tags go first, the immutable tag stays", () => {
    const many = { ...base, tags: ["rev-3c5716757368-wkjazii3", ...Array.from({ length: 40 }, (_, i) => `tag-${i}-${"x".repeat(100)}`)] };
    const text = fitResult(many);
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    const parsed = JSON.parse(text) as PushStepResult;
    expect(parsed.tags[0]).toBe("rev-3c5716757368-wkjazii3");
    expect(parsed.tags.length).toBeGreaterThan(5);
    expect(parsed.digest).toBe(base.digest);
  });

  it("fits 4096 bytes even with a huge locked URL", () => {
    const long = { ...base, revision: { ...base.revision, url: `git+https://example.com/${"p/".repeat(3000)}` } };
    const text = fitResult(long);
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    expect(pushResultSchema.safeParse(JSON.parse(text)).success).toBe(true);
  });

  it("cuts failure messages on a character boundary", () => {
    const msg = "é".repeat(5000);
    const cut = fitMessage(msg);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    expect(cut.endsWith("…")).toBe(true);
    expect(cut).not.toContain("\uFFFD");
    expect(fitMessage("short")).toBe("short");
  });
});
