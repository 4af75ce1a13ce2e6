// Pushes real Nix closures to the test bed's real docker-registry (distribution 2.8.2, plain
// HTTP) and checks the result with independent tools: skopeo inspects and copies what we pushed,
// umoci unpacks it into a rootfs holding exactly the store paths.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readlinkSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { MemoryLayerCache, DirectoryLayerCache } from "../../src/image/layer-cache.ts";
import { pushClosure, type PushClosureResult } from "../../src/image/push-closure.ts";
import { RegistryClient } from "../../src/oci/registry-client.ts";
import { buildNixClosure, type NixClosure } from "../support/nix-closure-fixture.ts";
import { run } from "../support/process.ts";
import type { TestBed } from "../support/testbed-types.ts";

function bed(): TestBed {
  const b = inject("testbed");
  if (!b?.registry?.plain?.host) throw new Error('no test bed (inject("testbed") is empty): run with the integration project\'s global setup');
  return b;
}

const runTag = randomBytes(4).toString("hex");
let tb: TestBed;
let host: string;
let client: RegistryClient;
let work: string;
let v1: NixClosure;
let v2: NixClosure;

function blobCount(rootDir: string): number {
  const base = join(rootDir, "docker/registry/v2/blobs/sha256");
  if (!existsSync(base)) return 0;
  let n = 0;
  for (const a of readdirSync(base)) for (const b of readdirSync(join(base, a))) if (existsSync(join(base, a, b, "data"))) n++;
  return n;
}

async function skopeoJson(args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run("skopeo", args, { timeoutMs: 60_000 });
  return JSON.parse(stdout) as Record<string, unknown>;
}

beforeAll(async () => {
  tb = bed();
  host = tb.registry.plain.host;
  work = mkdtempSync(join(tb.tmpDir, "oci-push-"));
  client = new RegistryClient({ host, plainHttp: true });
  v1 = await buildNixClosure(tb.nix.env, `v1-${runTag}`, work);
  v2 = await buildNixClosure(tb.nix.env, `v2-${runTag}`, work);
});

afterAll(() => client?.close());

