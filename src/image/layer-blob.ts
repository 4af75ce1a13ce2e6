// One layer as a blob stream: tar of store paths -> sha256 (diff_id) -> [gzip -> sha256 (blob
// digest)], all in one pass with no temp file. The digests are known when the stream has ended.
import { createHash, type Hash } from "node:crypto";
import { PassThrough, pipeline, Transform, Writable, type Readable, type TransformCallback } from "node:stream";
import { createGzip } from "node:zlib";
import type { Digest } from "../oci/digest.ts";
import type { LayerCompression } from "../oci/image-manifest.ts";
import type { BlobStreamSource } from "../oci/registry-client.ts";
import { tarStorePaths, type TarStorePathsOptions } from "./tar-writer.ts";

export interface LayerBlobInfo {
  /** Digest of the blob as uploaded. */
  digest: Digest;
  /** Size of the blob as uploaded. */
  size: number;
  /** Digest of the uncompressed tar. */
  diffId: Digest;
  /** Size of the uncompressed tar. */
  tarSize: number;
}

export interface LayerBlobOptions extends TarStorePathsOptions {
  compression?: LayerCompression;
  /** zlib level for gzip (default 6). Part of what makes gzip bytes reproducible. */
  gzipLevel?: number;
  /** Called with the number of uncompressed tar bytes produced since the last call. */
  onTarBytes?: (bytes: number) => void;
}

/** A pass-through that hashes and counts what flows through it. */
class DigestingStream extends Transform {
  readonly #hash: Hash = createHash("sha256");
  readonly #onBytes: ((n: number) => void) | undefined;
  bytes = 0;

  constructor(onBytes?: (n: number) => void) {
    super();
    this.#onBytes = onBytes;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    this.#onBytes?.(chunk.length);
    cb(null, chunk);
  }

  /** Valid once the stream has ended. */
  digest(): Digest {
    return `sha256:${this.#hash.copy().digest("hex")}`;
  }
}

/** Opens the layer's byte stream and a promise of its digests (settles when the stream ends or fails). */
function openLayerBlob(paths: readonly string[], options: LayerBlobOptions = {}): { stream: Readable; result: Promise<LayerBlobInfo> } {
  const tar = tarStorePaths(paths, options);
  const tarHash = new DigestingStream(options.onTarBytes);
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  const gzip = options.compression === "gzip";
  const blobHash = gzip ? new DigestingStream() : undefined;
  const stages: (Readable | Transform | PassThrough)[] = gzip
    ? [tar, tarHash, createGzip({ level: options.gzipLevel ?? 6 }), blobHash!, out]
    : [tar, tarHash, out];
  const result = new Promise<LayerBlobInfo>((resolve, reject) => {
    // `out` is read by the consumer; the pipeline settles when it has been read to the end.
    pipeline(stages as [Readable, ...Transform[]], (err) => {
      if (err) return reject(err);
      const diffId = tarHash.digest();
      resolve({
        digest: blobHash ? blobHash.digest() : diffId,
        size: blobHash ? blobHash.bytes : tarHash.bytes,
        diffId,
        tarSize: tarHash.bytes,
      });
    });
  });
  // Whoever awaits `result` still sees the rejection; a consumer that only reads `stream` (and
  // gets the error there) must not leave an unhandled rejection behind.
  result.catch(() => undefined);
  return { stream: out, result };
}

/** The layer as a BlobStreamSource for RegistryClient.uploadBlobStream (a fresh tar per attempt). */
export function layerBlobSource(paths: readonly string[], options: LayerBlobOptions = {}): BlobStreamSource<LayerBlobInfo> {
  return { open: () => openLayerBlob(paths, options) };
}

/** Computes the layer's digests without sending it anywhere (reads the store paths once). */
export async function hashLayer(paths: readonly string[], options: LayerBlobOptions = {}): Promise<LayerBlobInfo> {
  const { stream, result } = openLayerBlob(paths, options);
  const sink = new Writable({ write: (_chunk, _enc, cb) => cb() });
  await new Promise<void>((resolve, reject) => pipeline(stream, sink, (err) => (err ? reject(err) : resolve())));
  return result;
}
