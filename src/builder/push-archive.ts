// Pushes an image some tool already assembled as a docker-archive: a dockerTools.buildImage /
// buildLayeredImage tarball (a file in the store) or what a streamLayeredImage script prints
// (read from its stdout while it runs, no temp tarball). ONE sequential pass over the archive:
// each layer entry is hashed and uploaded while it is read; the config and manifest.json (often
// last in the archive) then give the layer order.
//
// Layers are pushed as stored (uncompressed, gzip or zstd entries keep their bytes and digests),
// the config bytes are kept as archived (so the image ID stays the same) unless labels are added.
//
// The layer cache remembers `(archive store path, entry name) -> blob`. A store path never
// changes, so on a cache hit whose blob the registry has, the entry is only read (and its digest
// checked) instead of being uploaded again. Should a stream script print different bytes than last
// time (it is not reproducible), the whole archive is read again without trusting the cache.
import { createHash } from "node:crypto";
import { Transform, Writable, pipeline as pipelineCb, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "../log/logger.ts";
import type { Digest } from "../oci/digest.ts";
import { sha256Digest } from "../oci/digest.ts";
import { MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP } from "../oci/image-manifest.ts";
import type { BlobInfo, BlobStreamSource } from "../oci/registry-client.ts";
import {
  layerBlobStreamSource,
  openDockerArchive,
  type ArchiveLayer,
  type DockerArchiveSource,
  type LayerCompression,
} from "../image/formats/docker-archive.ts";
import { noLayerCache, type LayerCache, type LayerCacheEntry } from "../image/layer-cache.ts";
import type { PushClosureResult, PushProgress, PushedLayer, RegistryPusher } from "../image/push-closure.ts";
import { publishImage, type LayerOutcome } from "../image/publish-image.ts";

const MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";

function archiveLayerMediaType(compression: LayerCompression): string {
  return compression === "gzip" ? MEDIA_TYPE_OCI_LAYER_GZIP : compression === "zstd" ? MEDIA_TYPE_OCI_LAYER_ZSTD : MEDIA_TYPE_OCI_LAYER;
}

export interface PushArchiveOptions {
  registry: RegistryPusher;
  repository: string;
  source: DockerArchiveSource;
  /** Names the archive in the layer cache: its store path (immutable). */
  cacheId: string;
  cache?: LayerCache;
  /** Tags to push the manifest under (none: by digest). */
  tags: readonly string[];
  /** Labels merged into the archived config (changes its digest). */
  labels?: Record<string, string>;
  /** Archive size when known (progress). */
  totalBytes?: number;
  logger?: Logger;
  onProgress?: (progress: PushProgress) => void;
  signal?: AbortSignal;
}

class CacheMismatchError extends Error {
  override name = "CacheMismatchError";
}

/** PURE: the cache key of one archive entry. */
export function archiveEntryKey(cacheId: string, entry: string): string {
  return createHash("sha256")
    .update(JSON.stringify({ v: 1, kind: "docker-archive-entry", archive: cacheId, entry }))
    .digest("hex");
}

/** PURE: the archived config with labels merged into its `config.Labels` (bytes unchanged without labels). */
export function configWithLabels(configBytes: Buffer, config: Record<string, unknown>, labels: Record<string, string> | undefined): Buffer {
  if (!labels || Object.keys(labels).length === 0) return configBytes;
  const runtime = typeof config.config === "object" && config.config !== null ? { ...(config.config as Record<string, unknown>) } : {};
  const existing = typeof runtime.Labels === "object" && runtime.Labels !== null ? (runtime.Labels as Record<string, string>) : {};
  const merged: Record<string, string> = { ...existing, ...labels };
  const sorted: Record<string, string> = {};
  for (const k of Object.keys(merged).sort()) sorted[k] = merged[k]!;
  runtime.Labels = sorted;
  return Buffer.from(JSON.stringify({ ...config, config: runtime }), "utf8");
}

function counted<T extends BlobInfo>(source: BlobStreamSource<T>, onBytes: (n: number) => void): BlobStreamSource<T> {
  return {
    open() {
      const opened = source.open();
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          onBytes(chunk.length);
          cb(null, chunk);
        },
      });
      const stream: Readable = pipelineCb(opened.stream, counter, () => undefined);
      return { stream, result: opened.result };
    },
  };
}

async function drain(stream: Readable, onBytes: (n: number) => void): Promise<void> {
  await pipeline(
    stream,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        onBytes(chunk.length);
        cb();
      },
    }),
  );
}

function seconds(startMs: number): number {
  return Math.round(performance.now() - startMs) / 1000;
}

interface EntryOutcome {
  digest: Digest;
  size: number;
  outcome: LayerOutcome;
  cached: boolean;
}

export async function pushDockerArchive(options: PushArchiveOptions): Promise<PushClosureResult> {
  try {
    return await pushOnce(options, true);
  } catch (e) {
    if (!(e instanceof CacheMismatchError)) throw e;
    options.logger?.warn({ archive: options.cacheId, reason: e.message }, "the archive differs from the cached one; reading it again without the cache");
    return pushOnce(options, false);
  }
}

