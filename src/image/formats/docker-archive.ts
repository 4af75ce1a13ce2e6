// Reads a docker-archive (`docker save` layout; what dockerTools.buildImage/buildLayeredImage
// write, and what a streamLayeredImage script prints) in ONE sequential pass, with layers handed
// out as streams so the pusher can hash and upload each while it is read: no temp tarball.
//
// Sources: a file (plain tar, gzip or zstd), a command whose stdout is the archive (the
// streamLayeredImage script, spawned with argv, its stdout consumed directly), or any Readable.
//
// Entry order is NOT fixed. streamLayeredImage writes `<sha256>/layer.tar` entries first, then the
// config `<sha256>.json`, and `manifest.json` LAST; buildImage's tar (sorted by name) has
// `<id>/layer.tar` before `manifest.json` too; other tools write the manifest first. So:
//   - while the manifest is unknown, every regular-file entry that does not look like JSON
//     metadata (small, starting with `{`/`[`, or named manifest.json/repositories/VERSION/json/
//     oci-layout/index.json) is yielded as a layer, and small JSON entries are buffered;
//   - when manifest.json came first, only the entries it lists are yielded;
//   - after the last entry, manifest.json picks the image's layers, in its order, by entry name
//     (through symlinks/hardlinks, which `docker save` uses for repeated layers). A listed layer
//     that was buffered as JSON-looking is yielded at the end from memory.
//
// Interface for the pusher:
//
//   const archive = openDockerArchive({ kind: "file", path: outPath });
//   for await (const layer of archive.layers()) {
//     // layer.stream: the entry's bytes, read once; layer.digest resolves when it has ended.
//     // Fully consume (or destroy) layer.stream before asking for the next layer; an
//     // unconsumed layer is drained and its stream destroyed when the loop continues.
//     await upload(layer.stream); seen.set(layer.path, await layer.digest);
//   }
//   const image = await archive.image(); // manifest order: image.layers[i].{path,digest,size,...}
//
// For an UNCOMPRESSED archive file there is a better way: indexDockerArchiveFile() walks the tar
// headers only (seeking over layer data), so manifest and config are known first; each layer's
// diff_id is then its digest, the pusher can HEAD it and stream only missing layers by offset.
//
// `reopen()` is set when the source can be read again at the entry's offset (an uncompressed
// archive file), so a failed upload can be retried; otherwise a retry means re-reading the whole
// archive. For uncompressed layers the digests are checked against the config's rootfs.diff_ids.
//
// SECURITY: a streamLayeredImage script is code from the flake. Run it with a clean environment
// (the default here: PATH only) and never where the push credentials can be read; `uid`/`gid`
// drop privileges when the caller runs as root.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { posix } from "node:path";
import { pipeline, Readable, Transform } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";
import { ImageFormatError } from "./format-error.ts";
import { FileByteSource, TarFormatError, TarReader, type TarEntryInfo } from "./tar-reader.ts";

export type Sha256Digest = `sha256:${string}`;
type ArchiveCompression = "none" | "gzip" | "zstd";
/** Compression of one layer entry, sniffed from its first bytes. */
export type LayerCompression = "none" | "gzip" | "zstd";

export type DockerArchiveSource =
  | { kind: "file"; path: string }
  | {
      kind: "command";
      /** argv[0] is run directly (no shell): e.g. [outPath] of a streamLayeredImage. */
      argv: readonly [string, ...string[]];
      /** The full environment; default { PATH: "/usr/bin:/bin" }. Never pass secrets. */
      env?: Record<string, string>;
      uid?: number;
      gid?: number;
      cwd?: string;
    }
  | { kind: "stream"; stream: Readable; description?: string };

export interface DockerArchiveOptions {
  /** Largest JSON metadata entry buffered (manifest, config). Default 16 MiB. */
  metadataLimit?: number;
  /** All metadata and JSON-looking entries buffered together. Default 64 MiB. */
  metadataTotalLimit?: number;
  /** Check uncompressed layer digests against rootfs.diff_ids. Default true. */
  verifyDiffIds?: boolean;
  /** Which image of a multi-image manifest.json. Default 0 (a single image is the norm). */
  imageIndex?: number;
  /** Kills a command source / closes the file. */
  signal?: AbortSignal;
  /** Chunk size of layer streams. Default 1 MiB. */
  chunkSize?: number;
}

