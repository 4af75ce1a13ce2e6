// PURE: the tags an image is pushed under. Every push gets an immutable tag derived from the
// locked source revision and the built out path, `rev-<12 hex of the commit>-<8 of the out path
// hash>` (or `nar-<12 hex of sha256(narHash)>-<8>` for sources without a commit, e.g. tarballs),
// plus the tags the user asked for. The out path hash part tells builds of different attributes
// (or Nix settings) of one revision apart.
import { createHash } from "node:crypto";
import { isValidTag } from "../oci/image-reference.ts";
import type { Revision } from "./step-files.ts";

export class TagError extends Error {
  override name = "TagError";
}

/** The 32-character hash part of `/nix/store/<hash>-<name>`. */
export function storePathHash(outPath: string): string {
  const m = /^\/nix\/store\/([0-9a-z]{32})-/.exec(outPath);
  if (!m) throw new TagError(`${JSON.stringify(outPath.slice(0, 200))} is not a store path`);
  return m[1]!;
}

export function immutableTag(revision: Pick<Revision, "rev" | "narHash">, outPath: string): string {
  const out = storePathHash(outPath).slice(0, 8);
  if (revision.rev !== undefined && /^[0-9a-f]{40}$/.test(revision.rev)) return `rev-${revision.rev.slice(0, 12)}-${out}`;
  const source = createHash("sha256").update(revision.narHash).digest("hex").slice(0, 12);
  return `nar-${source}-${out}`;
}

/** The immutable tag first, then the requested ones (validated, duplicates dropped). */
export function imageTags(revision: Pick<Revision, "rev" | "narHash">, outPath: string, requested: readonly string[] = []): string[] {
  for (const t of requested) {
    if (!isValidTag(t)) throw new TagError(`invalid tag ${JSON.stringify(t.slice(0, 200))}: letters, digits, _ . - (up to 128, not starting with . or -)`);
  }
  return [...new Set([immutableTag(revision, outPath), ...requested])];
}
