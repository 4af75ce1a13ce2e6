// The referrers tag-schema fallback index and cosign's layer lists, merged without losing what
// other tools put there.
import { describe, expect, it } from "vitest";
import { keptCosignLayers } from "../../src/attest/cosign-attach.ts";
import type { Digest } from "../../src/oci/digest.ts";
import type { Descriptor } from "../../src/oci/image-manifest.ts";
import { mergeReferrersIndex, REFERRER_KIND_ANNOTATION, referrersTag } from "../../src/oci/referrers.ts";

const d = (c: string) => `sha256:${c.repeat(64)}` as Digest;
const M = "application/vnd.oci.image.manifest.v1+json";
const ours = (c: string, kind: string): Descriptor => ({
  mediaType: M,
  digest: d(c),
  size: 10,
  artifactType: `type/${kind}`,
  annotations: { [REFERRER_KIND_ANNOTATION]: kind },
});
const parse = (b: Buffer | undefined) => JSON.parse(b!.toString()) as { manifests: Record<string, unknown>[]; annotations?: unknown };

describe("referrers fallback index", () => {
  it("names the tag sha256-<hex>", () => expect(referrersTag(d("a"))).toBe(`sha256-${"a".repeat(64)}`));

  it("creates the index when there is none", () => {
    const idx = parse(mergeReferrersIndex(undefined, [ours("a", "sbom"), ours("b", "provenance")]));
    expect(idx).toMatchObject({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json" });
    expect(idx.manifests.map((m) => m.digest)).toEqual([d("a"), d("b")]);
    expect(idx.manifests[0]).toEqual({
      mediaType: M,
      digest: d("a"),
      size: 10,
      artifactType: "type/sbom",
      annotations: { [REFERRER_KIND_ANNOTATION]: "sbom" },
    });
  });

  it("keeps other tools' entries (unknown fields too) and replaces only our earlier entry of the same kind", () => {
    const foreign = { mediaType: M, digest: d("f"), size: 5, artifactType: "application/vnd.dev.sigstore.bundle.v0.3+json", platform: { os: "linux" } };
    const existing = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [foreign, ours("1", "provenance"), ours("a", "sbom")],
      annotations: { x: "y" },
    };
    const idx = parse(mergeReferrersIndex(existing, [ours("a", "sbom"), ours("2", "provenance")]));
    expect(idx.manifests).toEqual([foreign, { ...ours("a", "sbom") }, { ...ours("2", "provenance") }]);
    expect(idx.annotations).toEqual({ x: "y" });
  });

  it("reports no change when everything is listed already", () => {
    const existing = { schemaVersion: 2, manifests: [ours("a", "sbom")] };
    expect(mergeReferrersIndex(existing, [ours("a", "sbom")])).toBeUndefined();
  });
});

describe("cosign layers", () => {
  it("keeps another signer's layers, drops our stale one of the same kind and invalid entries", () => {
    const other = {
      mediaType: "application/vnd.dev.cosign.simplesigning.v1+json",
      digest: d("e"),
      size: 3,
      annotations: { "dev.cosignproject.cosign/signature": "MEU=" },
    };
    const stale = { ...other, digest: d("5"), annotations: { [REFERRER_KIND_ANNOTATION]: "signature" } };
    const kept = keptCosignLayers({ layers: [other, stale, { digest: "nope" }] }, [
      { mediaType: other.mediaType, digest: d("9"), size: 3, annotations: { [REFERRER_KIND_ANNOTATION]: "signature" } },
    ]);
    expect(kept).toEqual([other]);
  });
});
