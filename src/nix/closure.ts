// The closure of built paths with references and NAR sizes: `nix path-info --json -r -- <paths>`.
// Parsing (array in Nix <= 2.18, object from 2.19) lives in src/image/path-info.ts and is reused.
import { parsePathInfoText, PathInfoError, type ClosurePath } from "../image/path-info.ts";
import type { NixCommand, NixRunOptions } from "./nix-command.ts";
import { NixError } from "./nix-error.ts";

export type { ClosurePath };

export interface QueryClosureOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Every store path `paths` depend on (themselves included), sorted by path. */
export async function queryClosure(nix: NixCommand, paths: readonly string[], options: QueryClosureOptions = {}): Promise<ClosurePath[]> {
  if (paths.length === 0) return [];
  for (const p of paths) {
    if (!p.startsWith("/") || /[\s\0]/.test(p)) {
      throw new NixError({
        kind: "invalid-settings",
        what: "query closure",
        reason: `${JSON.stringify(p.slice(0, 200))} is not a store path`,
        hint: "Pass store paths from nix build.",
      });
    }
  }
  const what = `query closure of ${paths.length === 1 ? paths[0] : `${paths.length} paths`}`;
  const run: NixRunOptions = { what };
  if (options.signal) run.signal = options.signal;
  if (options.timeoutMs !== undefined) run.timeoutMs = options.timeoutMs;
  const result = await nix.run(["path-info", "--json", "--recursive", "--", ...paths], run);
  try {
    return parsePathInfoText(result.stdout);
  } catch (e) {
    if (e instanceof PathInfoError) {
      throw new NixError({ kind: "invalid-output", what, reason: e.message, hint: "Use a supported builder image (Nix >= 2.8).", cause: e });
    }
    throw e;
  }
}

/** Sum of NAR sizes: close to the bytes of the uncompressed layers made from the closure. */
export function closureNarSize(closure: readonly ClosurePath[]): number {
  let total = 0;
  for (const p of closure) total += p.narSize;
  return total;
}