export interface ArchiveLayer {
  /** Entry name in the archive (leading `./` removed), e.g. `<hex>/layer.tar`. */
  path: string;
  /** Bytes of the entry (the blob size). */
  size: number;
  compression: LayerCompression;
  /** The entry's bytes, once. */
  stream: Readable;
  /** sha256 of the bytes; resolves when `stream` has been read to its end, rejects if abandoned. */
  digest: Promise<Sha256Digest>;
  /** Opens the same bytes again (uncompressed archive files only). */
  reopen?: () => Readable;
}

interface ImageLayer {
  /** Entry name as manifest.json lists it. */
  path: string;
  /** The entry that was streamed for it (differs from `path` through links). */
  source: string;
  digest: Sha256Digest;
  size: number;
  compression: LayerCompression;
  /** rootfs.diff_ids[i] of the config, when present. */
  diffId?: string;
}

export interface DockerArchiveImage {
  repoTags: string[];
  configPath: string;
  /** The config exactly as archived: pushing these bytes keeps the image ID. */
  configBytes: Buffer;
  configDigest: Sha256Digest;
  config: Record<string, unknown>;
  /** In manifest order (bottom layer first). */
  layers: ImageLayer[];
  /** Entries yielded by layers() that the image does not use (other images, stray files). */
  unusedEntries: string[];
  /** Compression of the archive itself. */
  archiveCompression: ArchiveCompression;
}

interface ManifestItem {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

const metadataNames = /^(manifest\.json|repositories|index\.json|oci-layout|.*\/VERSION|.*\/json)$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function sniffCompression(head: Buffer): ArchiveCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
  return "none";
}

function looksLikeJson(head: Buffer | undefined): boolean {
  if (!head) return true; // empty file: metadata, never a layer
  for (const b of head) {
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d) continue;
    return b === 0x7b || b === 0x5b;
  }
  return true;
}

/** PURE: parses manifest.json bytes. */
export function parseArchiveManifest(bytes: Buffer, source = "archive"): ManifestItem[] {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw formatError(source, `manifest.json is not valid JSON (${bytes.length} bytes)`);
  }
  if (!Array.isArray(json) || json.length === 0) throw formatError(source, "manifest.json is not a non-empty array");
  return json.map((item, i) => {
    if (!isRecord(item) || typeof item.Config !== "string" || !Array.isArray(item.Layers) || !item.Layers.every((l) => typeof l === "string")) {
      throw formatError(source, `manifest.json entry ${i} has no Config string and Layers list`);
    }
    const tags = Array.isArray(item.RepoTags) ? item.RepoTags.filter((t): t is string => typeof t === "string") : [];
    return { Config: posix.normalize(stripDot(item.Config)), RepoTags: tags, Layers: (item.Layers as string[]).map((l) => posix.normalize(stripDot(l))) };
  });
}

function stripDot(p: string): string {
  let n = p;
  while (n.startsWith("./")) n = n.slice(2);
  while (n.startsWith("/")) n = n.slice(1);
  return n;
}

function formatError(source: string, reason: string, cause?: unknown): ImageFormatError {
  const init: ConstructorParameters<typeof ImageFormatError>[0] = {
    format: "docker-archive",
    source,
    reason,
    hint: "Check that the attribute builds a docker-archive (dockerTools.buildImage/buildLayeredImage/streamLayeredImage), or set the format explicitly.",
  };
  if (cause !== undefined) init.cause = cause;
  return new ImageFormatError(init);
}

/** Resolves `name` through symlink/hardlink entries (relative symlinks are relative to their dir). */
function resolveLinks(name: string, links: ReadonlyMap<string, { kind: "symlink" | "hardlink"; target: string }>): string {
  let current = name;
  for (let depth = 0; depth < 16; depth++) {
    const link = links.get(current);
    if (!link) return current;
    current = link.kind === "hardlink" ? posix.normalize(stripDot(link.target)) : posix.normalize(posix.join(posix.dirname(current), link.target));
    current = stripDot(current);
  }
  return current;
}

interface OpenedSource {
  stream: Readable;
  compression: ArchiveCompression;
  /** Waits for the producer (a command) and throws when it failed. */
  finish(): Promise<void>;
  /** The producer's own failure, if it exits with one within waitMs (undefined otherwise). */
  failure(waitMs: number): Promise<ImageFormatError | undefined>;
  close(): void;
  describe: string;
  file?: string;
}