describe("pushClosure against docker-registry", () => {
  const cache = new MemoryLayerCache();
  let first: PushClosureResult;
  const repo = `oci-it/${runTag}/app`;

  it("pushes an image that skopeo inspects by digest and umoci unpacks to the store paths", async () => {
    first = await pushClosure({
      registry: client,
      repository: repo,
      closure: v1.closure,
      roots: [v1.app],
      tags: ["v1", "latest"],
      cache,
      image: { config: { entrypoint: [`${v1.app}/bin/app`], env: ["LANG=C.UTF-8"], exposedPorts: [8080] } },
    });
    expect(first.layers).toEqual({ total: 5, pushed: 5, skipped: 0, mounted: 0 });

    const inspected = await skopeoJson(["inspect", "--tls-verify=false", `docker://${host}/${repo}@${first.digest}`]);
    expect(inspected.Digest).toBe(first.digest);
    expect(inspected.Layers).toEqual(first.layerDetails.map((l) => l.digest));
    expect(inspected.Architecture).toBe("amd64");
    expect(inspected.Os).toBe("linux");
    expect(inspected.Created).toBe("1970-01-01T00:00:01Z");
    expect((inspected.RepoTags as string[]).sort()).toEqual(["latest", "v1"]);
    const config = await skopeoJson(["inspect", "--tls-verify=false", "--config", `docker://${host}/${repo}:v1`]);
    expect(config).toMatchObject({
      config: { Entrypoint: [`${v1.app}/bin/app`], Env: ["LANG=C.UTF-8"], ExposedPorts: { "8080/tcp": {} } },
      rootfs: { type: "layers", diff_ids: first.layerDetails.map((l) => l.diffId) },
    });
    const raw = await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${host}/${repo}:latest`]);
    expect(JSON.parse(raw.stdout)).toMatchObject({ mediaType: "application/vnd.oci.image.manifest.v1+json" });

    const layout = join(work, "layout");
    await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${host}/${repo}@${first.digest}`, `oci:${layout}:v1`], { timeoutMs: 60_000 });
    const bundle = join(work, "bundle");
    await run("umoci", ["unpack", "--rootless", "--image", `${layout}:v1`, bundle], { timeoutMs: 60_000 });
    const rootfs = join(bundle, "rootfs");
    expect(readdirSync(join(rootfs, "nix/store")).sort()).toEqual(v1.closure.map((c) => c.path.slice("/nix/store/".length)).sort());
    for (const c of v1.closure) await run("diff", ["-r", "--no-dereference", c.path, join(rootfs, c.path)]);
    const lib2 = v1.closure.find((c) => c.path.endsWith("-oci-fixture-lib2"))!.path;
    expect(readFileSync(join(rootfs, lib2, "lib/hardlink"), "utf8")).toBe("shared\n");
    expect(readlinkSync(join(rootfs, lib2, "lib/libc-link"))).toMatch(/-oci-fixture-libc\/lib\/libc\.so\.6$/);
    expect(statSync(join(rootfs, v1.app, "bin/app")).mode & 0o777).toBe(0o555);
    expect(readFileSync(join(rootfs, v1.app, "bin/app"), "utf8")).toContain(`v1-${runTag}`);
  });

  it("puts the most shared path (libc) in the first layer and the app alone in the last", async () => {
    expect(first.layerDetails.map((l) => l.paths)).toEqual([1, 1, 1, 1, 1]);
    // Fetch the layer blobs straight from the registry (plain HTTP) and list them with GNU tar.
    const layerNames = async (digest: string) => {
      const res = await fetch(`http://${host}/v2/${repo}/blobs/${digest}`);
      expect(res.status).toBe(200);
      const file = join(work, `${digest.slice(7)}.tar`);
      writeFileSync(file, Buffer.from(await res.arrayBuffer()));
      return (await run("tar", ["-tf", file])).stdout.trim().split("\n");
    };
    const bottom = await layerNames(first.layerDetails[0]!.digest);
    expect(bottom.slice(0, 3)).toEqual(["nix/", "nix/store/", expect.stringMatching(/^nix\/store\/[a-z0-9]{32}-oci-fixture-libc\/$/)]);
    const top = await layerNames(first.layerDetails[4]!.digest);
    expect(top).toEqual(["nix/", "nix/store/", `${v1.app.slice(1)}/`, `${v1.app.slice(1)}/bin/`, `${v1.app.slice(1)}/bin/app`]);
  });

  it("pushing the same content again uploads no blob", async () => {
    const before = blobCount(tb.registry.plain.rootDir);
    const again = await pushClosure({
      registry: client,
      repository: repo,
      closure: v1.closure,
      roots: [v1.app],
      tags: ["v1", "latest"],
      cache,
      image: { config: { entrypoint: [`${v1.app}/bin/app`], env: ["LANG=C.UTF-8"], exposedPorts: [8080] } },
    });
    expect(again.digest).toBe(first.digest);
    expect(again.layers).toEqual({ total: 5, pushed: 0, skipped: 5, mounted: 0 });
    expect(again.bytesPushed).toBe(2 * again.size);
    expect(blobCount(tb.registry.plain.rootDir)).toBe(before);
  });

  it("a changed app path re-pushes exactly one layer", async () => {
    const r = await pushClosure({ registry: client, repository: repo, closure: v2.closure, roots: [v2.app], tags: ["v2"], cache });
    expect(r.layers).toEqual({ total: 5, pushed: 1, skipped: 4, mounted: 0 });
    expect(r.layerDetails.slice(0, 4).map((l) => l.digest)).toEqual(first.layerDetails.slice(0, 4).map((l) => l.digest));
    expect(r.layerDetails[4]!.digest).not.toBe(first.layerDetails[4]!.digest);
    const inspected = await skopeoJson(["inspect", "--tls-verify=false", `docker://${host}/${repo}:v2`]);
    expect(inspected.Digest).toBe(r.digest);
  });

  it("gives the same digest from a fresh cache, and 'hash-first' then skips every layer", async () => {
    const other = `oci-it/${runTag}/fresh`;
    const fresh = await pushClosure({
      registry: client,
      repository: other,
      closure: v1.closure,
      roots: [v1.app],
      tags: ["v1", "latest"],
      image: { config: { entrypoint: [`${v1.app}/bin/app`], env: ["LANG=C.UTF-8"], exposedPorts: [8080] } },
    });
    expect(fresh.digest).toBe(first.digest);
    const hashFirst = await pushClosure({ registry: client, repository: other, closure: v1.closure, roots: [v1.app], onCacheMiss: "hash-first" });
    expect(hashFirst.layers.skipped).toBe(5);
  });

  it("mounts layers across repositories of the registry", async () => {
    const dirCache = new DirectoryLayerCache(join(work, "layer-cache"));
    await pushClosure({ registry: client, repository: `oci-it/${runTag}/base`, closure: v1.closure, roots: [v1.app], cache: dirCache });
    const r = await pushClosure({
      registry: client,
      repository: `oci-it/${runTag}/mounted`,
      closure: v1.closure,
      roots: [v1.app],
      cache: dirCache,
      tags: ["x"],
    });
    expect(r.layers).toEqual({ total: 5, pushed: 0, skipped: 0, mounted: 5 });
    await run("skopeo", ["inspect", "--tls-verify=false", `docker://${host}/oci-it/${runTag}/mounted:x`]);
    expect(await client.hasBlob(`oci-it/${runTag}/mounted`, r.layerDetails[0]!.digest)).toBeDefined();
  });

  it("pushes gzip layers whose diff_ids are the uncompressed digests; skopeo copies and umoci unpacks them", async () => {
    const gzRepo = `oci-it/${runTag}/gzip`;
    const r = await pushClosure({
      registry: client,
      repository: gzRepo,
      closure: v1.closure,
      roots: [v1.app],
      tags: ["gz"],
      compression: "gzip",
      maxLayers: 3,
    });
    expect(r.layers.total).toBe(3);
    const raw = JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${host}/${gzRepo}:gz`])).stdout) as {
      layers: { mediaType: string; digest: string }[];
    };
    expect(raw.layers.map((l) => l.mediaType)).toEqual(Array(3).fill("application/vnd.oci.image.layer.v1.tar+gzip"));
    const plain = await pushClosure({ registry: client, repository: `oci-it/${runTag}/nogzip`, closure: v1.closure, roots: [v1.app], maxLayers: 3 });
    expect(r.layerDetails.map((l) => l.diffId)).toEqual(plain.layerDetails.map((l) => l.digest));
    const layout = join(work, "gz-layout");
    await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${host}/${gzRepo}:gz`, `oci:${layout}:gz`], { timeoutMs: 60_000 });
    const blob = readFileSync(join(layout, "blobs/sha256", r.layerDetails[0]!.digest.slice(7)));
    expect(gunzipSync(blob).length).toBeGreaterThan(1024);
    const bundle = join(work, "gz-bundle");
    await run("umoci", ["unpack", "--rootless", "--image", `${layout}:gz`, bundle], { timeoutMs: 60_000 });
    expect(readFileSync(join(bundle, "rootfs", v1.app, "bin/app"), "utf8")).toContain(`v1-${runTag}`);
  });

  it("reads back manifests and tags with the client", async () => {
    const m = await client.getManifest(repo, "v1");
    expect(m.digest).toBe(first.digest);
    expect(m.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect((await client.listTags(repo)).sort()).toEqual(["latest", "v1", "v2"]);
    expect(await client.listTags(`oci-it/${runTag}/never-pushed`)).toEqual([]);
  });
});
