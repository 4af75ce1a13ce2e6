// PURE (given a key): the documents cosign reads from a registry, byte for byte in its formats, so
// that `cosign verify --key` and `cosign verify-attestation --key` accept what the push step signs.
//
//   image signature   the "simple signing" payload naming the manifest digest, signed with
//                     ECDSA-SHA256 (ASN.1 DER, base64 in a layer annotation), stored as a layer of
//                     an image manifest tagged `sha256-<hex>.sig`
//   attestations      in-toto statements in DSSE envelopes (the signature is over DSSE's PAE),
//                     one layer each, stored under `sha256-<hex>.att`
import { sign as cryptoSign, type KeyObject } from "node:crypto";

export const SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json";
export const DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json";
export const COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature";
const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";

/** cosign's tag for a signature / attestation / SBOM of `digest`: `sha256-<hex>.<suffix>`. */
export function cosignTag(digest: string, suffix: "sig" | "att"): string {
  return `${digest.replace(":", "-")}.${suffix}`;
}

/** The simple-signing payload for `<host>/<repository>` at `digest`. */
export function simpleSigningPayload(dockerReference: string, digest: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: { identity: { "docker-reference": dockerReference }, image: { "docker-manifest-digest": digest }, type: "cosign container image signature" },
      optional: null,
    }),
    "utf8",
  );
}

/** ECDSA-SHA256 signature (DER) of `bytes`, base64. */
export function signBytes(key: KeyObject, bytes: Buffer): string {
  return cryptoSign("sha256", bytes, key).toString("base64");
}

/** DSSE's pre-authentication encoding: what is actually signed. */
export function pae(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType, "utf8");
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `, "utf8"), type, Buffer.from(` ${payload.length} `, "utf8"), payload]);
}

/** A DSSE envelope of an in-toto statement, signed with `key`. */
export function dsseEnvelope(key: KeyObject, statement: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(statement), "utf8");
  const sig = signBytes(key, pae(IN_TOTO_PAYLOAD_TYPE, payload));
  return Buffer.from(JSON.stringify({ payloadType: IN_TOTO_PAYLOAD_TYPE, payload: payload.toString("base64"), signatures: [{ keyid: "", sig }] }), "utf8");
}