/** Reads the first chunk without consuming it. */
function peekChunk(stream: Readable): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.off("readable", onReadable);
      stream.off("end", onEnd);
      stream.off("error", onError);
    };
    const onReadable = () => {
      const chunk = stream.read() as Buffer | null;
      if (chunk !== null) {
        cleanup();
        stream.unshift(chunk);
        resolve(chunk);
      }
    };
    const onEnd = () => {
      cleanup();
      resolve(undefined);
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    stream.on("readable", onReadable);
    stream.on("end", onEnd);
    stream.on("error", onError);
  });
}

/**
 * Decompressed bytes allowed per compressed byte, beyond DECOMPRESSION_FLOOR. Layers of real images
 * compress 2-10x; a gzip bomb (zeros) 1000x. Past the bound the read fails with a clear error instead
 * of streaming gigabytes into the registry.
 */
const MAX_DECOMPRESSION_RATIO = 100;
const DECOMPRESSION_FLOOR = 256 * 1024 * 1024;

function decompress(stream: Readable, compression: ArchiveCompression, describe: string): Readable {
  if (compression === "none") return stream;
  const d = compression === "gzip" ? createGunzip() : createZstdDecompress();
  let input = 0;
  let output = 0;
  const countIn = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      input += chunk.length;
      cb(null, chunk);
    },
  });
  const bound = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      output += chunk.length;
      if (output > DECOMPRESSION_FLOOR + MAX_DECOMPRESSION_RATIO * input) {
        cb(
          formatError(
            describe,
            `the ${compression} archive expands to more than ${MAX_DECOMPRESSION_RATIO} times its compressed size (${output} bytes from ${input}): a decompression bomb, or data that does not belong in an image`,
          ),
        );
        return;
      }
      cb(null, chunk);
    },
  });
  return pipeline(stream, countIn, d, bound, () => undefined);
}

/** Counts buffered metadata against one total, so many JSON-looking entries cannot fill memory. */
class MetadataBudget {
  #used = 0;
  readonly limit: number;
  readonly describe: string;
  constructor(limit: number, describe: string) {
    this.limit = limit;
    this.describe = describe;
  }

  take(bytes: number, name: string): void {
    this.#used += bytes;
    if (this.#used > this.limit) {
      throw formatError(
        this.describe,
        `the archive holds more than ${this.limit} bytes of metadata and JSON-looking entries (at ${name}); a docker-archive has one manifest.json and one config per image`,
      );
    }
  }
}

