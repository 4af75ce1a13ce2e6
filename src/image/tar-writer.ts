// Streams a deterministic tar of a set of Nix store paths, read from the real filesystem.
// Order: the store directory's parents (`nix/`, `nix/store/`) once, then each store path in byte
// order of its name, each walked depth-first with a directory's children in byte order of their
// names (so every entry follows its parent). Nothing is buffered beyond one read chunk plus small
// header batches, and nothing is written to disk.
import { constants } from "node:fs";
import { lstat, open, readdir, readlink } from "node:fs/promises";
import { Readable } from "node:stream";
import { encodeEntryHeader, endOfArchive, paddingFor } from "./tar-header.ts";

export const DEFAULT_STORE_DIR = "/nix/store";

export interface TarStorePathsOptions {
  /** Modification time of every entry, in seconds since the epoch. Nix uses 1. */
  mtime?: number;
  /** The logical store directory the paths live in; its components become the parent entries. */
  storeDir?: string;
  /**
   * Where the store is on this machine's filesystem when it is not at `storeDir` (for example a
   * store volume mounted elsewhere): `<readRoot><storePath>` is read. Entry names never change.
   */
  readRoot?: string;
  /** Size of the chunks file contents are read in. */
  readChunkBytes?: number;
}

const SLASH = 0x2f;
const DIR_MODE = 0o755;
const SYMLINK_MODE = 0o777;
const BATCH_BYTES = 64 * 1024;

/** Validates `path` as `<storeDir>/<name>` and returns its base name. */
function storePathBaseName(path: string, storeDir = DEFAULT_STORE_DIR): string {
  const prefix = storeDir.endsWith("/") ? storeDir : `${storeDir}/`;
  const base = path.startsWith(prefix) ? path.slice(prefix.length) : "";
  if (base === "" || base.includes("/") || base === "." || base === ".." || base.includes("\0")) {
    throw new Error(`not a store path in ${storeDir}: ${JSON.stringify(path.slice(0, 300))}`);
  }
  return base;
}

function storeDirEntries(storeDir: string): Buffer[] {
  if (!storeDir.startsWith("/")) throw new Error(`store directory must be absolute: ${storeDir}`);
  const parts = storeDir.split("/").filter((p) => p !== "");
  if (parts.length === 0 || parts.some((p) => p === "." || p === "..")) {
    throw new Error(`bad store directory: ${storeDir}`);
  }
  return parts.map((_, i) => Buffer.from(parts.slice(0, i + 1).join("/"), "utf8"));
}

function join(dir: Buffer, name: Buffer): Buffer {
  return Buffer.concat([dir, Buffer.from([SLASH]), name]);
}

/** Collects small buffers into batches so the stream does not carry one chunk per 512-byte header. */
class Batcher {
  #parts: Buffer[] = [];
  #bytes = 0;

  add(buf: Buffer): void {
    this.#parts.push(buf);
    this.#bytes += buf.length;
  }

  get full(): boolean {
    return this.#bytes >= BATCH_BYTES;
  }

  take(): Buffer | undefined {
    if (this.#bytes === 0) return undefined;
    const out = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#bytes);
    this.#parts = [];
    this.#bytes = 0;
    return out;
  }
}

interface WalkContext {
  mtime: number;
  readRoot: Buffer;
  chunk: number;
  batch: Batcher;
}

async function* fileContent(ctx: WalkContext, fsPath: Buffer, size: number, shown: string): AsyncGenerator<Buffer> {
  const handle = await open(fsPath, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    let remaining = size;
    while (remaining > 0) {
      const want = Math.min(remaining, ctx.chunk);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await handle.read(buf, 0, want, null);
      if (bytesRead === 0) throw new Error(`${shown} shrank while being archived`);
      remaining -= bytesRead;
      const data = bytesRead === want ? buf : buf.subarray(0, bytesRead);
      if (data.length < BATCH_BYTES) {
        ctx.batch.add(data);
        if (ctx.batch.full) yield ctx.batch.take()!;
      } else {
        const pending = ctx.batch.take();
        if (pending) yield pending;
        yield data;
      }
    }
    const probe = await handle.read(Buffer.alloc(1), 0, 1, null);
    if (probe.bytesRead !== 0) throw new Error(`${shown} grew while being archived`);
  } finally {
    await handle.close();
  }
  const pad = paddingFor(size);
  if (pad > 0) ctx.batch.add(Buffer.alloc(pad, 0));
}

async function* walk(ctx: WalkContext, name: Buffer): AsyncGenerator<Buffer> {
  const fsPath = Buffer.concat([ctx.readRoot, Buffer.from([SLASH]), name]);
  const shown = `/${name.toString("utf8")}`;
  if (ctx.batch.full) yield ctx.batch.take()!;
  const st = await lstat(fsPath);
  if (st.isSymbolicLink()) {
    const target = await readlink(fsPath, { encoding: "buffer" });
    ctx.batch.add(encodeEntryHeader({ name, type: "symlink", mode: SYMLINK_MODE, size: 0, linkName: target, mtime: ctx.mtime }));
  } else if (st.isFile()) {
    // Hard links (Nix's store optimisation) are written as regular files with full content.
    ctx.batch.add(encodeEntryHeader({ name, type: "file", mode: st.mode, size: st.size, mtime: ctx.mtime }));
    yield* fileContent(ctx, fsPath, st.size, shown);
  } else if (st.isDirectory()) {
    ctx.batch.add(encodeEntryHeader({ name, type: "directory", mode: st.mode, size: 0, mtime: ctx.mtime }));
    const children = await readdir(fsPath, { encoding: "buffer" });
    children.sort(Buffer.compare);
    for (const child of children) yield* walk(ctx, join(name, child));
  } else {
    throw new Error(`${shown}: unsupported file type (only files, directories and symlinks are archived)`);
  }
}

/**
 * The tar bytes of `storePaths` (absolute, e.g. `/nix/store/<hash>-name`) as chunks. The same
 * store paths and options give the same bytes on every machine.
 */
export async function* tarStorePathChunks(storePaths: Iterable<string>, options: TarStorePathsOptions = {}): AsyncGenerator<Buffer> {
  const storeDir = (options.storeDir ?? DEFAULT_STORE_DIR).replace(/\/+$/, "");
  const mtime = options.mtime ?? 1;
  const readRoot = (options.readRoot ?? "").replace(/\/+$/, "");
  const storeDirName = Buffer.from(storeDir.slice(1), "utf8");
  const names = [...new Set([...storePaths].map((p) => storePathBaseName(p, storeDir)))].map((b) => Buffer.from(b, "utf8")).sort(Buffer.compare);
  const ctx: WalkContext = {
    mtime,
    readRoot: Buffer.from(readRoot, "utf8"),
    chunk: options.readChunkBytes ?? 1024 * 1024,
    batch: new Batcher(),
  };
  for (const dir of storeDirEntries(storeDir)) {
    ctx.batch.add(encodeEntryHeader({ name: dir, type: "directory", mode: DIR_MODE, size: 0, mtime }));
  }
  for (const name of names) yield* walk(ctx, join(storeDirName, name));
  ctx.batch.add(endOfArchive());
  const rest = ctx.batch.take();
  if (rest) yield rest;
}

/** `tarStorePathChunks` as a byte stream (pulls lazily: backpressure reaches the filesystem reads). */
export function tarStorePaths(storePaths: Iterable<string>, options: TarStorePathsOptions = {}): Readable {
  return Readable.from(tarStorePathChunks(storePaths, options), { objectMode: false, highWaterMark: BATCH_BYTES });
}
