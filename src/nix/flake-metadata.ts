// Locks a flake ref: `nix flake metadata --json --refresh <ref>` resolves a branch/tag to a
// revision and gives the locked URL to build from, so that resolving and building see the same
// source even when the branch moves in between.
//
// Output fields used (Nix 2.8 seen; same names in later releases): `url` (the locked URL, with
// `rev=`), `originalUrl`, `resolvedUrl`, `revision`, `revCount`, `lastModified`, `locked.narHash`,
// `path` (the source's store path). Nix >= 2.20 also prints `lockedUrl`; it wins when present.
import { lockedInputs, type LockedInput } from "./flake-lock-inputs.ts";
import type { NixCommand } from "./nix-command.ts";
import { NixError } from "./nix-error.ts";
import type { NixProgress } from "./nix-log.ts";

export interface LockedFlake {
  /** Locked URL (pinned revision) to build from: `${url}#${attribute}`. */
  url: string;
  /** The ref as given (normalised by Nix). */
  originalUrl: string;
  resolvedUrl?: string;
  /** Git/Mercurial revision; absent for tarball sources. */
  rev?: string;
  revCount?: number;
  /** Seconds since the epoch of the revision (commit time), 0 when unknown. */
  lastModified: number;
  /** `sha256-<base64>` of the source tree. */
  narHash: string;
  /** Store path of the fetched source. */
  sourcePath?: string;
  /** Nix's `locked` attribute set (type, owner/repo or url, rev, narHash, ...). */
  locked: Record<string, unknown>;
  /** Every input of the flake's lock (transitive ones too), for the provenance. */
  inputs: LockedInput[];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optString(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function invalid(reason: string): NixError {
  return new NixError({
    kind: "invalid-output",
    what: "read flake metadata",
    reason,
    hint: "This Nix version prints flake metadata in an unexpected shape; use a supported builder image.",
  });
}

/** PURE: the JSON `nix flake metadata --json` printed -> LockedFlake. */
export function parseFlakeMetadata(json: unknown): LockedFlake {
  if (!isRecord(json)) throw invalid("flake metadata is not a JSON object");
  const locked = isRecord(json.locked) ? json.locked : undefined;
  if (locked === undefined) throw invalid("flake metadata has no `locked` attribute");
  const url = optString(json.lockedUrl) ?? optString(json.url);
  if (url === undefined) throw invalid("flake metadata has no locked `url`");
  const narHash = optString(locked.narHash);
  if (narHash === undefined) throw invalid("flake metadata has no `locked.narHash`: the source was not locked");
  const originalUrl = optString(json.originalUrl) ?? url;
  const out: LockedFlake = {
    url,
    originalUrl,
    lastModified: typeof json.lastModified === "number" ? json.lastModified : typeof locked.lastModified === "number" ? locked.lastModified : 0,
    narHash,
    locked,
    inputs: lockedInputs(json.locks),
  };
  const resolved = optString(json.resolvedUrl);
  if (resolved !== undefined) out.resolvedUrl = resolved;
  const rev = optString(json.revision) ?? optString(locked.rev);
  if (rev !== undefined) out.rev = rev;
  const revCount = typeof json.revCount === "number" ? json.revCount : typeof locked.revCount === "number" ? locked.revCount : undefined;
  if (revCount !== undefined) out.revCount = revCount;
  const path = optString(json.path);
  if (path !== undefined) out.sourcePath = path;
  return out;
}

/**
 * Refuses refs that could be read as options or that carry a fragment. The flake ref policy
 * (src/flake) decides what is allowed; this is only the last check before argv.
 */
export function assertPlainFlakeRef(ref: string): void {
  if (ref === "" || ref.startsWith("-") || ref.includes("#") || /[\s\0]/.test(ref)) {
    throw new NixError({
      kind: "invalid-settings",
      what: "lock flake",
      reason: `flake ref ${JSON.stringify(ref.slice(0, 200))} is empty, starts with '-', has a fragment or whitespace`,
      hint: "Give spec.flake as a flake URL without `#attribute`; put the attribute in spec.attribute.",
    });
  }
}

export interface LockFlakeOptions {
  /** Re-fetch branch heads instead of trusting Nix's fetcher cache (`--refresh`). Default true. */
  refresh?: boolean;
  /** Lock inputs afresh, ignoring flake.lock (`--recreate-lock-file`); for warm builds. */
  updateInputs?: boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
  onProgress?: (p: NixProgress) => void;
}

/** Flags shared by every flake command: never write flake.lock into a source. */
export function lockFlags(options: { updateInputs?: boolean } = {}): string[] {
  return options.updateInputs === true ? ["--no-write-lock-file", "--recreate-lock-file"] : ["--no-write-lock-file"];
}

/** Resolves and locks `ref` (a flake URL without fragment). */
export async function lockFlake(nix: NixCommand, ref: string, options: LockFlakeOptions = {}): Promise<LockedFlake> {
  assertPlainFlakeRef(ref);
  const args = ["flake", "metadata", "--json", ...lockFlags(options)];
  if (options.refresh !== false) args.push("--refresh");
  args.push("--", ref);
  const run: Parameters<NixCommand["run"]>[1] = { what: `lock flake ${ref}` };
  if (options.signal) run.signal = options.signal;
  if (options.timeoutMs !== undefined) run.timeoutMs = options.timeoutMs;
  if (options.onProgress) run.onProgress = options.onProgress;
  const result = await nix.run(args, run);
  let json: unknown;
  try {
    json = JSON.parse(result.stdout);
  } catch {
    throw invalid(`nix flake metadata printed no valid JSON (${result.stdout.length} characters)`);
  }
  return parseFlakeMetadata(json);
}