async function openSource(source: DockerArchiveSource, signal: AbortSignal | undefined): Promise<OpenedSource> {
  if (source.kind === "file") {
    const fh = await open(source.path, "r").catch((e: unknown) => {
      throw formatError(source.path, `cannot open: ${(e as Error).message}`, e);
    });
    const head = Buffer.alloc(4);
    try {
      await fh.read(head, 0, 4, 0);
    } finally {
      await fh.close();
    }
    const compression = sniffCompression(head);
    const raw = createReadStream(source.path, { highWaterMark: 1024 * 1024 });
    const stream = decompress(raw, compression, source.path);
    return {
      stream,
      compression,
      finish: async () => undefined,
      failure: async () => undefined,
      close: () => raw.destroy(),
      describe: source.path,
      file: source.path,
    };
  }
  if (source.kind === "stream") {
    const head = await peekChunk(source.stream);
    const compression = head ? sniffCompression(head) : "none";
    return {
      stream: decompress(source.stream, compression, source.description ?? "stream"),
      compression,
      finish: async () => undefined,
      failure: async () => undefined,
      close: () => source.stream.destroy(),
      describe: source.description ?? "stream",
    };
  }
  const [cmd, ...args] = source.argv;
  const describe = source.argv.join(" ");
  const child: ChildProcess = spawn(cmd, args, {
    env: source.env ?? { PATH: "/usr/bin:/bin" },
    stdio: ["ignore", "pipe", "pipe"],
    cwd: source.cwd ?? "/",
    ...(source.uid !== undefined ? { uid: source.uid } : {}),
    ...(source.gid !== undefined ? { gid: source.gid } : {}),
  });
  const stderrTail: string[] = [];
  let stderrRest = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (s: string) => {
    stderrRest += s;
    const lines = stderrRest.split("\n");
    stderrRest = lines.pop() ?? "";
    for (const l of lines) {
      stderrTail.push(l.slice(0, 500));
      if (stderrTail.length > 20) stderrTail.shift();
    }
    if (stderrRest.length > 4096) stderrRest = stderrRest.slice(-4096);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once("error", (error) => resolve({ code: null, signal: null, error }));
    child.once("close", (code, sig) => resolve({ code, signal: sig }));
  });
  const onAbort = () => child.kill("SIGKILL");
  signal?.addEventListener("abort", onAbort, { once: true });
  const scriptError = (r: { code: number | null; signal: NodeJS.Signals | null; error?: Error }): ImageFormatError =>
    formatError(
      describe,
      `the image script failed (${r.error ? r.error.message : r.signal ? `signal ${r.signal}` : `exit code ${r.code}`})${stderrTail.length ? `; its last output:\n${stderrTail.join("\n")}` : ""}`,
    );
  const fail = async (): Promise<never> => {
    throw scriptError(await exited);
  };
  const head = await Promise.race([peekChunk(child.stdout!), exited.then(() => undefined)]);
  if (head === undefined) {
    const r = await exited;
    if (r.error || r.code !== 0) await fail();
    throw formatError(describe, "the image script printed nothing on stdout");
  }
  const compression = sniffCompression(head);
  return {
    stream: decompress(child.stdout!, compression, describe),
    compression,
    describe,
    close: () => {
      signal?.removeEventListener("abort", onAbort);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
    failure: async (waitMs) => {
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([exited, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs)))]);
      clearTimeout(timer);
      return r !== undefined && (r.error !== undefined || r.code !== 0) ? scriptError(r) : undefined;
    },
    finish: async () => {
      const r = await exited;
      signal?.removeEventListener("abort", onAbort);
      if (r.error || r.code !== 0) await fail();
    },
  };
}

interface Buffered {
  bytes: Buffer;
  entry: TarEntryInfo;
}

interface Streamed {
  digest: Promise<Sha256Digest>;
  size: number;
  compression: LayerCompression;
}

export class DockerArchive {
  private readonly source: DockerArchiveSource;
  private readonly options: Required<Omit<DockerArchiveOptions, "signal">> & { signal?: AbortSignal };
  private started = false;
  private opened: OpenedSource | undefined;
  private resolveImage!: (image: DockerArchiveImage) => void;
  private rejectImage!: (e: unknown) => void;
  private readonly imagePromise: Promise<DockerArchiveImage>;

  constructor(source: DockerArchiveSource, options: DockerArchiveOptions = {}) {
    this.source = source;
    this.options = {
      metadataLimit: options.metadataLimit ?? 16 * 1024 * 1024,
      metadataTotalLimit: options.metadataTotalLimit ?? 64 * 1024 * 1024,
      verifyDiffIds: options.verifyDiffIds ?? true,
      imageIndex: options.imageIndex ?? 0,
      chunkSize: options.chunkSize ?? 1024 * 1024,
      ...(options.signal ? { signal: options.signal } : {}),
    };
    this.imagePromise = new Promise((resolve, reject) => {
      this.resolveImage = resolve;
      this.rejectImage = reject;
    });
    this.imagePromise.catch(() => undefined); // observed by image(); no unhandled rejection
  }

  /** Manifest, config and the layer order; resolves once layers() has run to its end. */
  image(): Promise<DockerArchiveImage> {
    return this.imagePromise;
  }

  /** Stops reading: kills a command source, closes a file. */
  async close(): Promise<void> {
    this.opened?.close();
  }

