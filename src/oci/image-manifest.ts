// PURE: the OCI image config and manifest, each serialised ONCE to bytes; the digest is of exactly
// those bytes and the same bytes are what gets pushed. Key order is fixed by construction, maps
// (labels, exposed ports, annotations) are written sorted, so equal inputs give equal digests.
import { assertDigest, sha256Digest, type Digest } from "./digest.ts";

export const MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
export const MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export const MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";

/** Fixed creation time: the epoch plus one second, like Nix's store mtimes. */
const DEFAULT_CREATED = "1970-01-01T00:00:01Z";

export type LayerCompression = "none" | "gzip";

export function layerMediaType(compression: LayerCompression): string {
  return compression === "gzip" ? MEDIA_TYPE_OCI_LAYER_GZIP : MEDIA_TYPE_OCI_LAYER;
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  /** OCI 1.1: the artifact type of a referrer listed in an index. */
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** A serialised JSON document: the bytes to push and their digest. */
export interface SerialisedBlob {
  mediaType: string;
  bytes: Buffer;
  digest: Digest;
  size: number;
}

/** The runtime configuration an image carries (`spec.image.config` of a NixImage). */
export interface ImageRuntimeConfig {
  entrypoint?: string[];
  cmd?: string[];
  /** `NAME=value` strings, in the given order. */
  env?: string[];
  workingDir?: string;
  user?: string;
  /** `8080`, `8080/tcp` or `53/udp`. */
  exposedPorts?: (string | number)[];
  labels?: Record<string, string>;
  stopSignal?: string;
}

export interface ImageConfigInput {
  /** Uncompressed layer digests, bottom layer first. */
  diffIds: Digest[];
  config?: ImageRuntimeConfig;
  architecture?: string;
  os?: string;
  variant?: string;
  /** RFC 3339; fixed to DEFAULT_CREATED unless given. */
  created?: string;
  /** One history entry per layer with this `created_by` when given (docker shows it). */
  historyCreatedBy?: string;
}

export class ImageManifestError extends Error {
  override name = "ImageManifestError";
}

function sortedRecord(record: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of Object.keys(record).sort()) out[key] = record[key]!;
  return out;
}

export function normaliseExposedPort(port: string | number): string {
  const text = String(port).trim().toLowerCase();
  const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/.exec(text);
  const n = m ? Number(m[1]) : NaN;
  if (!m || n < 1 || n > 65535) throw new ImageManifestError(`bad exposed port ${JSON.stringify(String(port))}`);
  return `${n}/${m[2] ?? "tcp"}`;
}

function runtimeConfig(c: ImageRuntimeConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (c.user) out.User = c.user;
  if (c.exposedPorts && c.exposedPorts.length > 0) {
    const ports: Record<string, object> = {};
    for (const p of [...new Set(c.exposedPorts.map(normaliseExposedPort))].sort()) ports[p] = {};
    out.ExposedPorts = ports;
  }
  if (c.env && c.env.length > 0) {
    for (const e of c.env) {
      if (!/^[^=]+=/.test(e)) throw new ImageManifestError("env entries must look like NAME=value");
    }
    out.Env = [...c.env];
  }
  if (c.entrypoint && c.entrypoint.length > 0) out.Entrypoint = [...c.entrypoint];
  if (c.cmd && c.cmd.length > 0) out.Cmd = [...c.cmd];
  if (c.workingDir) out.WorkingDir = c.workingDir;
  if (c.labels && Object.keys(c.labels).length > 0) out.Labels = sortedRecord(c.labels);
  if (c.stopSignal) out.StopSignal = c.stopSignal;
  return out;
}

function serialise(mediaType: string, doc: unknown): SerialisedBlob {
  const bytes = Buffer.from(JSON.stringify(doc), "utf8");
  return { mediaType, bytes, digest: sha256Digest(bytes), size: bytes.length };
}

/** The OCI image config (application/vnd.oci.image.config.v1+json). */
export function buildImageConfig(input: ImageConfigInput): SerialisedBlob {
  const created = input.created ?? DEFAULT_CREATED;
  if (Number.isNaN(Date.parse(created))) throw new ImageManifestError("created is not an RFC 3339 time");
  const diffIds = input.diffIds.map((d) => assertDigest(d, "diff_id"));
  const doc: Record<string, unknown> = {
    created,
    architecture: input.architecture ?? "amd64",
  };
  if (input.variant) doc.variant = input.variant;
  doc.os = input.os ?? "linux";
  doc.config = runtimeConfig(input.config ?? {});
  doc.rootfs = { type: "layers", diff_ids: diffIds };
  if (input.historyCreatedBy !== undefined) {
    doc.history = diffIds.map(() => ({ created, created_by: input.historyCreatedBy }));
  }
  return serialise(MEDIA_TYPE_OCI_CONFIG, doc);
}

export interface ManifestInput {
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  /** OCI 1.1 artifacts: what this manifest is (an SBOM, a provenance, ...). */
  artifactType?: string;
  /** OCI 1.1 referrers: the manifest this one is about. */
  subject?: Descriptor;
}

function descriptor(d: Descriptor): Record<string, unknown> {
  if (!Number.isSafeInteger(d.size) || d.size < 0) throw new ImageManifestError("descriptor size must be a non-negative integer");
  const out: Record<string, unknown> = { mediaType: d.mediaType, digest: assertDigest(d.digest), size: d.size };
  if (d.artifactType !== undefined) out.artifactType = d.artifactType;
  if (d.annotations && Object.keys(d.annotations).length > 0) out.annotations = sortedRecord(d.annotations);
  return out;
}

/** The OCI image manifest (application/vnd.oci.image.manifest.v1+json). */
export function buildImageManifest(input: ManifestInput): SerialisedBlob {
  const doc: Record<string, unknown> = { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST };
  if (input.artifactType !== undefined) doc.artifactType = input.artifactType;
  doc.config = descriptor(input.config);
  doc.layers = input.layers.map(descriptor);
  if (input.subject) doc.subject = descriptor(input.subject);
  if (input.annotations && Object.keys(input.annotations).length > 0) doc.annotations = sortedRecord(input.annotations);
  return serialise(MEDIA_TYPE_OCI_MANIFEST, doc);
}
