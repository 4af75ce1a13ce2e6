// The warm report step: result directory -> termination message (<= 4096 bytes) that the
// controller's warmResultSchema reads. Real files in a temp directory; no Nix needed here (the
// integration test test/integration/warm-report.test.ts runs the build step with real Nix).
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { writeStepFiles, type BuildResult } from "../../src/builder/step-files.ts";
import { fitWarmReport, warmReport, warmReportOf } from "../../src/builder/warm-report.ts";
import { main } from "../../src/cli/main.ts";
import { diffClosures } from "../../src/controller/closure-diff.ts";
import { warmResultSchema, type WarmResult } from "../../src/builder/step-results.ts";

const hashChars = "0123456789abcdfghijklmnpqrsvwxyz";
const storePath = (name: string, seed = 0) => {
  let h = "";
  let x = [...name].reduce((a, c) => (a * 31 + c.charCodeAt(0) + seed) >>> 0, 7);
  for (let i = 0; i < 32; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    h += hashChars[x % 32];
  }
  return `/nix/store/${h}-${name}`;
};
const closureOf = (names: string[], seed = 0) =>
  names.map((n) => ({ path: storePath(n, seed), narSize: 1000, narHash: "sha256:x", references: [] as string[] }));

const rev = "e".repeat(40);
const revision = {
  url: `git+http://127.0.0.1:8080/app.git?ref=refs/heads/master&rev=${rev}`,
  rev,
  lastModified: 1704067260,
  narHash: "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
};

function buildResult(outPath: string): BuildResult {
  return {
    version: 1,
    flake: "git+http://127.0.0.1:8080/app.git",
    attribute: "default",
    revision,
    system: "x86_64-linux",
    outPaths: [outPath],
    outPath,
    format: "package",
    formatReason: "a plain package",
    closure: { paths: 3, narSize: 3000 },
    extraAttributes: [],
    gcRoots: [],
    seconds: { lock: 0.5, build: 12.25, closure: 0.1, lockedBuild: 3 },
  };
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "warm-report-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("warmReport", () => {
  it("with --update-inputs: the closure diff from the committed lock to the updated inputs", async () => {
    const before = closureOf(["app-1.0", "libdep-1.0", "old-tool-0.9", "shared-tool-3.0.1", "glibc-2.38", "glibc-2.38-bin"]);
    const after = closureOf(["app-1.0", "libdep-1.1", "new-tool-1.2", "shared-tool-3.0.2", "glibc-2.38", "glibc-2.38-bin"], 1);
    await writeStepFiles(dir, buildResult(after[0]!.path), after, before);
    const report = await warmReport(dir);
    expect(report.message).toEqual({
      revision,
      seconds: { lock: 0.5, build: 12.25, closure: 0.1, lockedBuild: 3 },
      closureDiff: {
        added: [{ name: "new-tool", to: "1.2" }],
        removed: [{ name: "old-tool", from: "0.9" }],
        changed: [
          { name: "libdep", from: "1.0", to: "1.1" },
          { name: "shared-tool", from: "3.0.1", to: "3.0.2" },
        ],
        totals: { added: 1, removed: 1, changed: 2 },
      },
    });
    // app-1.0 and glibc differ only in their hashes: rebuilt, not listed.
    expect(report.diff).toMatchObject({ rebuilt: 2, truncated: false, totals: { added: 1, removed: 1, changed: 2 } });
    expect(warmResultSchema.parse(JSON.parse(fitWarmReport(report.message)))).toEqual(report.message);
  });

  it("without --update-inputs: revision and timings, no closure diff", async () => {
    const closure = closureOf(["hello-1.0", "busybox-static"]);
    await writeStepFiles(dir, buildResult(closure[0]!.path), closure);
    const report = await warmReport(dir);
    expect(report.message).toEqual({ revision, seconds: { lock: 0.5, build: 12.25, closure: 0.1, lockedBuild: 3 } });
    expect(report.diff).toBeUndefined();
  });

  it("fails clearly without a build result, and on a locked closure that lists no store paths", async () => {
    await expect(warmReport(dir)).rejects.toThrow(/result\.json .*did the build step finish/);
    const closure = closureOf(["hello-1.0"]);
    await writeStepFiles(dir, buildResult(closure[0]!.path), closure);
    await writeFile(join(dir, "locked-closure.json"), JSON.stringify([{ path: "/etc/passwd", narSize: 1, references: [] }]));
    await expect(warmReport(dir)).rejects.toThrow(/not a store path/);
  });
});

describe("warmReportOf", () => {
  it("cuts names and versions to the status schema's bounds", () => {
    const diff = diffClosures([storePath(`pkg-${"1".repeat(200)}`)], [storePath(`pkg-${"2".repeat(150)}`), storePath(`x${"y".repeat(205)}`)]);
    const out = warmReportOf(revision, {}, diff).closureDiff!;
    expect(out.changed[0]!.from).toHaveLength(128);
    expect(out.changed[0]!.from!.endsWith("…")).toBe(true);
    expect(out.changed[0]!.to).toHaveLength(128);
    expect(out.added[0]!.name).toHaveLength(206);
  });
});