  /** The layer entries in archive order (see the file header). Can be iterated once. */
  async *layers(): AsyncGenerator<ArchiveLayer, void, undefined> {
    if (this.started) throw new Error("DockerArchive.layers() can be iterated only once");
    this.started = true;
    let describe =
      this.source.kind === "file" ? this.source.path : this.source.kind === "command" ? this.source.argv.join(" ") : (this.source.description ?? "stream");
    let reader: TarReader | undefined;
    let settled = false;
    try {
      this.opened = await openSource(this.source, this.options.signal);
      describe = this.opened.describe;
      reader = new TarReader(this.opened.stream);
      const budget = new MetadataBudget(this.options.metadataTotalLimit, describe);
      const buffered = new Map<string, Buffered>();
      const streamed = new Map<string, Streamed>();
      const links = new Map<string, { kind: "symlink" | "hardlink"; target: string }>();
      let manifest: ManifestItem[] | undefined;
      let wanted: Set<string> | undefined;

      for (;;) {
        const entry = await reader.next();
        if (!entry) break;
        if (entry.kind === "symlink" || entry.kind === "hardlink") {
          links.set(entry.name, { kind: entry.kind, target: entry.linkName });
          if (wanted?.has(entry.name)) wanted.add(resolveLinks(entry.name, links));
          continue;
        }
        if (entry.kind !== "file") continue;
        if (metadataNames.test(entry.name)) {
          const bytes = await this.readMetadata(reader, entry, describe);
          budget.take(bytes.length, entry.name);
          buffered.set(entry.name, { bytes, entry });
          if (entry.name === "manifest.json") {
            manifest = parseArchiveManifest(bytes, describe);
            wanted = new Set(manifest.flatMap((m) => m.Layers.map((l) => resolveLinks(l, links))));
          }
          continue;
        }
        if (wanted !== undefined && !wanted.has(entry.name)) {
          // Manifest known: a small entry may still be the config; anything else is not needed.
          if (entry.size <= this.options.metadataLimit && manifest!.some((m) => m.Config === entry.name)) {
            budget.take(entry.size, entry.name);
            buffered.set(entry.name, { bytes: await this.readMetadata(reader, entry, describe), entry });
          }
          continue;
        }
        const first = entry.size > 0 ? await reader.readData(Math.min(this.options.chunkSize, 64 * 1024)) : undefined;
        if (wanted === undefined && entry.size <= this.options.metadataLimit && looksLikeJson(first)) {
          budget.take(entry.size, entry.name);
          const rest = await reader.readAll(this.options.metadataLimit);
          buffered.set(entry.name, { bytes: first ? Buffer.concat([first, rest]) : rest, entry });
          continue;
        }
        const { layer, settle } = this.makeLayer(reader, entry, first, describe);
        streamed.set(entry.name, { digest: layer.digest, size: entry.size, compression: layer.compression });
        yield layer;
        await settle();
      }
      // Trailing padding (tar writers round up to a record; a script must not die of EPIPE).
      let trailing = 0;
      for (let chunk = await reader.bytes.readSome(1024 * 1024); chunk; chunk = await reader.bytes.readSome(1024 * 1024)) {
        trailing += chunk.length;
        if (trailing > 64 * 1024 * 1024) throw formatError(describe, "more than 64 MiB of data after the end of the archive");
      }
      await this.opened.finish();

      if (!manifest) throw formatError(describe, "no manifest.json in the archive");
      const item = manifest[this.options.imageIndex];
      if (!item) throw formatError(describe, `manifest.json has ${manifest.length} images; image ${this.options.imageIndex} does not exist`);

      // Listed layers that were buffered because they looked like JSON: hand them out now.
      for (const l of item.Layers) {
        const src = resolveLinks(l, links);
        if (streamed.has(src)) continue;
        const b = buffered.get(src);
        if (!b) continue;
        const digest = `sha256:${createHash("sha256").update(b.bytes).digest("hex")}` as Sha256Digest;
        const compression = sniffCompression(b.bytes);
        streamed.set(src, { digest: Promise.resolve(digest), size: b.bytes.length, compression });
        yield {
          path: src,
          size: b.bytes.length,
          compression,
          stream: Readable.from([b.bytes]),
          digest: Promise.resolve(digest),
          reopen: () => Readable.from([b.bytes]),
        };
      }

      const configEntry = buffered.get(resolveLinks(item.Config, links));
      if (!configEntry) throw formatError(describe, `config ${item.Config} named by manifest.json is not in the archive`);
      let config: unknown;
      try {
        config = JSON.parse(configEntry.bytes.toString("utf8"));
      } catch {
        throw formatError(describe, `config ${item.Config} is not valid JSON`);
      }
      if (!isRecord(config)) throw formatError(describe, `config ${item.Config} is not a JSON object`);
      const rootfs = isRecord(config.rootfs) ? config.rootfs : undefined;
      const diffIds = Array.isArray(rootfs?.diff_ids) ? (rootfs.diff_ids as unknown[]) : undefined;
      if (diffIds !== undefined && diffIds.length !== item.Layers.length) {
        throw formatError(describe, `config lists ${diffIds.length} diff_ids but manifest.json ${item.Layers.length} layers`);
      }

      const layers: ImageLayer[] = [];
      for (const [i, l] of item.Layers.entries()) {
        const src = resolveLinks(l, links);
        const s = streamed.get(src);
        if (!s) throw formatError(describe, `layer ${l} named by manifest.json is not in the archive (or came before manifest.json under another name)`);
        const digest = await s.digest;
        const layer: ImageLayer = { path: l, source: src, digest, size: s.size, compression: s.compression };
        const diffId = diffIds?.[i];
        if (typeof diffId === "string") layer.diffId = diffId;
        if (this.options.verifyDiffIds && s.compression === "none" && typeof diffId === "string" && diffId !== digest) {
          throw formatError(describe, `layer ${i + 1} (${l}) has digest ${digest} but the config says ${diffId}: the archive is corrupt`);
        }
        layers.push(layer);
      }
      const used = new Set(layers.map((l) => l.source));
      settled = true;
      this.resolveImage({
        repoTags: item.RepoTags,
        configPath: item.Config,
        configBytes: configEntry.bytes,
        configDigest: `sha256:${createHash("sha256").update(configEntry.bytes).digest("hex")}`,
        config,
        layers,
        unusedEntries: [...streamed.keys()].filter((k) => !used.has(k)),
        archiveCompression: this.opened.compression,
      });
    } catch (e) {
      const final = await this.explain(e, describe);
      settled = true;
      this.rejectImage(final);
      throw final;
    } finally {
      if (!settled) this.rejectImage(formatError(describe, "reading stopped before the end of the archive (layers() not iterated to its end)"));
      this.opened?.close();
      await reader?.close().catch(() => undefined);
    }
  }

