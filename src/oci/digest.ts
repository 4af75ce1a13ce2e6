import { createHash } from "node:crypto";

/** An OCI content digest of the only algorithm we produce and accept: `sha256:<64 lowercase hex>`. */
export type Digest = `sha256:${string}`;

const digestPattern = /^sha256:[0-9a-f]{64}$/;

export function isDigest(value: unknown): value is Digest {
  return typeof value === "string" && digestPattern.test(value);
}

/** Throws (without echoing anything but a length) unless `value` is a sha256 digest. */
export function assertDigest(value: unknown, what = "digest"): Digest {
  if (!isDigest(value)) {
    const shape = typeof value === "string" ? `a string of ${value.length} characters` : typeof value;
    throw new Error(`${what} is not a sha256 digest (got ${shape})`);
  }
  return value;
}

/** sha256 of exactly these bytes, as an OCI digest. */
export function sha256Digest(bytes: Uint8Array | string): Digest {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}
