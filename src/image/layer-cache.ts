// Cache of `store-path set -> layer blob` so an unchanged layer is neither re-tarred nor re-sent.
// The key covers everything the layer bytes depend on: the sorted store paths with their NAR
// hashes, the tar format version, mtime, store dir and compression. Entries are small JSON files;
// a missing, unreadable or malformed entry is a miss (the layer is recomputed), and an entry that
// turns out wrong is overwritten by the pusher.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isDigest, type Digest } from "../oci/digest.ts";
import type { LayerCompression } from "../oci/image-manifest.ts";

/** Bump when the tar writer's output for the same input changes. */
export const TAR_FORMAT_VERSION = 1;

export interface LayerCacheEntry {
  /** Blob digest (of the compressed bytes when compressed). */
  digest: Digest;
  /** Blob size in bytes. */
  size: number;
  /** Digest of the uncompressed tar (== digest when uncompressed). */
  diffId: Digest;
  mediaType: string;
  /** `host/repository` where the blob was last pushed or seen (a mount source). */
  seenIn?: string;
}

export interface LayerCache {
  get(key: string): Promise<LayerCacheEntry | undefined>;
  put(key: string, entry: LayerCacheEntry): Promise<void>;
}

export interface LayerKeyInput {
  paths: readonly string[];
  /** NAR hash per store path, when known. */
  narHashes?: ReadonlyMap<string, string>;
  compression: LayerCompression;
  gzipLevel?: number;
  mtime: number;
  storeDir: string;
}

/** PURE: the cache key (64 hex) of a layer. */
export function layerCacheKey(input: LayerKeyInput): string {
  const paths = [...new Set(input.paths)].sort().map((p) => [p, input.narHashes?.get(p) ?? null]);
  const doc = {
    v: TAR_FORMAT_VERSION,
    compression: input.compression,
    gzipLevel: input.compression === "gzip" ? (input.gzipLevel ?? null) : null,
    mtime: input.mtime,
    storeDir: input.storeDir,
    paths,
  };
  return createHash("sha256").update(JSON.stringify(doc)).digest("hex");
}

/** PURE: validates a decoded entry; undefined when it is not a usable entry. */
export function parseLayerCacheEntry(json: unknown): LayerCacheEntry | undefined {
  if (typeof json !== "object" || json === null) return undefined;
  const o = json as Record<string, unknown>;
  if (!isDigest(o.digest) || !isDigest(o.diffId)) return undefined;
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) return undefined;
  if (typeof o.mediaType !== "string" || o.mediaType === "") return undefined;
  const entry: LayerCacheEntry = { digest: o.digest, size: o.size, diffId: o.diffId, mediaType: o.mediaType };
  if (typeof o.seenIn === "string" && o.seenIn !== "") entry.seenIn = o.seenIn;
  return entry;
}

const keyPattern = /^[0-9a-f]{64}$/;

/** A directory of `<key>.json` files (e.g. on the store volume), written atomically. */
export class DirectoryLayerCache implements LayerCache {
  readonly dir: string;
  #created = false;

  constructor(dir: string) {
    this.dir = dir;
  }

  #file(key: string): string {
    if (!keyPattern.test(key)) throw new Error("bad layer cache key");
    return join(this.dir, `${key}.json`);
  }

  async get(key: string): Promise<LayerCacheEntry | undefined> {
    let text: string;
    try {
      text = await readFile(this.#file(key), "utf8");
    } catch {
      return undefined;
    }
    try {
      return parseLayerCacheEntry(JSON.parse(text));
    } catch {
      return undefined;
    }
  }

  async put(key: string, entry: LayerCacheEntry): Promise<void> {
    const file = this.#file(key);
    if (!this.#created) {
      await mkdir(this.dir, { recursive: true });
      this.#created = true;
    }
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    const doc: LayerCacheEntry = { digest: entry.digest, size: entry.size, diffId: entry.diffId, mediaType: entry.mediaType };
    if (entry.seenIn) doc.seenIn = entry.seenIn;
    try {
      await writeFile(tmp, `${JSON.stringify(doc)}\n`, { mode: 0o644 });
      await rename(tmp, file);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  }
}

/** A cache that remembers nothing. */
export const noLayerCache: LayerCache = {
  get: () => Promise.resolve(undefined),
  put: () => Promise.resolve(),
};

/** An in-memory cache (tests, one-off runs). */
export class MemoryLayerCache implements LayerCache {
  readonly entries = new Map<string, LayerCacheEntry>();
  get(key: string): Promise<LayerCacheEntry | undefined> {
    return Promise.resolve(this.entries.get(key));
  }
  put(key: string, entry: LayerCacheEntry): Promise<void> {
    this.entries.set(key, { ...entry });
    return Promise.resolve();
  }
}
