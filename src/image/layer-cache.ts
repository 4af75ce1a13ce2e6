// Cache of `store-path set -> layer blob` so an unchanged layer is neither re-tarred nor re-sent.
// The key covers everything the layer bytes depend on: the sorted store paths with their NAR
// hashes, the tar format version, mtime, store dir and compression. Entries are small JSON files;
// a missing, unreadable or malformed entry is a miss (the layer is recomputed), and an entry that
// turns out wrong is overwritten by the pusher.
//
// A hit is trusted without reading the layer's bytes, so whoever can write an entry could make the
// pusher put another blob into a manifest (issue 12, item 3). Directory entries therefore carry an
// HMAC over the key and the whole entry, made with a key that only the pushing uid can read
// (`entry-key`, 0600, created on first use); an entry without a valid MAC is a miss. Code that runs
// as the pushing uid can read that key, so the push step never runs flake code (a
// streamLayeredImage script) where the key is readable (see push-step.ts, protectedFiles).
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { lstat, mkdir, open, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isDigest, type Digest } from "../oci/digest.ts";
import type { LayerCompression } from "../oci/image-manifest.ts";

/** Bump when the tar writer's output for the same input changes. */
const TAR_FORMAT_VERSION = 1;

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
const MAC_KEY_BYTES = 32;

/** PURE: the MAC of an entry stored under `key`. */
function layerCacheMac(secret: Buffer, key: string, entry: LayerCacheEntry): string {
  const doc = JSON.stringify([1, key, entry.digest, entry.size, entry.diffId, entry.mediaType, entry.seenIn ?? ""]);
  return createHmac("sha256", secret).update(doc).digest("hex");
}

/**
 * The MAC key in `file`, or a new one when it is missing or could be known to anyone but this uid
 * (not a regular file of ours, readable or writable by group/others, wrong size). A replaced key
 * turns every existing entry into a miss, which is safe.
 */
async function loadOrCreateMacKey(file: string): Promise<Buffer> {
  const uid = process.getuid?.();
  try {
    const st = await lstat(file);
    if (st.isFile() && (uid === undefined || st.uid === uid) && (st.mode & 0o077) === 0 && st.size === MAC_KEY_BYTES) {
      const key = await readFile(file);
      if (key.length === MAC_KEY_BYTES) return key;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const key = randomBytes(MAC_KEY_BYTES);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const handle = await open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(key);
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
  return key;
}

/** A directory of `<key>.json` files (e.g. on the store volume), written atomically, authenticated. */
export class DirectoryLayerCache implements LayerCache {
  readonly dir: string;
  /** The MAC key; only the pushing uid may be able to read it. */
  readonly keyFile: string;
  /** Entries refused because their MAC did not verify (forged, or from an older key). */
  rejected = 0;
  #secret: Promise<Buffer> | undefined;

  constructor(dir: string) {
    this.dir = dir;
    this.keyFile = join(dir, "entry-key");
  }

  /** Creates the directory and the MAC key when missing (call before running untrusted code). */
  ensureKey(): Promise<Buffer> {
    this.#secret ??= (async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      return loadOrCreateMacKey(this.keyFile);
    })();
    return this.#secret;
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
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return undefined;
    }
    const entry = parseLayerCacheEntry(json);
    if (!entry) return undefined;
    const mac = (json as { mac?: unknown }).mac;
    const expected = Buffer.from(layerCacheMac(await this.ensureKey(), key, entry), "hex");
    if (typeof mac !== "string" || !/^[0-9a-f]{64}$/.test(mac) || !timingSafeEqual(Buffer.from(mac, "hex"), expected)) {
      this.rejected++;
      return undefined;
    }
    return entry;
  }

  async put(key: string, entry: LayerCacheEntry): Promise<void> {
    const file = this.#file(key);
    const secret = await this.ensureKey();
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    const doc: LayerCacheEntry & { mac?: string } = { digest: entry.digest, size: entry.size, diffId: entry.diffId, mediaType: entry.mediaType };
    if (entry.seenIn) doc.seenIn = entry.seenIn;
    doc.mac = layerCacheMac(secret, key, doc);
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
