// Issue 12, item 8: resource exhaustion of the push step. Each case hands the real push-step CLI
// a hostile input (what a malicious flake can make the build step's directory or the image hold,
// or what a hostile registry can answer) and asserts a bounded, clear failure: exit code 1, a
// termination message that says what was refused (<= 4096 bytes). The figures (peak RSS of the
// push step under each) come from bench/push-exhaustion.ts.
import { spawnSync } from "node:child_process";
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TRANSIENT_EXIT_CODE } from "../../src/builder/step-results.ts";
import { testbed } from "../support/kube.ts";
import { fixtureRepo, runCli, uniqueRepo } from "../support/builder-fixtures.ts";
import { addToStore, archiveStepDir, gzipBombArchive, hugeJsonArchive, hugeStepFileDir, startEndlessRegistry } from "../support/exhaustion-fixtures.ts";

const bed = testbed();
let work = "";
let helloDir = "";

beforeAll(async () => {
  work = join(bed.tmpDir, "resource-exhaustion");
  await mkdir(work, { recursive: true });
  const hello = await fixtureRepo("hello");
  helloDir = join(work, "hello");
  const b = await runCli(bed, ["build-step", "--flake", hello.flakeUrl, "--attribute", "default", "--out", helloDir]);
  expect(b.code, b.stderr).toBe(0);
});

/** push-step on `dir` to `image`; returns its termination message (exit code 1, or `code`, expected). */
async function refused(dir: string, image: string, name: string, code = 1): Promise<string> {
  const tm = join(work, `${name}.tm`);
  const r = await runCli(bed, ["push-step", "--from", dir, "--image", image, "--plain-http", "--termination-message", tm], {
    env: { PATH: "/nonexistent" },
    timeoutMs: 300_000,
  });
  expect(r.code, r.stderr.slice(-2000)).toBe(code);
  const message = await readFile(tm, "utf8");
  expect(Buffer.byteLength(message)).toBeLessThanOrEqual(4096);
  return message;
}

describe("the push step under hostile inputs (issue 12 item 8)", () => {
  const image = () => `${bed.registry.plain.host}/${uniqueRepo("exhaust")}`;

  it("a gzip bomb docker-archive (2 GiB of zeros in 2 MB) stops at the decompression bound", async () => {
    const file = join(work, "bomb.tar.gz");
    await gzipBombArchive(file);
    const dir = join(work, "bomb");
    await archiveStepDir(dir, addToStore(file, { ...process.env, ...bed.nix.env }));
    expect(await refused(dir, image(), "bomb")).toMatch(/expands to more than 100 times its compressed size .*decompression bomb/);
  });

  it("a docker-archive with 6 JSON-looking entries of 15 MiB stops at the metadata bound", async () => {
    const file = join(work, "json.tar");
    await hugeJsonArchive(file);
    const dir = join(work, "json");
    await archiveStepDir(dir, addToStore(file, { ...process.env, ...bed.nix.env }));
    expect(await refused(dir, image(), "json")).toMatch(/more than 67108864 bytes of metadata and JSON-looking entries/);
  });

  it("multi-GB step files and a FIFO are refused before they are read", async () => {
    const result = join(work, "huge-result");
    await hugeStepFileDir(result, "result.json");
    expect(await refused(result, image(), "huge-result")).toMatch(/result\.json is 4294967296 bytes, more than 1048576: refusing to read it/);
    const closure = join(work, "huge-closure");
    await hugeStepFileDir(closure, "closure.json");
    await copyFile(join(helloDir, "result.json"), join(closure, "result.json"));
    expect(await refused(closure, image(), "huge-closure")).toMatch(/closure\.json is 4294967296 bytes, more than 67108864: refusing to read it/);
    const fifo = join(work, "fifo");
    await mkdir(fifo, { recursive: true });
    expect(spawnSync("mkfifo", [join(fifo, "result.json")]).status).toBe(0);
    expect(await refused(fifo, image(), "fifo")).toMatch(/result\.json is not a regular file/);
  });

  describe("a registry whose responses never end", () => {
    const servers: { close(): Promise<void> }[] = [];
    afterAll(async () => {
      await Promise.all(servers.map((s) => s.close()));
    });

    // A 5xx may pass: the push step says so with TRANSIENT_EXIT_CODE (75), after its retries.
    it.each([
      [500, /HTTP 500/, TRANSIENT_EXIT_CODE],
      [401, /401|unauthori[sz]ed|credentials/i, 1],
    ])("HTTP %d with an endless body: the push step ends with a clear error", async (status, pattern, code) => {
      const registry = await startEndlessRegistry(status);
      servers.push(registry);
      const message = await refused(helloDir, `${registry.host}/acme/web`, `endless-${status}`, code);
      expect(message).toMatch(pattern);
      // It read a bounded prefix and hung up; the server pushed at most what the socket buffers held beyond that.
      expect(registry.sent()).toBeLessThan(512 * 1024 * 1024);
    });
  });
});
