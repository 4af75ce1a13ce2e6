// OCI 1.1 referrers: documents about an image (SBOM, provenance) pushed as artifact manifests
// whose `subject` is the image's manifest. Registries with the referrers API index them by
// themselves; for those without it (distribution 2.8 and 3.x: `GET /v2/<name>/referrers/<digest>`
// is a 404) the distribution spec's fallback applies: an image index under the tag
// `sha256-<hex>` lists the referrers, and every client that adds one merges itself in, keeping
// the entries other tools put there.
import type { Logger } from "../log/logger.ts";
import { sha256Digest, type Digest } from "./digest.ts";
import { buildImageManifest, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, type Descriptor } from "./image-manifest.ts";
import type { RegistryClient } from "./registry-client.ts";

const MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON = Buffer.from("{}", "utf8");
const EMPTY_DESCRIPTOR: Descriptor = { mediaType: MEDIA_TYPE_EMPTY, digest: sha256Digest(EMPTY_JSON), size: EMPTY_JSON.length };

/** Marks referrers this operator pushed (value: what it is), so a later push replaces only its own. */
export const REFERRER_KIND_ANNOTATION = "io.niximage.referrer";

export type ReferrersRegistry = Pick<RegistryClient, "hasBlob" | "uploadBlob" | "putManifest" | "findManifest" | "referrers">;

export interface ReferrerDocument {
  /** e.g. `sbom`, `provenance` (the REFERRER_KIND_ANNOTATION value). */
  kind: string;
  artifactType: string;
  /** Media type of the document blob. */
  mediaType: string;
  bytes: Buffer;
  /** File name for `oras pull` (the layer's org.opencontainers.image.title). */
  title: string;
}

interface AttachedReferrer {
  kind: string;
  artifactType: string;
  /** Digest of the referrer's manifest. */
  digest: Digest;
}

/** The fallback tag of `digest`: `sha256-<hex>`. */
export function referrersTag(digest: Digest): string {
  return digest.replace(":", "-");
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * PURE: the fallback index after adding `ours`: entries of the existing index are kept as they are
 * (unknown fields too, in their order), except our own earlier referrers of a kind we add again
 * (a provenance per push of the same image would otherwise pile up); ours not yet listed are
 * appended. Undefined when nothing changes.
 */
export function mergeReferrersIndex(existing: unknown, ours: readonly Descriptor[]): Buffer | undefined {
  const old = isRecord(existing) && Array.isArray(existing.manifests) ? existing.manifests.filter(isRecord) : [];
  const digests = new Set(ours.map((d) => d.digest));
  const kinds = new Set(ours.map((d) => d.annotations?.[REFERRER_KIND_ANNOTATION]).filter((k) => k !== undefined));
  const kept = old.filter((m) => {
    const kind = isRecord(m.annotations) ? m.annotations[REFERRER_KIND_ANNOTATION] : undefined;
    return !(typeof kind === "string" && kinds.has(kind) && !digests.has(m.digest as Digest));
  });
  const missing = ours.filter((d) => !kept.some((m) => m.digest === d.digest));
  if (kept.length === old.length && missing.length === 0) return undefined;
  const entries = [
    ...kept,
    ...missing.map((d) => ({
      mediaType: d.mediaType,
      digest: d.digest,
      size: d.size,
      ...(d.artifactType ? { artifactType: d.artifactType } : {}),
      ...(d.annotations ? { annotations: d.annotations } : {}),
    })),
  ];
  const doc: Record<string, unknown> = { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests: entries };
  if (isRecord(existing) && isRecord(existing.annotations)) doc.annotations = existing.annotations;
  return Buffer.from(JSON.stringify(doc), "utf8");
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
}

export interface AttachReferrersOptions {
  registry: ReferrersRegistry;
  repository: string;
  /** The image manifest the documents are about. */
  subject: Descriptor;
  documents: readonly ReferrerDocument[];
  logger?: Logger;
}

export interface AttachReferrersResult {
  referrers: AttachedReferrer[];
  /** The fallback tag when the registry has no referrers API (undefined: the API indexed them). */
  fallbackTag?: string;
  bytesPushed: number;
}

async function ensureBlob(registry: ReferrersRegistry, repo: string, bytes: Buffer, digest: Digest): Promise<number> {
  if (await registry.hasBlob(repo, digest)) return 0;
  await registry.uploadBlob(repo, bytes);
  return bytes.length;
}

/** Pushes each document as a referrer of `subject`, then updates the fallback tag when the registry needs it. */
export async function attachReferrers(options: AttachReferrersOptions): Promise<AttachReferrersResult> {
  const { registry, repository: repo, subject } = options;
  let bytesPushed = await ensureBlob(registry, repo, EMPTY_JSON, EMPTY_DESCRIPTOR.digest);
  const pushed = await Promise.all(
    options.documents.map(async (doc) => {
      const digest = sha256Digest(doc.bytes);
      const sent = await ensureBlob(registry, repo, doc.bytes, digest);
      const annotations = { [REFERRER_KIND_ANNOTATION]: doc.kind };
      const manifest = buildImageManifest({
        artifactType: doc.artifactType,
        config: EMPTY_DESCRIPTOR,
        layers: [{ mediaType: doc.mediaType, digest, size: doc.bytes.length, annotations: { "org.opencontainers.image.title": doc.title } }],
        subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
        annotations,
      });
      await registry.putManifest(repo, manifest.digest, manifest);
      const entry: Descriptor = {
        mediaType: MEDIA_TYPE_OCI_MANIFEST,
        digest: manifest.digest,
        size: manifest.size,
        artifactType: doc.artifactType,
        annotations,
      };
      return { entry, referrer: { kind: doc.kind, artifactType: doc.artifactType, digest: manifest.digest }, bytes: sent + manifest.size };
    }),
  );
  const entries = pushed.map((p) => p.entry);
  const referrers: AttachedReferrer[] = pushed.map((p) => p.referrer);
  for (const p of pushed) bytesPushed += p.bytes;
  if (await registry.referrers(repo, subject.digest)) return { referrers, bytesPushed };

  // Fallback: read, merge, write, and read again: a writer that raced us (the registry has no
  // conditional PUT) may have dropped our entries, then they are merged in once more.
  const tag = referrersTag(subject.digest);
  for (let attempt = 1; ; attempt++) {
    const current = await registry.findManifest(repo, tag, MEDIA_TYPE_OCI_INDEX);
    const existing = current ? parseJson(current.bytes) : undefined;
    if (current && current.mediaType !== MEDIA_TYPE_OCI_INDEX && existing !== undefined) {
      options.logger?.warn({ tag, mediaType: current.mediaType }, "the referrers fallback tag holds no image index; replacing it");
    }
    const merged = mergeReferrersIndex(current?.mediaType === MEDIA_TYPE_OCI_INDEX ? existing : undefined, entries);
    if (merged === undefined) return { referrers, fallbackTag: tag, bytesPushed };
    if (attempt > 3) throw new Error(`the referrers tag ${tag} of ${repo} keeps changing under us; another client is rewriting it`);
    await registry.putManifest(repo, tag, { bytes: merged, mediaType: MEDIA_TYPE_OCI_INDEX });
    bytesPushed += merged.length;
  }
}
