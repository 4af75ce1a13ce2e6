// The single-pass push of a Nix closure as an OCI image:
//   plan layers -> for each layer (bounded parallel): cache lookup (store-path set -> blob) ->
//   registry HEAD (skip) -> cross-repository mount -> else tar -> sha256 [-> gzip -> sha256] ->
//   streamed upload, in one pass with no temp tarball -> config blob -> manifest -> tags.
import type { Logger } from "../log/logger.ts";
import { systemClock, type Clock } from "../runtime/clock.ts";
import type { Digest } from "../oci/digest.ts";
import { buildImageConfig, layerMediaType, type ImageRuntimeConfig, type LayerCompression } from "../oci/image-manifest.ts";
import { isValidTag } from "../oci/image-reference.ts";
import type { RegistryClient } from "../oci/registry-client.ts";
import { mapBounded } from "./bounded-parallel.ts";
import { hashLayer, layerBlobSource, type LayerBlobInfo, type LayerBlobOptions } from "./layer-blob.ts";
import { layerCacheKey, noLayerCache, type LayerCache, type LayerCacheEntry } from "./layer-cache.ts";
import { planLayers, type PlannedLayer } from "./layer-plan.ts";
import { publishImage, type LayerOutcome, type PushPhase } from "./publish-image.ts";
import type { ClosurePath } from "./path-info.ts";
import { DEFAULT_STORE_DIR } from "./tar-writer.ts";

/** The registry operations the pusher needs (a RegistryClient, or a fake in tests). */
export type RegistryPusher = Pick<RegistryClient, "host" | "hasBlob" | "mountBlob" | "uploadBlob" | "uploadBlobStream" | "putManifest">;

export interface PushProgress {
  phase: PushPhase;
  /** Estimated layer bytes handled so far (NAR sizes; exact totals are unknown before tarring). */
  bytesDone: number;
  bytesTotal: number;
  /** Set when one layer changed state. */
  layer?: { index: number; count: number; status: "hashing" | "uploading" | LayerOutcome; digest?: Digest };
}

interface ImageOptions {
  config?: ImageRuntimeConfig;
  architecture?: string;
  os?: string;
  variant?: string;
  /** RFC 3339; the epoch + 1 s unless given (reproducible digests). */
  created?: string;
  /** Manifest annotations. */
  annotations?: Record<string, string>;
}

export interface PushClosureOptions {
  registry: RegistryPusher;
  /** Repository path on that registry, e.g. `acme/web`. */
  repository: string;
  /** `nix path-info --json -r` of the roots, parsed. */
  closure: readonly ClosurePath[];
  /** The app's own store path(s): they get the last layer. */
  roots: readonly string[];
  /**
   * Layers decided by the image's author (nix2container): used as given, bottom first, instead
   * of planning them from the closure (`closure` then only supplies NAR hashes and sizes).
   */
  layers?: readonly { paths: readonly string[] }[];
  /** Tags to point at the image (pushed after the manifest). None: the manifest is pushed by digest. */
  tags?: readonly string[];
  maxLayers?: number;
  compression?: LayerCompression;
  gzipLevel?: number;
  image?: ImageOptions;
  /** mtime of every tar entry (default 1, like Nix). */
  mtime?: number;
  storeDir?: string;
  /** Where the store is on this machine when not at `storeDir` (see TarStorePathsOptions). */
  readRoot?: string;
  cache?: LayerCache;
  /** Other repositories of the same registry to try a cross-repository mount from. */
  mountFrom?: readonly string[];
  /** Layers processed at once (default 3). */
  concurrency?: number;
  /**
   * On a cache miss: "upload" streams the layer straight to the registry (one read of the store
   * paths; re-sends a layer the registry may already have), "hash-first" tars it once to learn its
   * digest, asks the registry, and tars again only when it must upload (two reads of new layers).
   */
  onCacheMiss?: "upload" | "hash-first";
  clock?: Clock;
  logger?: Logger;
  onProgress?: (progress: PushProgress) => void;
  signal?: AbortSignal;
}

export interface PushedLayer {
  digest: Digest;
  size: number;
  diffId: Digest;
  mediaType: string;
  paths: number;
  outcome: LayerOutcome;
  /** Whether the cache knew this layer. */
  cached: boolean;
}

export interface PushClosureResult {
  /** Manifest digest: the image is `<host>/<repository>@<digest>`. */
  digest: Digest;
  /** Manifest size in bytes. */
  size: number;
  mediaType: string;
  configDigest: Digest;
  tags: string[];
  layers: { total: number; pushed: number; skipped: number; mounted: number };
  layerDetails: PushedLayer[];
  /** Bytes sent to the registry: uploaded layer and config blobs and manifest PUTs. */
  bytesPushed: number;
  seconds: { plan: number; layers: number; config: number; manifest: number; tags: number; total: number };
}

