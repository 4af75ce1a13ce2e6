// The push step's proof, after the image is pushed (design.md section 10): from what the step
// already has (closure.json, result.json) it makes
//   - an SBOM (CycloneDX 1.6 of the runtime closure) and a provenance (SLSA v1 in-toto statement),
//     attached to the image's digest as OCI 1.1 referrers (tag-schema fallback where the registry
//     has no referrers API),
//   - with a signing key: a cosign signature of the image (`.sig`) and both documents as signed
//     in-toto attestations in DSSE envelopes (`.att`), so `cosign verify --key` and
//     `cosign verify-attestation --key` accept them.
// The image itself is not touched: its digest stays a function of the closure and config only.
import type { BuildResult } from "../builder/step-files.ts";
import type { ClosurePath } from "../image/path-info.ts";
import type { Logger } from "../log/logger.ts";
import type { Digest } from "../oci/digest.ts";
import type { Descriptor } from "../oci/image-manifest.ts";
import { attachReferrers, type ReferrerDocument, type ReferrersRegistry } from "../oci/referrers.ts";
import { systemClock, type Clock } from "../runtime/clock.ts";
import { pushCosignLayers } from "./cosign-attach.ts";
import {
  COSIGN_SIGNATURE_ANNOTATION,
  cosignTag,
  DSSE_MEDIA_TYPE,
  dsseEnvelope,
  signBytes,
  SIMPLE_SIGNING_MEDIA_TYPE,
  simpleSigningPayload,
} from "./cosign-signature.ts";
import { buildCycloneDxSbom, CYCLONEDX_MEDIA_TYPE, CYCLONEDX_PREDICATE_TYPE } from "./cyclonedx-sbom.ts";
import type { SigningKey } from "./signing-key.ts";
import { buildSlsaProvenance, IN_TOTO_MEDIA_TYPE, IN_TOTO_STATEMENT_TYPE, SLSA_PROVENANCE_PREDICATE_TYPE } from "./slsa-provenance.ts";

/** artifactType of the provenance referrer (the statement's media type plus which predicate). */
const PROVENANCE_ARTIFACT_TYPE = "application/vnd.in-toto+json";

export interface AttestationSettings {
  sbom: boolean;
  provenance: boolean;
  signingKey?: SigningKey;
}

export interface AttestOptions extends AttestationSettings {
  registry: ReferrersRegistry & { host: string };
  repository: string;
  /** The pushed image manifest. */
  image: Descriptor;
  build: BuildResult;
  closure: readonly ClosurePath[];
  operatorVersion: string;
  builderImage?: string;
  job?: string;
  clock?: Clock;
  logger?: Logger;
}

/** Digests of what was attached (referrer manifests; the cosign `.sig` / `.att` manifests). */
interface AttestationDigests {
  sbom?: Digest;
  provenance?: Digest;
  signature?: Digest;
  attestations?: Digest;
}

export interface AttestResult {
  digests: AttestationDigests;
  /** The referrers fallback tag, when the registry needed it. */
  referrersTag?: string;
  bytesPushed: number;
  seconds: number;
}

function json(doc: unknown): Buffer {
  return Buffer.from(JSON.stringify(doc), "utf8");
}

export async function attachAttestations(options: AttestOptions): Promise<AttestResult> {
  const clock = options.clock ?? systemClock;
  const started = clock.now().getTime();
  const { registry, repository: repo, image } = options;
  const name = `${registry.host}/${repo}`;
  const hex = image.digest.slice("sha256:".length);
  const sbom = options.sbom
    ? buildCycloneDxSbom({
        closure: options.closure,
        root: options.build.outPath,
        ...(options.build.meta ? { meta: options.build.meta } : {}),
        tool: { name: "nix-image-operator", version: options.operatorVersion },
        image: `${name}@${image.digest}`,
      })
    : undefined;
  const provenance = options.provenance
    ? buildSlsaProvenance({
        subject: { name, digest: image.digest },
        build: options.build,
        operatorVersion: options.operatorVersion,
        ...(options.builderImage ? { builderImage: options.builderImage } : {}),
        ...(options.job ? { job: options.job } : {}),
        finishedOn: clock.now().toISOString(),
      })
    : undefined;

  const digests: AttestationDigests = {};
  let bytesPushed = 0;
  let referrersTag: string | undefined;
  const documents: ReferrerDocument[] = [];
  if (sbom) documents.push({ kind: "sbom", artifactType: CYCLONEDX_MEDIA_TYPE, mediaType: CYCLONEDX_MEDIA_TYPE, bytes: json(sbom), title: "sbom.cdx.json" });
  if (provenance)
    documents.push({
      kind: "provenance",
      artifactType: PROVENANCE_ARTIFACT_TYPE,
      mediaType: IN_TOTO_MEDIA_TYPE,
      bytes: json(provenance),
      title: "provenance.intoto.json",
    });
  // Three independent writes (the referrers, the `.sig` tag, the `.att` tag): at once.
  const referrersTask = async () => {
    if (documents.length === 0) return;
    const attached = await attachReferrers({ registry, repository: repo, subject: image, documents, ...(options.logger ? { logger: options.logger } : {}) });
    for (const r of attached.referrers) digests[r.kind as "sbom" | "provenance"] = r.digest;
    referrersTag = attached.fallbackTag;
    bytesPushed += attached.bytesPushed;
  };
  const key = options.signingKey?.privateKey;
  const signatureTask = async () => {
    if (!key) return;
    const payload = simpleSigningPayload(name, image.digest);
    const sig = await pushCosignLayers(registry, repo, cosignTag(image.digest, "sig"), [
      { kind: "signature", mediaType: SIMPLE_SIGNING_MEDIA_TYPE, bytes: payload, annotations: { [COSIGN_SIGNATURE_ANNOTATION]: signBytes(key, payload) } },
    ]);
    digests.signature = sig.digest;
    bytesPushed += sig.bytesPushed;
  };
  const attestationsTask = async () => {
    if (!key) return;
    const statements: { kind: string; predicateType: string; statement: unknown }[] = [];
    if (sbom) {
      statements.push({
        kind: "sbom",
        predicateType: CYCLONEDX_PREDICATE_TYPE,
        statement: { _type: IN_TOTO_STATEMENT_TYPE, subject: [{ name, digest: { sha256: hex } }], predicateType: CYCLONEDX_PREDICATE_TYPE, predicate: sbom },
      });
    }
    if (provenance) statements.push({ kind: "provenance", predicateType: SLSA_PROVENANCE_PREDICATE_TYPE, statement: provenance });
    if (statements.length === 0) return;
    const att = await pushCosignLayers(
      registry,
      repo,
      cosignTag(image.digest, "att"),
      statements.map((s) => ({
        kind: s.kind,
        mediaType: DSSE_MEDIA_TYPE,
        bytes: dsseEnvelope(key, s.statement),
        annotations: { [COSIGN_SIGNATURE_ANNOTATION]: "", predicateType: s.predicateType },
      })),
    );
    digests.attestations = att.digest;
    bytesPushed += att.bytesPushed;
  };
  await Promise.all([referrersTask(), signatureTask(), attestationsTask()]);
  const seconds = Math.round(clock.now().getTime() - started) / 1000;
  options.logger?.info({ image: `${name}@${image.digest}`, ...digests, referrersTag, bytesPushed, seconds }, "attestations attached");
  return { digests, ...(referrersTag ? { referrersTag } : {}), bytesPushed, seconds };
}
