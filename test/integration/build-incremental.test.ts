// Determinism and incremental pushes, checked against the registry's own storage and request log:
//   - the same revision built twice, from different working directories with separate caches,
//     gives the same manifest digest;
//   - after a commit that changes only the app's own store path, a rebuild pushes exactly one
//     new layer plus config and manifest;
//   - pushing the same content again uploads no blob (with the layer cache, and without it in
//     hash-first mode).
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { PushStepResult } from "../../src/builder/step-results.ts";
import type { GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";
import {
  completedUploads,
  fixtureFiles,
  fixtureRepo,
  lastJson,
  plainAccess,
  rawManifest,
  runCli,
  runImage,
  settle,
  storedBlobs,
  testbedConfig,
  uniqueRepo,
} from "../support/builder-fixtures.ts";

const bed = testbed();
const plain = bed.registry.plain;
const registryLog = join(bed.logDir, "registry-plain.log");
let config = "";
let hello: GitRepo;

beforeAll(async () => {
  config = await testbedConfig(bed);
  hello = await fixtureRepo("hello");
});

async function build(ref: string, repository: string, extra: string[], cwd?: string): Promise<PushStepResult> {
  const r = await runCli(
    bed,
    // Counting image uploads: no SBOM/provenance referrers (attestations.test.ts covers those).
    ["build", ref, "--image", `${plain.host}/${repository}`, "--plain-http", "--config", config, "--json", "--no-sbom", "--no-provenance", ...extra],
    cwd ? { cwd } : {},
  );
  expect(r.code, r.stderr).toBe(0);
  return lastJson<PushStepResult>(r.stdout);
}

const hex = (digest: string) => digest.replace(/^sha256:/, "");

describe("determinism", () => {
  it("two builds of the same revision in different working directories give the same manifest digest", async () => {
    const ref = `${hello.flakeUrl}?rev=${hello.rev}#default`;
    const dirs = [join(bed.tmpDir, "determinism", "a"), join(bed.tmpDir, "determinism", "b", "nested")];
    const results: PushStepResult[] = [];
    for (const [i, dir] of dirs.entries()) {
      await mkdir(dir, { recursive: true });
      results.push(await build(ref, uniqueRepo(`det-${i}`), ["--out", join(dir, "out"), "--layer-cache", join(dir, "cache")], dir));
    }
    const [a, b] = results as [PushStepResult, PushStepResult];
    expect(a.layers.pushed).toBe(a.layers.total);
    expect(b.layers.pushed).toBe(b.layers.total);
    expect(b.digest).toBe(a.digest);
    expect(b.tags).toEqual(a.tags);
    // (Nix 2.8 may or may not keep `ref=master` in the locked URL, depending on its fetcher cache.)
    expect({ ...b.revision, url: undefined }).toEqual({ ...a.revision, url: undefined });
    // The build step's files agree too.
    const [ca, cb] = await Promise.all(dirs.map((d) => readFile(join(d, "out", "closure.json"), "utf8")));
    expect(cb).toBe(ca);
  });
});

describe("incremental pushes", () => {
  const repository = uniqueRepo("incremental");
  const cache = () => join(bed.tmpDir, "incremental-cache");
  let first: PushStepResult;

  it("after a commit that changes only the app, a rebuild pushes exactly one new layer plus config and manifest", async () => {
    first = await build(`${hello.flakeUrl}#default`, repository, ["--layer-cache", cache()]);
    expect(first.layers).toEqual({ total: 4, pushed: 4, skipped: 0, mounted: 0 });
    const firstManifest = await rawManifest(`${plain.host}/${repository}@${first.digest}`, plainAccess());
    expect(await settle(() => completedUploads(registryLog, repository), 5)).toBe(5); // 4 layers + config

    // Change only the hello-1.0 derivation (its README text): busybox, hello-lib and hello-share stay.
    const flake = (await fixtureFiles("hello"))["flake.nix"]!;
    const changed = flake.replace("prints the message of hello-share", "prints the message of hello-share (v2)");
    expect(changed).not.toBe(flake);
    await hello.commit({ "flake.nix": changed }, "app-only change");

    const blobsBefore = storedBlobs(plain.rootDir);
    const uploadsBefore = completedUploads(registryLog, repository);
    const second = await build(`${hello.flakeUrl}#default`, repository, ["--layer-cache", cache()]);
    expect(second.revision.rev).toBe(hello.rev);
    expect(second.digest).not.toBe(first.digest);
    // Our own count.
    expect(second.layers).toEqual({ total: 4, pushed: 1, skipped: 3, mounted: 0 });

    // The registry's view: the manifests differ in the last (app) layer only ...
    const manifest = await rawManifest(`${plain.host}/${repository}@${second.digest}`, plainAccess());
    expect(manifest.layers.slice(0, 3)).toEqual(firstManifest.layers.slice(0, 3));
    expect(manifest.layers[3]!.digest).not.toBe(firstManifest.layers[3]!.digest);
    // ... its storage gained exactly that layer, the config and the manifest of our image ...
    const newBlobs = [...storedBlobs(plain.rootDir)].filter((h) => !blobsBefore.has(h));
    const ours = new Set([manifest.config.digest, second.digest, ...manifest.layers.map((l) => l.digest)].map(hex));
    expect(newBlobs.filter((h) => ours.has(h)).sort()).toEqual([hex(manifest.layers[3]!.digest), hex(manifest.config.digest), hex(second.digest)].sort());
    // ... and its request log shows two completed blob uploads (layer + config).
    expect(await settle(() => completedUploads(registryLog, repository) - uploadsBefore, 2)).toBe(2);
    expect(second.bytesPushed).toBeLessThan(manifest.layers[3]!.size + manifest.config.size + 3 * 1024);
    expect(second.bytesPushed).toBeGreaterThanOrEqual(manifest.layers[3]!.size + manifest.config.size);

    expect((await runImage(bed, `${plain.host}/${repository}@${second.digest}`, plainAccess())).trim()).toBe("Hello from nix-image-operator!");
  });

  it("pushing the same content again uploads no blob", async () => {
    const uploadsBefore = completedUploads(registryLog, repository);
    const blobsBefore = storedBlobs(plain.rootDir).size;
    const again = await build(`${hello.flakeUrl}#default`, repository, ["--layer-cache", cache(), "--tag", "again"]);
    expect(again.layers).toEqual({ total: 4, pushed: 0, skipped: 4, mounted: 0 });
    // Only manifests were sent (one per tag).
    expect(again.bytesPushed).toBeLessThan(2 * 2048);

    // Without the layer cache, hash-first asks the registry before uploading anything.
    const fresh = await build(`${hello.flakeUrl}#default`, repository, ["--layer-cache", join(bed.tmpDir, "fresh-cache"), "--on-cache-miss", "hash-first"]);
    expect(fresh.digest).toBe(again.digest);
    expect(fresh.layers).toEqual({ total: 4, pushed: 0, skipped: 4, mounted: 0 });

    await new Promise((r) => setTimeout(r, 500));
    expect(completedUploads(registryLog, repository)).toBe(uploadsBefore);
    expect(storedBlobs(plain.rootDir).size).toBeGreaterThanOrEqual(blobsBefore);
  });

  it("build keeps a layer cache by default ($NIX_IMAGE_OPERATOR_CACHE): the second push of the same image uploads nothing", async () => {
    const repo = uniqueRepo("default-cache");
    const env = { NIX_IMAGE_OPERATOR_CACHE: join(bed.tmpDir, "default-cache") };
    const results: PushStepResult[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await runCli(
        bed,
        [
          "build",
          `${hello.flakeUrl}#default`,
          "--image",
          `${plain.host}/${repo}`,
          "--plain-http",
          "--config",
          config,
          "--json",
          "--no-sbom",
          "--no-provenance",
        ],
        {
          env,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      results.push(lastJson<PushStepResult>(r.stdout));
    }
    expect(results[0]!.layers.pushed).toBe(4);
    expect(results[1]!.layers).toEqual({ total: 4, pushed: 0, skipped: 4, mounted: 0 });
    expect(await settle(() => completedUploads(registryLog, repo), 5)).toBe(5);
  });

  it("another repository of the same registry gets the layers by cross-repository mount", async () => {
    const other = uniqueRepo("incremental-copy");
    const result = await build(`${hello.flakeUrl}#default`, other, ["--layer-cache", cache()]);
    expect(result.layers).toEqual({ total: 4, pushed: 0, skipped: 0, mounted: 4 });
    expect(await settle(() => completedUploads(registryLog, other), 1)).toBe(1); // the config only
  });
});