  /**
   * The error to report: tar errors become ImageFormatErrors, and a command that died explains
   * a truncated archive better than the tar error does.
   */
  private async explain(e: unknown, describe: string): Promise<ImageFormatError> {
    const err =
      e instanceof ImageFormatError
        ? e
        : e instanceof TarFormatError
          ? formatError(describe, e.message, e)
          : formatError(describe, `reading the archive failed: ${(e as Error).message}`, e);
    if (this.opened && this.source.kind === "command" && !/image script/.test(err.message)) {
      return (await this.opened.failure(2000)) ?? err;
    }
    return err;
  }

  private async readMetadata(reader: TarReader, entry: TarEntryInfo, describe: string): Promise<Buffer> {
    if (entry.size > this.options.metadataLimit) {
      throw formatError(describe, `metadata entry ${entry.name} is ${entry.size} bytes, more than ${this.options.metadataLimit}`);
    }
    return reader.readAll(this.options.metadataLimit);
  }

  /** A layer stream that pulls from the tar reader on demand and hashes what passes through. */
  private makeLayer(reader: TarReader, entry: TarEntryInfo, first: Buffer | undefined, describe: string): { layer: ArchiveLayer; settle: () => Promise<void> } {
    const hash = createHash("sha256");
    let resolveDigest!: (d: Sha256Digest) => void;
    let rejectDigest!: (e: unknown) => void;
    const digest = new Promise<Sha256Digest>((resolve, reject) => {
      resolveDigest = resolve;
      rejectDigest = reject;
    });
    digest.catch(() => undefined);
    let queued = first;
    let finished = entry.size === 0;
    let failed: Error | undefined;
    let current: Promise<void> = Promise.resolve();
    let pumping = false;
    const chunkSize = this.options.chunkSize;

    const stream = new Readable({
      highWaterMark: chunkSize,
      read: () => {
        if (pumping || finished) return;
        pumping = true;
        current = (async () => {
          try {
            for (;;) {
              let chunk: Buffer | undefined;
              if (queued) {
                chunk = queued;
                queued = undefined;
              } else {
                chunk = await reader.readData(chunkSize);
              }
              if (stream.destroyed) return;
              if (!chunk) {
                finished = true;
                resolveDigest(`sha256:${hash.digest("hex")}`);
                stream.push(null);
                return;
              }
              hash.update(chunk);
              if (!stream.push(chunk)) return;
            }
          } catch (e) {
            const err = await this.explain(e, describe);
            failed = err;
            finished = true;
            rejectDigest(err);
            stream.destroy(err);
          } finally {
            pumping = false;
          }
        })();
      },
    });
    if (entry.size === 0) {
      resolveDigest(`sha256:${hash.digest("hex")}`);
      stream.push(null);
    }
    stream.on("close", () => {
      if (!finished) rejectDigest(new Error(`layer ${entry.name} was not read to its end`));
    });

    const layer: ArchiveLayer = { path: entry.name, size: entry.size, compression: first ? sniffCompression(first) : "none", stream, digest };
    const file = this.opened?.file;
    if (file !== undefined && this.opened?.compression === "none") {
      const start = entry.dataOffset;
      const size = entry.size;
      layer.reopen = () => (size === 0 ? Readable.from([]) : createReadStream(file, { start, end: start + size - 1, highWaterMark: chunkSize }));
    }

    const settle = async () => {
      // Called when the consumer asks for the next layer.
      if (!finished) {
        // Destroyed without an error event (nobody may listen); the digest says what happened.
        finished = true;
        rejectDigest(new Error(`layer ${entry.name} abandoned before its end: consume each layer stream before the next`));
        stream.destroy();
      }
      await current;
      if (failed !== undefined) throw failed;
      await reader.skipData();
    };
    return { layer, settle };
  }
}

