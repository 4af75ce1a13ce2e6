// The cluster binary cache with real Nix (issue 14): Nix's own binary-cache format written by the
// cache step (`nix copy --to file://...`, signed with a key from `nix key generate-secret`) and
// served over HTTP from the test bed. A store that lost the closure substitutes it instead of
// rebuilding (the derivations count their own builds); with an untrusted key the substitute is
// refused and Nix builds. The Nix phase seconds of each are printed, not asserted.
import { randomBytes } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { appendFile, mkdir, readdir, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join, normalize } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readStepFiles } from "../../src/builder/step-files.ts";
import { runCli } from "../support/builder-fixtures.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";
import { run } from "../support/process.ts";

const bed = testbed();
const nixEnv = { ...process.env, ...bed.nix.env };

/** Two derivations (app depends on lib); each appends a line to `counter` when it is really built. */
function countingFlake(marker: string, counter: string, seconds: number): Record<string, string> {
  const step = (name: string, extra: string) =>
    `/bin/echo ${name} >> ${counter}; /bin/sleep ${seconds}; /bin/mkdir -p $out; /bin/echo ${marker} > $out/${name}.txt${extra}`;
  return {
    "flake.nix": `{
  outputs = { self }: let
    system = "x86_64-linux";
    lib = derivation { name = "cached-lib"; inherit system; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(step("lib", ""))} ]; };
    app = derivation { name = "cached-app"; inherit system lib; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(step("app", "; /bin/echo $lib > $out/lib-path"))} ]; };
  in { packages.\${system}.default = app; };
}
`,
    "flake.lock": JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }) + "\n",
  };
}

/** A static file server for the cache directory: any HTTP server serves Nix's binary-cache format. */
function serve(root: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = normalize(join(root, decodeURIComponent((req.url ?? "/").split("?")[0]!)));
    if (!path.startsWith(root) || !existsSync(path)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200);
    createReadStream(path).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

let repo: GitRepo;
let work = "";
let counter = "";
let server: Server;
const cacheDir = () => join(work, "cache");

beforeAll(async () => {
  work = join(bed.tmpDir, "binary-cache", randomBytes(4).toString("hex"));
  await mkdir(work, { recursive: true });
  counter = join(work, "builds");
  await appendFile(counter, "");
  repo = await createGitRepo(countingFlake(randomBytes(8).toString("hex"), counter, 1), { prefix: "cached" });
  await mkdir(cacheDir(), { recursive: true });
  server = await serve(cacheDir());
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const builds = async () => (await readFile(counter, "utf8")).split("\n").filter(Boolean).length;

async function key(name: string): Promise<{ secretFile: string; secret: string; publicKey: string }> {
  const secret = (await run("nix", ["key", "generate-secret", "--key-name", name], { env: nixEnv })).stdout;
  const secretFile = join(work, `${name}.secret`);
  await appendFile(secretFile, secret, { mode: 0o600 });
  const publicKey = (await run("nix", ["key", "convert-secret-to-public"], { env: nixEnv, input: secret })).stdout.trim();
  return { secretFile, secret: secret.trim(), publicKey };
}

async function buildStep(out: string, cache?: { url: string; publicKey: string }) {
  const args = ["build-step", "--flake", `${repo.flakeUrl}?rev=${repo.rev}`, "--attribute", "default", "--out", join(work, out)];
  if (cache) args.push("--cluster-cache", cache.url, "--trusted-public-key", cache.publicKey);
  const r = await runCli(bed, args);
  expect(r.code, r.stderr).toBe(0);
  return { ...(await readStepFiles(join(work, out))), stderr: r.stderr };
}

/** The cold store: the closure deleted (no GC roots were registered). */
async function forget(paths: string[]): Promise<void> {
  await run("nix", ["store", "delete", ...paths], { env: nixEnv });
  for (const p of paths) expect(existsSync(p), p).toBe(false);
}

describe("cluster binary cache", () => {
  it("the cache step signs and uploads the closure; a cold store substitutes it; an untrusted key makes Nix build instead", async () => {
    const signing = await key("testbed-cache-1");
    const other = await key("someone-else-1");
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const first = await buildStep("first");
    expect(await builds()).toBe(2);
    const closure = first.closure.map((p) => p.path);
    expect(closure).toHaveLength(2);

    const cached = await runCli(bed, ["cache-step", "--from", join(work, "first"), "--to", `file://${cacheDir()}`, "--secret-key-file", signing.secretFile]);
    expect(cached.code, cached.stderr).toBe(0);
    const report = JSON.parse(cached.stdout.trim().split("\n").pop()!) as { copied: boolean; closurePaths: number; cache: string };
    expect(report).toMatchObject({ copied: true, closurePaths: 2, cache: `file://${cacheDir()}` });
    expect(cached.stdout + cached.stderr).not.toContain(signing.secret.split(":")[1]);
    const narinfos = (await readdir(cacheDir())).filter((f) => f.endsWith(".narinfo"));
    expect(narinfos).toHaveLength(2);
    for (const f of narinfos) expect(await readFile(join(cacheDir(), f), "utf8")).toMatch(/^Sig: testbed-cache-1:[A-Za-z0-9+/]{86}==$/m);

    // Cold store, cache trusted: substituted, nothing built.
    await forget(closure);
    const warm = await buildStep("warm", { url, publicKey: signing.publicKey });
    expect(warm.result.outPath).toBe(first.result.outPath);
    expect(await builds()).toBe(2);

    // Cold store, the cache signed by a key the build does not trust: refused, built again.
    await forget(closure);
    const refused = await buildStep("refused", { url, publicKey: other.publicKey });
    expect(refused.result.outPath).toBe(first.result.outPath);
    expect(await builds()).toBe(4);

    console.log(
      `binary cache, Nix phase seconds (2 derivations of 1 s each): cold without cache ${first.result.seconds.build}, ` +
        `cold with cache ${warm.result.seconds.build}, untrusted key ${refused.result.seconds.build}`,
    );
    await rm(join(work, "first"), { recursive: true, force: true });
  });

  it("a cache that cannot be written is reported, and the step still succeeds (the image is pushed either way)", async () => {
    const signing = await key("testbed-cache-2");
    await buildStep("for-broken");
    const r = await runCli(bed, [
      "cache-step",
      "--from",
      join(work, "for-broken"),
      "--to",
      "file:///proc/no-such-cache",
      "--secret-key-file",
      signing.secretFile,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split("\n").pop()!) as { copied: boolean; error?: string };
    expect(report.copied).toBe(false);
    expect(report.error).toBeTruthy();
    // The key itself never appears (its file's path may, in the command line Nix ran).
    expect(r.stdout + r.stderr).not.toContain(signing.secret.split(":")[1]);
  });
});
