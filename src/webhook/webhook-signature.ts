// PURE: is a webhook delivery from the forge that knows our shared secret? Each forge proves it
// its own way; every comparison is constant-time, and nothing here ever logs or returns the secret.
//   GitHub          X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>
//   Gitea/Forgejo   X-Gitea-Signature / X-Forgejo-Signature: <hex HMAC-SHA256(secret, raw body)>
//   GitLab          X-Gitlab-Token: <the secret itself> (GitLab signs nothing; TLS protects it)
import { createHash, createHmac, timingSafeEqual } from "node:crypto";

/** HMAC-SHA256 of `body` under `secret`, as the forges compute it (lower-case hex). */
export function hmacSha256Hex(secret: string | Buffer, body: Buffer): string {
  return createHmac("sha256", secret).update(body).digest("hex");
}

/** `given` is the hex HMAC of `body` (an optional `sha256=` prefix stripped by the caller). */
export function verifyHmacHex(secret: string | Buffer, body: Buffer, given: string | undefined): boolean {
  if (given === undefined || !/^[0-9a-fA-F]{64}$/.test(given)) return false;
  const expected = createHmac("sha256", secret).update(body).digest();
  return timingSafeEqual(expected, Buffer.from(given, "hex"));
}

/** GitHub's `sha256=<hex>` header. */
export function verifyGitHubSignature(secret: string | Buffer, body: Buffer, header: string | undefined): boolean {
  if (header === undefined || !header.startsWith("sha256=")) return false;
  return verifyHmacHex(secret, body, header.slice("sha256=".length));
}

/**
 * GitLab's token header: compared as SHA-256 digests, so the comparison takes the same time
 * whatever the lengths of the two strings.
 */
export function verifyGitLabToken(secret: string | Buffer, header: string | undefined): boolean {
  if (header === undefined || header === "") return false;
  const digest = (s: string | Buffer) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(secret), digest(header));
}