export function openDockerArchive(source: DockerArchiveSource, options: DockerArchiveOptions = {}): DockerArchive {
  return new DockerArchive(source, options);
}

/** Adapts a layer to the registry client's re-openable blob source (retry needs `reopen`). */
export function layerBlobStreamSource(layer: ArchiveLayer): { open(): { stream: Readable; result: Promise<{ digest: Sha256Digest; size: number }> } } {
  let used = false;
  return {
    open() {
      if (!used) {
        used = true;
        return { stream: layer.stream, result: layer.digest.then((digest) => ({ digest, size: layer.size })) };
      }
      if (!layer.reopen) throw new Error(`layer ${layer.path} cannot be read again (streamed archive); re-read the archive to retry`);
      const hash = createHash("sha256");
      let size = 0;
      let resolveResult!: (r: { digest: Sha256Digest; size: number }) => void;
      let rejectResult!: (e: unknown) => void;
      const result = new Promise<{ digest: Sha256Digest; size: number }>((resolve, reject) => {
        resolveResult = resolve;
        rejectResult = reject;
      });
      const hashing = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          size += chunk.length;
          cb(null, chunk);
        },
        flush(cb) {
          resolveResult({ digest: `sha256:${hash.digest("hex")}`, size });
          cb();
        },
      });
      const stream = pipeline(layer.reopen(), hashing, (err) => {
        if (err) rejectResult(err);
      });
      return { stream, result };
    },
  };
}

interface IndexedLayer {
  /** Entry name as manifest.json lists it. */
  path: string;
  /** The entry holding the bytes (differs from `path` through links). */
  source: string;
  size: number;
  /** Byte offset of the layer's bytes in the archive file. */
  offset: number;
  compression: LayerCompression;
  /**
   * rootfs.diff_ids[i]. For an uncompressed layer this is the digest the blob must have, so the
   * pusher can ask the registry for it before reading anything, and pass it as the upload digest.
   */
  diffId?: string;
  /** Streams the layer's bytes from the file. */
  open(): Readable;
}

export interface IndexedDockerArchive {
  repoTags: string[];
  configPath: string;
  configBytes: Buffer;
  configDigest: Sha256Digest;
  config: Record<string, unknown>;
  /** In manifest order (bottom layer first). */
  layers: IndexedLayer[];
}

/**
 * Indexes an UNCOMPRESSED docker-archive file by walking its tar headers only (seeking over layer
 * data), so manifest.json and the config are known before any layer is read, wherever they are
 * in the archive. Returns undefined for a gzip/zstd file (no seeking there: use openDockerArchive).
 * Layer digests are not verified here (nothing is read); the registry checks the digest given at
 * upload, and the pusher should compare what it hashed with `diffId`.
 */