async function pushOnce(options: PushArchiveOptions, trustCache: boolean): Promise<PushClosureResult> {
  const { registry, repository: repo } = options;
  const cache = options.cache ?? noLayerCache;
  const log = options.logger;
  const seenIn = `${registry.host}/${repo}`;
  const started = performance.now();
  const tags = [...new Set(options.tags)];
  let bytesDone = 0;
  const bytesTotal = options.totalBytes ?? 0;
  let bytesPushed = 0;
  const progress = (phase: PushProgress["phase"], layer?: PushProgress["layer"]) =>
    options.onProgress?.({ phase, bytesDone, bytesTotal, ...(layer ? { layer } : {}) });
  const addBytes = (n: number) => {
    bytesDone += n;
    progress("layers");
  };

  progress("layers");
  const archive = openDockerArchive(options.source, options.signal ? { signal: options.signal } : {});
  const outcomes = new Map<string, EntryOutcome>();
  let index = 0;
  try {
    for await (const layer of archive.layers()) {
      options.signal?.throwIfAborted();
      outcomes.set(layer.path, await pushEntry(layer, index++));
    }
  } finally {
    await archive.close();
  }
  const image = await archive.image();
  const layersSeconds = seconds(started);
  if (image.unusedEntries.length > 0) log?.warn({ entries: image.unusedEntries.slice(0, 10) }, "archive entries that the image does not use were read");

  async function pushEntry(layer: ArchiveLayer, i: number): Promise<EntryOutcome> {
    const key = archiveEntryKey(options.cacheId, layer.path);
    const cached = trustCache ? await cache.get(key) : undefined;
    if (cached && cached.size === layer.size) {
      let outcome: LayerOutcome | undefined;
      const have = await registry.hasBlob(repo, cached.digest);
      if (have && (have.size < 0 || have.size === cached.size)) outcome = "skipped";
      else if (!have && cached.seenIn?.startsWith(`${registry.host}/`)) {
        const from = cached.seenIn.slice(registry.host.length + 1);
        if (from !== repo) {
          try {
            if (await registry.mountBlob(repo, cached.digest, from)) outcome = "mounted";
          } catch (err) {
            log?.warn({ digest: cached.digest, from, error: (err as Error).message }, "cross-repository mount failed; uploading instead");
          }
        }
      }
      if (outcome !== undefined) {
        await drain(layer.stream, addBytes);
        const actual = await layer.digest;
        if (actual !== cached.digest) throw new CacheMismatchError(`entry ${layer.path} has digest ${actual}, the cache says ${cached.digest}`);
        progress("layers", { index: i, count: 0, status: outcome, digest: actual });
        return { digest: actual, size: layer.size, outcome, cached: true };
      }
    }
    progress("layers", { index: i, count: 0, status: "uploading" });
    const info = await registry.uploadBlobStream(repo, counted(layerBlobStreamSource(layer), addBytes));
    bytesPushed += info.size;
    progress("layers", { index: i, count: 0, status: "pushed", digest: info.digest });
    return { digest: info.digest, size: info.size, outcome: "pushed", cached: cached !== undefined };
  }

  // Layers in manifest order.
  const layerDetails: PushedLayer[] = image.layers.map((l) => {
    const o = outcomes.get(l.source);
    if (!o) throw new Error(`layer ${l.path} of the archive was not pushed`);
    const mediaType = archiveLayerMediaType(l.compression);
    const diffId = (l.diffId !== undefined && /^sha256:[0-9a-f]{64}$/.test(l.diffId) ? l.diffId : l.digest) as Digest;
    return { digest: l.digest, size: l.size, diffId, mediaType, paths: 0, outcome: o.outcome, cached: o.cached };
  });
  for (const [i, l] of image.layers.entries()) {
    const d = layerDetails[i]!;
    const entry: LayerCacheEntry = { digest: d.digest, size: d.size, diffId: d.diffId, mediaType: d.mediaType, seenIn };
    try {
      await cache.put(archiveEntryKey(options.cacheId, l.source), entry);
    } catch (err) {
      log?.warn({ error: (err as Error).message }, "could not write the layer cache");
    }
  }

  // Config (as archived, plus labels), manifest, tags.
  const configBytes = configWithLabels(image.configBytes, image.config, options.labels);
  const config = { mediaType: MEDIA_TYPE_OCI_CONFIG, bytes: configBytes, digest: sha256Digest(configBytes), size: configBytes.length };
  const published = await publishImage({
    registry,
    repository: repo,
    config,
    layers: layerDetails,
    tags,
    onPhase: (phase) => progress(phase),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const { manifest, counts } = published;
  bytesPushed += published.bytesPushed;

  progress("done");
  log?.info({ repository: seenIn, digest: manifest.digest, layers: counts, bytesPushed }, "image pushed");
  return {
    digest: manifest.digest,
    size: manifest.size,
    mediaType: manifest.mediaType,
    configDigest: config.digest,
    tags,
    layers: counts,
    layerDetails,
    bytesPushed,
    seconds: { plan: 0, layers: layersSeconds, ...published.seconds, total: seconds(started) },
  };
}