function elapsed(clock: Clock, startMs: number): number {
  return Math.round(clock.now().getTime() - startMs) / 1000;
}

export async function pushClosure(options: PushClosureOptions): Promise<PushClosureResult> {
  const clock = options.clock ?? systemClock;
  const log = options.logger;
  const registry = options.registry;
  const repo = options.repository;
  const cache = options.cache ?? noLayerCache;
  const compression = options.compression ?? "none";
  const mediaType = layerMediaType(compression);
  const storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
  const mtime = options.mtime ?? 1;
  const onCacheMiss = options.onCacheMiss ?? "upload";
  const tags = [...new Set(options.tags ?? [])];
  for (const t of tags) if (!isValidTag(t)) throw new Error(`invalid tag ${JSON.stringify(t.slice(0, 200))}`);
  const seenIn = `${registry.host}/${repo}`;
  const startMs = clock.now().getTime();
  const signal = options.signal;

  // Plan.
  let phaseStart = clock.now().getTime();
  const narHashes = new Map<string, string>();
  const narSizes = new Map<string, number>();
  for (const p of options.closure) {
    if (p.narHash) narHashes.set(p.path, p.narHash);
    narSizes.set(p.path, p.narSize);
  }
  const plan: { layers: PlannedLayer[] } = options.layers
    ? {
        layers: options.layers.map((l) => {
          const paths = [...new Set(l.paths)].sort();
          return { paths, narSize: paths.reduce((s, p) => s + (narSizes.get(p) ?? 0), 0), kind: "merged" as const };
        }),
      }
    : planLayers(options.closure, options.roots, options.maxLayers !== undefined ? { maxLayers: options.maxLayers } : {});
  const count = plan.layers.length;
  const bytesTotal = plan.layers.reduce((s, l) => s + l.narSize, 0);
  const perLayerDone = new Array<number>(count).fill(0);
  let bytesDone = 0;
  const progress = (phase: PushPhase, layer?: PushProgress["layer"]) => options.onProgress?.({ phase, bytesDone, bytesTotal, ...(layer ? { layer } : {}) });
  const addLayerBytes = (index: number, n: number, phase: PushPhase = "layers") => {
    const l = plan.layers[index]!;
    const before = perLayerDone[index]!;
    const after = Math.min(l.narSize, before + n);
    perLayerDone[index] = after;
    bytesDone += after - before;
    if (after !== before) progress(phase);
  };
  const completeLayer = (index: number) => addLayerBytes(index, Number.MAX_SAFE_INTEGER);
  const seconds = { plan: elapsed(clock, phaseStart), layers: 0, config: 0, manifest: 0, tags: 0, total: 0 };
  log?.info({ repository: seenIn, layers: count, paths: plan.layers.reduce((s, l) => s + l.paths.length, 0), bytesTotal }, "layer plan");
  progress("plan");

  let bytesPushed = 0;
  const blobOptions = (index: number, countBytes: boolean): LayerBlobOptions => ({
    compression,
    mtime,
    storeDir,
    ...(options.gzipLevel !== undefined ? { gzipLevel: options.gzipLevel } : {}),
    ...(options.readRoot !== undefined ? { readRoot: options.readRoot } : {}),
    ...(countBytes ? { onTarBytes: (n: number) => addLayerBytes(index, n) } : {}),
  });

  const mountCandidates = (entry: LayerCacheEntry | undefined): string[] => {
    const out: string[] = [];
    const prefix = `${registry.host}/`;
    if (entry?.seenIn?.startsWith(prefix)) out.push(entry.seenIn.slice(prefix.length));
    for (const r of options.mountFrom ?? []) out.push(r);
    return [...new Set(out)].filter((r) => r !== repo);
  };

  /** Skip or mount a blob whose digest is known; undefined when it must be uploaded. */
  const reuse = async (digest: Digest, size: number, entry: LayerCacheEntry | undefined): Promise<LayerOutcome | undefined> => {
    const have = await registry.hasBlob(repo, digest);
    if (have && (have.size < 0 || have.size === size)) return "skipped";
    if (have) {
      log?.warn({ digest, expected: size, registry: have.size }, "registry blob size differs from the cached size; re-uploading");
      return undefined;
    }
    for (const from of mountCandidates(entry)) {
      try {
        if (await registry.mountBlob(repo, digest, from)) return "mounted";
      } catch (err) {
        log?.warn({ digest, from, error: (err as Error).message }, "cross-repository mount failed; uploading instead");
      }
    }
    return undefined;
  };

  const upload = async (index: number, layer: PlannedLayer): Promise<LayerBlobInfo> => {
    progress("layers", { index, count, status: "uploading" });
    perLayerDone[index] = 0;
    const info = await registry.uploadBlobStream(repo, layerBlobSource(layer.paths, blobOptions(index, true)));
    bytesPushed += info.size;
    return info;
  };

  const processLayer = async (layer: PlannedLayer, index: number): Promise<PushedLayer> => {
    signal?.throwIfAborted();
    const key = layerCacheKey({
      paths: layer.paths,
      narHashes,
      compression,
      ...(options.gzipLevel !== undefined ? { gzipLevel: options.gzipLevel } : {}),
      mtime,
      storeDir,
    });
    const entry = await cache.get(key);
    const usable = entry !== undefined && entry.mediaType === mediaType ? entry : undefined;
    let result: { digest: Digest; size: number; diffId: Digest; outcome: LayerOutcome };

    if (usable) {
      const outcome = await reuse(usable.digest, usable.size, usable);
      if (outcome) {
        result = { digest: usable.digest, size: usable.size, diffId: usable.diffId, outcome };
      } else {
        const info = await upload(index, layer);
        if (info.digest !== usable.digest) {
          log?.warn({ layer: index, cached: usable.digest, actual: info.digest }, "layer cache entry was stale; replaced");
        }
        result = { digest: info.digest, size: info.size, diffId: info.diffId, outcome: "pushed" };
      }
    } else if (onCacheMiss === "hash-first") {
      progress("layers", { index, count, status: "hashing" });
      const hashed = await hashLayer(layer.paths, blobOptions(index, false));
      const outcome = await reuse(hashed.digest, hashed.size, undefined);
      if (outcome) {
        result = { digest: hashed.digest, size: hashed.size, diffId: hashed.diffId, outcome };
      } else {
        const info = await upload(index, layer);
        if (info.digest !== hashed.digest) throw new Error(`layer ${index} changed between two reads (store paths must be immutable)`);
        result = { digest: info.digest, size: info.size, diffId: info.diffId, outcome: "pushed" };
      }
    } else {
      const info = await upload(index, layer);
      result = { digest: info.digest, size: info.size, diffId: info.diffId, outcome: "pushed" };
    }

    const fresh: LayerCacheEntry = { digest: result.digest, size: result.size, diffId: result.diffId, mediaType, seenIn };
    if (!usable || usable.digest !== fresh.digest || usable.size !== fresh.size || usable.diffId !== fresh.diffId || usable.seenIn !== seenIn) {
      try {
        await cache.put(key, fresh);
      } catch (err) {
        log?.warn({ error: (err as Error).message }, "could not write the layer cache");
      }
    }
    completeLayer(index);
    progress("layers", { index, count, status: result.outcome, digest: result.digest });
    log?.debug({ layer: index, paths: layer.paths.length, digest: result.digest, size: result.size, outcome: result.outcome }, "layer done");
    return { ...result, mediaType, paths: layer.paths.length, cached: usable !== undefined };
  };

  phaseStart = clock.now().getTime();
  progress("layers");
  const layers = await mapBounded(plan.layers, options.concurrency ?? 3, processLayer, signal);
  seconds.layers = elapsed(clock, phaseStart);

  // Config, manifest, tags.
  const image = options.image ?? {};
  const config = buildImageConfig({
    diffIds: layers.map((l) => l.diffId),
    ...(image.config ? { config: image.config } : {}),
    ...(image.architecture ? { architecture: image.architecture } : {}),
    ...(image.os ? { os: image.os } : {}),
    ...(image.variant ? { variant: image.variant } : {}),
    ...(image.created ? { created: image.created } : {}),
  });
  const published = await publishImage({
    registry,
    repository: repo,
    config,
    layers,
    tags,
    ...(image.annotations ? { annotations: image.annotations } : {}),
    onPhase: (phase) => progress(phase),
    clock,
    ...(signal ? { signal } : {}),
  });
  const { manifest, counts } = published;
  bytesPushed += published.bytesPushed;
  Object.assign(seconds, published.seconds);
  seconds.total = elapsed(clock, startMs);

  progress("done");
  log?.info({ repository: seenIn, digest: manifest.digest, layers: counts, bytesPushed, seconds }, "image pushed");
  return {
    digest: manifest.digest,
    size: manifest.size,
    mediaType: manifest.mediaType,
    configDigest: config.digest,
    tags,
    layers: counts,
    layerDetails: layers,
    bytesPushed,
    seconds,
  };
}