export async function indexDockerArchiveFile(
  path: string,
  options: Pick<DockerArchiveOptions, "metadataLimit" | "metadataTotalLimit" | "imageIndex"> = {},
): Promise<IndexedDockerArchive | undefined> {
  const metadataLimit = options.metadataLimit ?? 16 * 1024 * 1024;
  const budget = new MetadataBudget(options.metadataTotalLimit ?? 64 * 1024 * 1024, path);
  let source: FileByteSource;
  try {
    source = await FileByteSource.open(path);
  } catch (e) {
    throw formatError(path, `cannot open: ${(e as Error).message}`, e);
  }
  try {
    const head = await source.readExact(4);
    if (head && sniffCompression(head) !== "none") return undefined;
    source.rewind();
    const reader = new TarReader(source);
    const buffered = new Map<string, Buffer>();
    const entries = new Map<string, { offset: number; size: number; compression: LayerCompression }>();
    const links = new Map<string, { kind: "symlink" | "hardlink"; target: string }>();
    for (let entry = await reader.next(); entry; entry = await reader.next()) {
      if (entry.kind === "symlink" || entry.kind === "hardlink") {
        links.set(entry.name, { kind: entry.kind, target: entry.linkName });
        continue;
      }
      if (entry.kind !== "file") continue;
      if (metadataNames.test(entry.name)) {
        if (entry.size > metadataLimit) throw formatError(path, `metadata entry ${entry.name} is ${entry.size} bytes, more than ${metadataLimit}`);
        budget.take(entry.size, entry.name);
        buffered.set(entry.name, await reader.readAll(metadataLimit));
        continue;
      }
      const first = entry.size > 0 ? await reader.readData(4) : undefined;
      const compression = first ? sniffCompression(first) : "none";
      entries.set(entry.name, { offset: entry.dataOffset, size: entry.size, compression });
      if (entry.size <= metadataLimit && looksLikeJson(first)) {
        budget.take(entry.size, entry.name);
        const rest = await reader.readAll(metadataLimit);
        buffered.set(entry.name, first ? Buffer.concat([first, rest]) : rest);
      }
    }
    const manifestBytes = buffered.get("manifest.json");
    if (!manifestBytes) throw formatError(path, "no manifest.json in the archive");
    const manifest = parseArchiveManifest(manifestBytes, path);
    const imageIndex = options.imageIndex ?? 0;
    const item = manifest[imageIndex];
    if (!item) throw formatError(path, `manifest.json has ${manifest.length} images; image ${imageIndex} does not exist`);
    const configBytes = buffered.get(resolveLinks(item.Config, links));
    if (!configBytes) throw formatError(path, `config ${item.Config} named by manifest.json is not in the archive`);
    let config: unknown;
    try {
      config = JSON.parse(configBytes.toString("utf8"));
    } catch {
      throw formatError(path, `config ${item.Config} is not valid JSON`);
    }
    if (!isRecord(config)) throw formatError(path, `config ${item.Config} is not a JSON object`);
    const rootfs = isRecord(config.rootfs) ? config.rootfs : undefined;
    const diffIds = Array.isArray(rootfs?.diff_ids) ? (rootfs.diff_ids as unknown[]) : undefined;
    if (diffIds !== undefined && diffIds.length !== item.Layers.length) {
      throw formatError(path, `config lists ${diffIds.length} diff_ids but manifest.json ${item.Layers.length} layers`);
    }
    const layers = item.Layers.map((l, i): IndexedLayer => {
      const src = resolveLinks(l, links);
      const e = entries.get(src);
      if (!e) throw formatError(path, `layer ${l} named by manifest.json is not in the archive`);
      const layer: IndexedLayer = {
        path: l,
        source: src,
        size: e.size,
        offset: e.offset,
        compression: e.compression,
        open: () => (e.size === 0 ? Readable.from([]) : createReadStream(path, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: 1024 * 1024 })),
      };
      const diffId = diffIds?.[i];
      if (typeof diffId === "string") layer.diffId = diffId;
      return layer;
    });
    return {
      repoTags: item.RepoTags,
      configPath: item.Config,
      configBytes,
      configDigest: `sha256:${createHash("sha256").update(configBytes).digest("hex")}`,
      config,
      layers,
    };
  } catch (e) {
    if (e instanceof ImageFormatError) throw e;
    throw formatError(path, e instanceof TarFormatError ? e.message : `reading the archive failed: ${(e as Error).message}`, e);
  } finally {
    await source.close();
  }
}
