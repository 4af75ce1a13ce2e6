// Stores signatures and attestations where cosign looks for them: an image manifest under the tag
// `sha256-<hex>.sig` / `.att` of the image's repository, one layer per signature or DSSE
// envelope. Like cosign, a new one is added to what the tag already holds (another signer's
// layers stay); only an earlier layer of ours of the same kind is replaced.
import type { Digest } from "../oci/digest.ts";
import { sha256Digest } from "../oci/digest.ts";
import { buildImageManifest, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST, type Descriptor } from "../oci/image-manifest.ts";
import type { ReferrersRegistry } from "../oci/referrers.ts";
import { REFERRER_KIND_ANNOTATION } from "../oci/referrers.ts";

export interface CosignLayer {
  /** Ours: replaces an earlier layer of the same kind (REFERRER_KIND_ANNOTATION). */
  kind: string;
  mediaType: string;
  bytes: Buffer;
  annotations: Record<string, string>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** PURE: the layers an existing cosign manifest keeps: valid descriptors that are not our stale ones. */
export function keptCosignLayers(existing: unknown, ours: readonly Descriptor[]): Descriptor[] {
  const layers = isRecord(existing) && Array.isArray(existing.layers) ? existing.layers.filter(isRecord) : [];
  const kinds = new Set(ours.map((d) => d.annotations?.[REFERRER_KIND_ANNOTATION]));
  const digests = new Set(ours.map((d) => d.digest));
  const out: Descriptor[] = [];
  for (const l of layers) {
    if (typeof l.mediaType !== "string" || typeof l.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(l.digest) || !Number.isSafeInteger(l.size)) continue;
    const annotations = isRecord(l.annotations)
      ? (Object.fromEntries(Object.entries(l.annotations).filter((e) => typeof e[1] === "string")) as Record<string, string>)
      : undefined;
    if (digests.has(l.digest as Digest)) continue;
    if (annotations?.[REFERRER_KIND_ANNOTATION] !== undefined && kinds.has(annotations[REFERRER_KIND_ANNOTATION])) continue;
    out.push({ mediaType: l.mediaType, digest: l.digest as Digest, size: l.size as number, ...(annotations ? { annotations } : {}) });
  }
  return out;
}

/** The config cosign writes for its signature images (an empty image config listing the layers). */
function cosignConfig(layers: readonly Descriptor[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: "",
      created: "0001-01-01T00:00:00Z",
      history: [{ created: "0001-01-01T00:00:00Z" }],
      os: "",
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
      config: {},
    }),
    "utf8",
  );
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
}

/** Adds `layers` to the cosign manifest under `tag`; returns its new digest and the bytes sent. */
export async function pushCosignLayers(
  registry: ReferrersRegistry,
  repo: string,
  tag: string,
  layers: readonly CosignLayer[],
): Promise<{ digest: Digest; bytesPushed: number }> {
  let bytesPushed = 0;
  const upload = async (l: CosignLayer): Promise<Descriptor> => {
    const digest = sha256Digest(l.bytes);
    if (!(await registry.hasBlob(repo, digest))) {
      await registry.uploadBlob(repo, l.bytes);
      bytesPushed += l.bytes.length;
    }
    return { mediaType: l.mediaType, digest, size: l.bytes.length, annotations: { ...l.annotations, [REFERRER_KIND_ANNOTATION]: l.kind } };
  };
  const [ours, current] = await Promise.all([Promise.all(layers.map(upload)), registry.findManifest(repo, tag, MEDIA_TYPE_OCI_MANIFEST)]);
  const all = [...keptCosignLayers(current ? parseJson(current.bytes) : undefined, ours), ...ours];
  const config = cosignConfig(all);
  const configDigest = sha256Digest(config);
  if (!(await registry.hasBlob(repo, configDigest))) {
    await registry.uploadBlob(repo, config);
    bytesPushed += config.length;
  }
  const manifest = buildImageManifest({ config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: configDigest, size: config.length }, layers: all });
  await registry.putManifest(repo, tag, manifest);
  return { digest: manifest.digest, bytesPushed: bytesPushed + manifest.size };
}
