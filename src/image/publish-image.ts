// The common tail of both pushers (push-closure.ts from store paths, push-archive.ts from a
// docker-archive): once the layers are in the registry, push the config blob (unless it is
// there), the manifest (serialised once; under the first tag, or by digest without tags), then the
// other tags with the same bytes, and count what happened to the layers.
import type { Digest } from "../oci/digest.ts";
import { buildImageManifest, type Descriptor, type SerialisedBlob } from "../oci/image-manifest.ts";
import type { RegistryClient } from "../oci/registry-client.ts";
import { systemClock, type Clock } from "../runtime/clock.ts";

export type LayerOutcome = "skipped" | "mounted" | "pushed";

export type PushPhase = "plan" | "layers" | "config" | "manifest" | "tags" | "done";

interface PublishedLayer {
  digest: Digest;
  size: number;
  mediaType: string;
  outcome: LayerOutcome;
}

export interface PublishImageOptions {
  registry: Pick<RegistryClient, "hasBlob" | "uploadBlob" | "putManifest">;
  repository: string;
  config: SerialisedBlob;
  /** Bottom layer first, already in the registry. */
  layers: readonly PublishedLayer[];
  /** Valid, deduplicated tags (none: the manifest is pushed by digest). */
  tags: readonly string[];
  annotations?: Record<string, string>;
  onPhase?: (phase: PushPhase) => void;
  clock?: Clock;
  signal?: AbortSignal;
}

export interface PublishedImage {
  manifest: SerialisedBlob;
  counts: { total: number; pushed: number; skipped: number; mounted: number };
  /** Config blob (when uploaded) and manifest PUTs. */
  bytesPushed: number;
  seconds: { config: number; manifest: number; tags: number };
}

export async function publishImage(options: PublishImageOptions): Promise<PublishedImage> {
  const { registry, repository: repo, config, signal } = options;
  const clock = options.clock ?? systemClock;
  const since = (startMs: number) => Math.round(clock.now().getTime() - startMs) / 1000;
  let bytesPushed = 0;

  let t = clock.now().getTime();
  options.onPhase?.("config");
  signal?.throwIfAborted();
  if (!(await registry.hasBlob(repo, config.digest))) {
    await registry.uploadBlob(repo, config.bytes);
    bytesPushed += config.size;
  }
  const configSeconds = since(t);

  t = clock.now().getTime();
  options.onPhase?.("manifest");
  const layers: Descriptor[] = options.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size }));
  const manifest = buildImageManifest({
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers,
    ...(options.annotations ? { annotations: options.annotations } : {}),
  });
  const [first, ...others] = options.tags.length > 0 ? options.tags : [manifest.digest];
  await registry.putManifest(repo, first!, manifest);
  bytesPushed += manifest.size;
  const manifestSeconds = since(t);

  t = clock.now().getTime();
  options.onPhase?.("tags");
  for (const tag of others) {
    signal?.throwIfAborted();
    await registry.putManifest(repo, tag, manifest);
    bytesPushed += manifest.size;
  }
  const tagsSeconds = since(t);

  const counts = { total: options.layers.length, pushed: 0, skipped: 0, mounted: 0 };
  for (const l of options.layers) counts[l.outcome]++;
  return { manifest, counts, bytesPushed, seconds: { config: configSeconds, manifest: manifestSeconds, tags: tagsSeconds } };
}
