// PURE: the tags an image is pushed under. Every push gets an immutable tag derived from the
// locked source revision and the built out path, `rev-<12 hex of the commit>-<8 of the out path
// hash>` (or `nar-<12 hex of sha256(narHash)>-<8>` for sources without a commit, e.g. tarballs),
// plus the tags the user asked for. The out path hash part tells builds of different attributes
// (or Nix settings) of one revision apart.
// With rollout.policy Disabled (an image updater picks the tag) there is also a tag that sorts by
// build time, `<YYYYMMDDHHMMSS UTC of the controller's build decision>-<12 hex of the commit>`:
// a later build always sorts after an earlier one, also a build of an older commit (a revert by
// force-push) and also after the NixImage was deleted and created again (a build number would
// start over). Flux ImagePolicy: numerical order on the extracted timestamp; Argo CD Image
// Updater: alphabetical ("name") order with an allow-tags regexp.
import { createHash } from "node:crypto";
import { isValidTag } from "../oci/image-reference.ts";
import type { Revision } from "./step-files.ts";

export class TagError extends Error {
  override name = "TagError";
}

/** The 32-character hash part of `/nix/store/<hash>-<name>`. */
function storePathHash(outPath: string): string {
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

function sourcePart(revision: Pick<Revision, "rev" | "narHash">): string {
  if (revision.rev !== undefined && /^[0-9a-f]{40}$/.test(revision.rev)) return revision.rev.slice(0, 12);
  return `nar${createHash("sha256").update(revision.narHash).digest("hex").slice(0, 12)}`;
}

/** Matches sortable tags (for image updaters' filters; the timestamp is group 1). */
export const SORTABLE_TAG_PATTERN = "^([0-9]{14})-(?:[0-9a-f]{12}|nar[0-9a-f]{12})$";

/** `<YYYYMMDDHHMMSS>-<source>` from an RFC 3339 time (UTC). */
export function sortableTag(at: string, revision: Pick<Revision, "rev" | "narHash">): string {
  const ms = Date.parse(at);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(at) || Number.isNaN(ms)) throw new TagError(`${JSON.stringify(at.slice(0, 64))} is not an RFC 3339 time`);
  const stamp = new Date(ms)
    .toISOString()
    .replace(/\.\d+Z$/, "")
    .replace(/[-:T]/g, "");
  return `${stamp}-${sourcePart(revision)}`;
}

export interface ImageTagOptions {
  /** The build's time (RFC 3339): adds the sortable tag (rollout.policy Disabled). */
  sortableAt?: string;
}

/** The immutable tag first, then the sortable one when asked for, then the requested ones (validated, duplicates dropped). */
export function imageTags(
  revision: Pick<Revision, "rev" | "narHash">,
  outPath: string,
  requested: readonly string[] = [],
  options: ImageTagOptions = {},
): string[] {
  for (const t of requested) {
    if (!isValidTag(t)) throw new TagError(`invalid tag ${JSON.stringify(t.slice(0, 200))}: letters, digits, _ . - (up to 128, not starting with . or -)`);
  }
  const sortable = options.sortableAt !== undefined ? [sortableTag(options.sortableAt, revision)] : [];
  return [...new Set([immutableTag(revision, outPath), ...sortable, ...requested])];
}
