// The push pipeline against an in-memory registry and a fake store on disk (read via readRoot):
// which layers are skipped, mounted or uploaded, what the cache does, gzip digests, progress.
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { DirectoryLayerCache, layerCacheKey, MemoryLayerCache } from "../../src/image/layer-cache.ts";
import type { ClosurePath } from "../../src/image/path-info.ts";
import { pushClosure, type PushProgress, type RegistryPusher } from "../../src/image/push-closure.ts";
import type { Digest } from "../../src/oci/digest.ts";
import type { BlobInfo, BlobStreamSource } from "../../src/oci/registry-client.ts";

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}` as Digest;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

class FakeRegistry implements RegistryPusher {
  readonly host = "fake.registry:5000";
  readonly blobs = new Map<string, Map<string, Buffer>>();
  readonly manifests = new Map<string, Buffer>();
  readonly calls: string[] = [];
  inflight = 0;
  maxInflight = 0;

  #repo(repo: string): Map<string, Buffer> {
    let m = this.blobs.get(repo);
    if (!m) this.blobs.set(repo, (m = new Map()));
    return m;
  }
  async hasBlob(repo: string, digest: Digest): Promise<BlobInfo | undefined> {
    this.calls.push(`HEAD ${repo} ${digest.slice(7, 15)}`);
    const b = this.#repo(repo).get(digest);
    return b ? { digest, size: b.length } : undefined;
  }
  async mountBlob(repo: string, digest: Digest, from: string): Promise<boolean> {
    this.calls.push(`MOUNT ${repo} ${digest.slice(7, 15)} from ${from}`);
    const b = this.#repo(from).get(digest);
    if (b) this.#repo(repo).set(digest, b);
    return b !== undefined;
  }
  async uploadBlob(repo: string, bytes: Buffer): Promise<BlobInfo> {
    this.calls.push(`UPLOAD-SMALL ${repo}`);
    this.#repo(repo).set(sha(bytes), bytes);
    return { digest: sha(bytes), size: bytes.length };
  }
  async uploadBlobStream<T extends BlobInfo>(repo: string, source: BlobStreamSource<T>): Promise<T> {
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    try {
      const { stream, result } = source.open();
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      await new Promise((r) => setTimeout(r, 5));
      const info = await result;
      const bytes = Buffer.concat(chunks);
      if (sha(bytes) !== info.digest || bytes.length !== info.size) throw new Error("digest mismatch in fake registry");
      this.#repo(repo).set(info.digest, bytes);
      this.calls.push(`UPLOAD ${repo} ${info.digest.slice(7, 15)}`);
      return info;
    } finally {
      this.inflight--;
    }
  }
  async putManifest(repo: string, reference: string, manifest: { bytes: Buffer; mediaType: string }): Promise<Digest> {
    this.calls.push(`MANIFEST ${repo}:${reference.slice(0, 20)}`);
    this.manifests.set(`${repo}:${reference}`, manifest.bytes);
    this.manifests.set(`${repo}@${sha(manifest.bytes)}`, manifest.bytes);
    return sha(manifest.bytes);
  }
  uploads(): string[] {
    return this.calls.filter((c) => c.startsWith("UPLOAD "));
  }
}

const hash = (i: number) => `${String(i).padStart(2, "0")}${"abcdfghijklmnpqrsvwxyz0123456789".slice(2)}`;
const sp = (i: number, name: string) => `/nix/store/${hash(i)}-${name}`;

/** A fake store: libc <- lib1..lib4 <- app. */
function fakeStore(appContent = "app v1"): { root: string; closure: ClosurePath[]; app: string } {
  const root = mkdtempSync(join(tmpdir(), "push-closure-test-"));
  dirs.push(root);
  const mk = (path: string, files: Record<string, string>) => {
    for (const [f, c] of Object.entries(files)) {
      mkdirSync(join(root, path, f, ".."), { recursive: true });
      writeFileSync(join(root, path, f), c);
    }
  };
  const libc = sp(0, "libc");
  mk(libc, { "lib/libc.so": "libc".repeat(1000) });
  const libs = [1, 2, 3, 4].map((i) => sp(i, `lib${i}`));
  libs.forEach((l, i) => mk(l, { [`lib/lib${i}.so`]: `lib ${i}`.repeat(100 * (i + 1)) }));
  const app = sp(appContent === "app v1" ? 9 : 8, "app");
  mk(app, { "bin/app": appContent });
  const closure: ClosurePath[] = [
    { path: libc, narSize: 4000, narHash: "sha256-libc", references: [] },
    ...libs.map((l, i) => ({ path: l, narSize: 1000 * (i + 1), narHash: `sha256-lib${i}`, references: [libc] })),
    { path: app, narSize: 100, narHash: `sha256-${appContent}`, references: [...libs, libc] },
  ];
  return { root, closure, app };
}

describe("pushClosure", () => {
  it("uploads every layer first, then with a warm cache re-sends nothing and reads nothing", async () => {
    const { root, closure, app } = fakeStore();
    const registry = new FakeRegistry();
    const cache = new MemoryLayerCache();
    const first = await pushClosure({ registry, repository: "acme/web", closure, roots: [app], tags: ["v1", "latest"], cache, readRoot: root });
    expect(first.layers).toEqual({ total: 6, pushed: 6, skipped: 0, mounted: 0 });
    expect(registry.uploads()).toHaveLength(6);
    expect(first.bytesPushed).toBeGreaterThan(0);
    expect(registry.manifests.get("acme/web:v1")).toEqual(registry.manifests.get("acme/web:latest"));

    registry.calls.length = 0;
    rmSync(join(root, "nix"), { recursive: true }); // the store is gone: a cache hit must not read it
    const second = await pushClosure({ registry, repository: "acme/web", closure, roots: [app], tags: ["v1", "latest"], cache, readRoot: root });
    expect(second.layers).toEqual({ total: 6, pushed: 0, skipped: 6, mounted: 0 });
    expect(second.digest).toBe(first.digest);
    expect(registry.uploads()).toEqual([]);
    expect(second.bytesPushed).toBe(2 * second.size); // only the two manifest PUTs
  });

  it("puts the app in the last layer: a changed app re-uploads exactly one layer", async () => {
    const v1 = fakeStore("app v1");
    const registry = new FakeRegistry();
    const cache = new MemoryLayerCache();
    await pushClosure({ registry, repository: "acme/web", closure: v1.closure, roots: [v1.app], cache, readRoot: v1.root });
    const v2 = fakeStore("app v2");
    registry.calls.length = 0;
    const r = await pushClosure({ registry, repository: "acme/web", closure: v2.closure, roots: [v2.app], cache, readRoot: v2.root });
    expect(r.layers).toEqual({ total: 6, pushed: 1, skipped: 5, mounted: 0 });
    expect(r.layerDetails.map((l) => l.outcome)).toEqual(["skipped", "skipped", "skipped", "skipped", "skipped", "pushed"]);
  });

  it("mounts from the repository the cache saw a blob in, and from mountFrom", async () => {
    const { root, closure, app } = fakeStore();
    const registry = new FakeRegistry();
    const cache = new MemoryLayerCache();
    await pushClosure({ registry, repository: "acme/base", closure, roots: [app], cache, readRoot: root });
    registry.calls.length = 0;
    const r = await pushClosure({ registry, repository: "acme/other", closure, roots: [app], cache, readRoot: root });
    expect(r.layers).toEqual({ total: 6, pushed: 0, skipped: 0, mounted: 6 });
    expect(registry.calls.filter((c) => c.startsWith("MOUNT")).every((c) => c.endsWith("from acme/base"))).toBe(true);

    const r2 = await pushClosure({
      registry,
      repository: "acme/third",
      closure,
      roots: [app],
      readRoot: root,
      onCacheMiss: "hash-first",
      mountFrom: ["acme/base"],
    });
    expect(r2.layers.mounted).toBe(6);
  });

  it("without a cache: 'upload' re-sends, 'hash-first' asks the registry first", async () => {
    const { root, closure, app } = fakeStore();
    const registry = new FakeRegistry();
    const base = { registry, repository: "acme/web", closure, roots: [app], readRoot: root };
    const one = await pushClosure(base);
    const two = await pushClosure(base);
    expect(two.layers.pushed).toBe(6);
    const three = await pushClosure({ ...base, onCacheMiss: "hash-first" });
    expect(three.layers).toEqual({ total: 6, pushed: 0, skipped: 6, mounted: 0 });
    expect(new Set([one.digest, two.digest, three.digest]).size).toBe(1);
  });

  it("replaces a stale cache entry and still pushes the right bytes", async () => {
    const { root, closure, app } = fakeStore();
    const registry = new FakeRegistry();
    const cache = new MemoryLayerCache();
    const clean = await pushClosure({ registry: new FakeRegistry(), repository: "acme/web", closure, roots: [app], readRoot: root });
    const key = layerCacheKey({
      paths: [app],
      narHashes: new Map(closure.map((c) => [c.path, c.narHash!])),
      compression: "none",
      mtime: 1,
      storeDir: "/nix/store",
    });
    const bogus = `sha256:${"0".repeat(64)}` as Digest;
    await cache.put(key, { digest: bogus, size: 1, diffId: bogus, mediaType: "application/vnd.oci.image.layer.v1.tar" });
    const r = await pushClosure({ registry, repository: "acme/web", closure, roots: [app], cache, readRoot: root });
    expect(r.digest).toBe(clean.digest);
    expect((await cache.get(key))!.digest).toBe(clean.layerDetails.at(-1)!.digest);
  });

  it("gzip: one pass gives the blob digest and the diff_id of the uncompressed tar", async () => {
    const { root, closure, app } = fakeStore();
    const registry = new FakeRegistry();
    const r = await pushClosure({ registry, repository: "acme/web", closure, roots: [app], readRoot: root, compression: "gzip", maxLayers: 3 });
    const none = await pushClosure({ registry: new FakeRegistry(), repository: "acme/web", closure, roots: [app], readRoot: root, maxLayers: 3 });
    expect(r.layerDetails.map((l) => l.mediaType)).toEqual(Array(3).fill("application/vnd.oci.image.layer.v1.tar+gzip"));
    for (const [i, l] of r.layerDetails.entries()) {
      const blob = registry.blobs.get("acme/web")!.get(l.digest)!;
      expect(sha(blob)).toBe(l.digest);
      expect(sha(gunzipSync(blob))).toBe(l.diffId);
      expect(l.diffId).toBe(none.layerDetails[i]!.digest);
      expect(l.digest).not.toBe(l.diffId);
    }
    const config = JSON.parse(registry.blobs.get("acme/web")!.get(r.configDigest)!.toString()) as { rootfs: { diff_ids: string[] } };
    expect(config.rootfs.diff_ids).toEqual(none.layerDetails.map((l) => l.digest));
  });

  it("reports progress phases in order, per-layer states, and ends with all bytes done", async () => {
    const { root, closure, app } = fakeStore();
    const events: PushProgress[] = [];
    const r = await pushClosure({
      registry: new FakeRegistry(),
      repository: "acme/web",
      closure,
      roots: [app],
      readRoot: root,
      tags: ["a", "b"],
      onProgress: (p) => events.push(p),
    });
    const phases = events.map((e) => e.phase).filter((p, i, a) => a[i - 1] !== p);
    expect(phases).toEqual(["plan", "layers", "config", "manifest", "tags", "done"]);
    const last = events.at(-1)!;
    expect(last.bytesDone).toBe(last.bytesTotal);
    expect(last.bytesTotal).toBe(closure.reduce((s, c) => s + c.narSize, 0));
    const done = events
      .filter((e) => e.layer?.status === "pushed")
      .map((e) => e.layer!.index)
      .sort();
    expect(done).toEqual([0, 1, 2, 3, 4, 5]);
    expect(events.every((e, i) => i === 0 || e.bytesDone >= events[i - 1]!.bytesDone)).toBe(true);
    expect(Object.keys(r.seconds)).toEqual(["plan", "layers", "config", "manifest", "tags", "total"]);
  });

  it("keeps to the concurrency bound", async () => {
    const { root, closure, app } = fakeStore();
    const registry = new FakeRegistry();
    await pushClosure({ registry, repository: "acme/web", closure, roots: [app], readRoot: root, concurrency: 2 });
    expect(registry.maxInflight).toBe(2);
  });

  it("pushes the manifest by digest when there are no tags", async () => {
    const { root, closure, app } = fakeStore();
    const registry = new FakeRegistry();
    const r = await pushClosure({ registry, repository: "acme/web", closure, roots: [app], readRoot: root });
    expect(registry.calls.filter((c) => c.startsWith("MANIFEST"))).toEqual([`MANIFEST acme/web:${r.digest.slice(0, 20)}`]);
    expect(r.tags).toEqual([]);
  });

  it("writes a directory cache that a later run reads, and ignores corrupt entries", async () => {
    const { root, closure, app } = fakeStore();
    const cacheDir = join(root, "cache");
    const registry = new FakeRegistry();
    await pushClosure({ registry, repository: "acme/web", closure, roots: [app], readRoot: root, cache: new DirectoryLayerCache(cacheDir) });
    const key = layerCacheKey({
      paths: [app],
      narHashes: new Map(closure.map((c) => [c.path, c.narHash!])),
      compression: "none",
      mtime: 1,
      storeDir: "/nix/store",
    });
    const entry = JSON.parse(await readFile(join(cacheDir, `${key}.json`), "utf8")) as Record<string, unknown>;
    expect(entry).toMatchObject({ mediaType: "application/vnd.oci.image.layer.v1.tar", seenIn: "fake.registry:5000/acme/web" });
    writeFileSync(join(cacheDir, `${key}.json`), "{not json");
    const r = await pushClosure({ registry, repository: "acme/web", closure, roots: [app], readRoot: root, cache: new DirectoryLayerCache(cacheDir) });
    expect(r.layers).toEqual({ total: 6, pushed: 1, skipped: 5, mounted: 0 });
  });

  it("fails with the store error when a path is missing, and rejects bad tags before any work", async () => {
    const { root, closure, app } = fakeStore();
    rmSync(join(root, closure[2]!.path), { recursive: true });
    const registry = new FakeRegistry();
    await expect(pushClosure({ registry, repository: "acme/web", closure, roots: [app], readRoot: root })).rejects.toThrow(/ENOENT/);
    await expect(pushClosure({ registry, repository: "acme/web", closure, roots: [app], readRoot: root, tags: ["bad tag"] })).rejects.toThrow(/invalid tag/);
  });
});
