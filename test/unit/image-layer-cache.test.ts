import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DirectoryLayerCache, layerCacheKey, parseLayerCacheEntry, type LayerKeyInput } from "../../src/image/layer-cache.ts";
import type { Digest } from "../../src/oci/digest.ts";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const d = (c: string) => `sha256:${c.repeat(64)}` as Digest;
const base: LayerKeyInput = { paths: ["/nix/store/b-x", "/nix/store/a-y"], compression: "none", mtime: 1, storeDir: "/nix/store" };

describe("layerCacheKey", () => {
  it("depends on the set of paths, not their order or repeats", () => {
    expect(layerCacheKey({ ...base, paths: ["/nix/store/a-y", "/nix/store/b-x", "/nix/store/a-y"] })).toBe(layerCacheKey(base));
    expect(layerCacheKey(base)).toMatch(/^[0-9a-f]{64}$/);
  });

  it.each([
    ["another path set", { paths: ["/nix/store/a-y"] }],
    ["gzip", { compression: "gzip" as const }],
    ["another mtime", { mtime: 2 }],
    ["another store dir", { storeDir: "/gnu/store" }],
    ["a NAR hash", { narHashes: new Map([["/nix/store/a-y", "sha256-x"]]) }],
  ])("changes with %s", (_what, change) => {
    expect(layerCacheKey({ ...base, ...change })).not.toBe(layerCacheKey(base));
  });

  it("includes the gzip level only for gzip", () => {
    expect(layerCacheKey({ ...base, gzipLevel: 9 })).toBe(layerCacheKey(base));
    expect(layerCacheKey({ ...base, compression: "gzip", gzipLevel: 9 })).not.toBe(layerCacheKey({ ...base, compression: "gzip", gzipLevel: 1 }));
  });
});

describe("parseLayerCacheEntry", () => {
  const ok = { digest: d("a"), size: 10, diffId: d("b"), mediaType: "m", seenIn: "h/r" };
  it("accepts a complete entry", () => expect(parseLayerCacheEntry(ok)).toEqual(ok));
  it.each([
    ["no digest", { ...ok, digest: undefined }],
    ["a bad diffId", { ...ok, diffId: "sha256:x" }],
    ["a negative size", { ...ok, size: -1 }],
    ["a string size", { ...ok, size: "10" }],
    ["no media type", { ...ok, mediaType: "" }],
    ["null", null],
  ])("rejects %s", (_w, v) => expect(parseLayerCacheEntry(v)).toBeUndefined());
});

describe("DirectoryLayerCache", () => {
  it("round-trips entries, treats missing and corrupt files as misses, leaves no temp files", async () => {
    const dir = mkdtempSync(join(tmpdir(), "layer-cache-test-"));
    dirs.push(dir);
    const cache = new DirectoryLayerCache(join(dir, "sub"));
    const key = layerCacheKey(base);
    expect(await cache.get(key)).toBeUndefined();
    await cache.put(key, { digest: d("a"), size: 1, diffId: d("a"), mediaType: "m" });
    expect(await cache.get(key)).toEqual({ digest: d("a"), size: 1, diffId: d("a"), mediaType: "m" });
    expect(readdirSync(join(dir, "sub")).sort()).toEqual([`${key}.json`, "entry-key"]);
    writeFileSync(join(dir, "sub", `${key}.json`), "garbage");
    expect(await cache.get(key)).toBeUndefined();
    expect(await cache.get("../../etc/passwd")).toBeUndefined();
    await expect(cache.put("../../etc/passwd", { digest: d("a"), size: 1, diffId: d("a"), mediaType: "m" })).rejects.toThrow(/bad layer cache key/);
  });

  it("authenticates entries: a forged or edited entry is a miss, a key others could know is replaced", async () => {
    const dir = mkdtempSync(join(tmpdir(), "layer-cache-test-"));
    dirs.push(dir);
    const cache = new DirectoryLayerCache(dir);
    const key = layerCacheKey(base);
    const entry = { digest: d("a"), size: 1, diffId: d("a"), mediaType: "m" };
    await cache.put(key, entry);
    expect(statSync(cache.keyFile).mode & 0o777).toBe(0o600);
    const file = join(dir, `${key}.json`);
    const stored = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    expect(stored.mac).toMatch(/^[0-9a-f]{64}$/);
    // Another blob under the same MAC, and no MAC at all: both misses.
    writeFileSync(file, JSON.stringify({ ...stored, digest: d("b"), diffId: d("b") }));
    expect(await new DirectoryLayerCache(dir).get(key)).toBeUndefined();
    writeFileSync(file, JSON.stringify({ ...entry }));
    const fresh = new DirectoryLayerCache(dir);
    expect(await fresh.get(key)).toBeUndefined();
    expect(fresh.rejected).toBe(1);
    // The same entry moved to another key: a miss (the key is inside the MAC).
    const other = layerCacheKey({ ...base, paths: ["/nix/store/x"] });
    writeFileSync(join(dir, `${other}.json`), JSON.stringify(stored));
    expect(await new DirectoryLayerCache(dir).get(other)).toBeUndefined();
    // The genuine entry verifies; after the key became group-readable it is replaced and the entry is a miss.
    writeFileSync(file, JSON.stringify(stored));
    expect(await new DirectoryLayerCache(dir).get(key)).toEqual(entry);
    chmodSync(cache.keyFile, 0o640);
    expect(await new DirectoryLayerCache(dir).get(key)).toBeUndefined();
    expect(statSync(cache.keyFile).mode & 0o777).toBe(0o600);
  });
});