describe("fitWarmReport", () => {
  const bytes = (s: string) => Buffer.byteLength(s, "utf8");
  const big = (n: number): WarmResult => ({
    revision,
    seconds: { lock: 1, build: 2 },
    closureDiff: {
      added: Array.from({ length: n }, (_, i) => ({ name: `added-package-${i}`, to: `1.${i}` })),
      removed: Array.from({ length: n }, (_, i) => ({ name: `removed-package-${i}`, from: `0.${i}` })),
      changed: Array.from({ length: n }, (_, i) => ({ name: `changed-package-${i}`, from: `2.${i}`, to: `3.${i}` })),
    },
  });

  it("a small report is its compact JSON", () => {
    const r = big(3);
    expect(fitWarmReport(r)).toBe(JSON.stringify(r));
  });

  it("cuts every list to the same, largest length that fits 4096 bytes", () => {
    const text = fitWarmReport(big(256));
    expect(bytes(text)).toBeLessThanOrEqual(4096);
    const parsed = warmResultSchema.parse(JSON.parse(text));
    const n = parsed.closureDiff!.added.length;
    expect(n).toBeGreaterThan(5);
    expect(parsed.closureDiff!.removed).toHaveLength(n);
    expect(parsed.closureDiff!.changed).toHaveLength(n);
    expect(parsed.closureDiff!.added[0]).toEqual({ name: "added-package-0", to: "1.0" });
    // One more entry each would not have fitted.
    const oneMore = {
      ...parsed,
      closureDiff: {
        added: big(256).closureDiff!.added.slice(0, n + 1),
        removed: big(256).closureDiff!.removed.slice(0, n + 1),
        changed: big(256).closureDiff!.changed.slice(0, n + 1),
      },
    };
    expect(bytes(JSON.stringify(oneMore))).toBeGreaterThan(4096);
    expect(parsed.revision).toEqual(revision);
    expect(parsed.seconds).toEqual({ lock: 1, build: 2 });
  });

  it("never cuts silently: the full counts stay when the lists are cut", () => {
    const diff = diffClosures(
      [],
      Array.from({ length: 600 }, (_, i) => storePath(`package${i}x-1.${i}`)),
    );
    const parsed = warmResultSchema.parse(JSON.parse(fitWarmReport(warmReportOf(revision, {}, diff))));
    expect(parsed.closureDiff!.added.length).toBeLessThan(600);
    expect(parsed.closureDiff!.totals).toEqual({ added: 600, removed: 0, changed: 0 });
  });

  it("uneven lists: the short ones stay whole", () => {
    const r = big(256);
    r.closureDiff!.removed = r.closureDiff!.removed.slice(0, 2);
    const parsed = warmResultSchema.parse(JSON.parse(fitWarmReport(r)));
    expect(parsed.closureDiff!.removed).toHaveLength(2);
    expect(parsed.closureDiff!.added.length).toBe(parsed.closureDiff!.changed.length);
  });

  it("a huge revision URL is cut to the status bound (2048 characters); the commit stays", () => {
    const r: WarmResult = { revision: { ...revision, url: `git+https://example.com/${"p".repeat(5000)}` }, seconds: { build: 1 } };
    const text = fitWarmReport(r);
    expect(bytes(text)).toBeLessThanOrEqual(4096);
    const parsed = warmResultSchema.parse(JSON.parse(text));
    expect(parsed.revision?.rev).toBe(rev);
    expect(parsed.revision?.url).toHaveLength(2048);
    expect(parsed.seconds).toEqual({ build: 1 });
    // Multi-byte characters too.
    expect(bytes(fitWarmReport({ revision: { ...revision, url: "ü".repeat(3000) } }))).toBeLessThanOrEqual(4096);
  });
});

describe("warm-report command", () => {
  const run = async (argv: string[]) => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = "";
    let err = "";
    stdout.on("data", (d: Buffer) => (out += d.toString()));
    stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await main(argv, { stdout, stderr, logger: pino({ level: "silent" }), env: {}, cwd: dir, signal: new AbortController().signal });
    return { code, out, err };
  };

  it("writes the termination message and prints the full report", async () => {
    const before = closureOf(["app-1.0", "libdep-1.0"]);
    const after = closureOf(["app-1.0", "libdep-1.1"], 1);
    await writeStepFiles(dir, buildResult(after[0]!.path), after, before);
    const messageFile = join(dir, "termination-log");
    const { code, out } = await run(["warm-report", "--from", dir, "--termination-message", messageFile]);
    expect(code).toBe(0);
    const message = warmResultSchema.parse(JSON.parse(await readFile(messageFile, "utf8")));
    expect(message.closureDiff).toEqual({
      added: [],
      removed: [],
      changed: [{ name: "libdep", from: "1.0", to: "1.1" }],
      totals: { added: 0, removed: 0, changed: 1 },
    });
    expect(JSON.parse(out)).toMatchObject({ revision, closureDiff: { rebuilt: 1, totals: { changed: 1 } } });
  });

  it("a failure: exit 1, the reason in the termination message and on stderr", async () => {
    const messageFile = join(dir, "termination-log");
    const { code, err } = await run(["warm-report", "--from", join(dir, "missing"), "--termination-message", messageFile]);
    expect(code).toBe(1);
    expect(err).toContain("result.json");
    expect(await readFile(messageFile, "utf8")).toContain("result.json");
  });

  it("usage errors exit 2", async () => {
    expect((await run(["warm-report"])).code).toBe(2);
    expect((await run(["warm-report", "--from", dir, "extra"])).code).toBe(2);
    expect((await run(["warm-report", "--bogus"])).code).toBe(2);
  });
});
