// Refuses a store whose closure does not verify (issue 12, item 2): store volumes are shared by the
// NixImages of a namespace and outlive builds, so before a closure is pushed every path in it is
// re-hashed and compared with the NAR hash Nix registered (`nix store verify --no-trust`: contents
// only; signatures were checked when paths were substituted). A path changed after registration
// (a tampered or damaged volume) stops the build instead of going into an image.
import type { NixCommand } from "./nix-command.ts";
import { NixError } from "./nix-error.ts";

export interface VerifyClosureOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Throws NixError (kind `store-corrupted`) naming the paths that do not match their registered hash. */
export async function verifyClosure(nix: NixCommand, paths: readonly string[], options: VerifyClosureOptions = {}): Promise<void> {
  if (paths.length === 0) return;
  const what = `verify the closure (${paths.length} store paths)`;
  try {
    await nix.run(["store", "verify", "--no-trust", "--", ...paths], {
      what,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
  } catch (e) {
    if (!(e instanceof NixError) || e.kind === "aborted" || e.kind === "timeout" || e.kind === "nix-not-found") throw e;
    const text = [e.reason, ...e.logTail].join("\n");
    const modified = [...new Set([...text.matchAll(/path '(\/nix\/store\/[^']+)' was modified/g)].map((m) => m[1]!))];
    throw new NixError({
      kind: "store-corrupted",
      what,
      reason: modified.length
        ? `${modified.slice(0, 5).join(", ")}${modified.length > 5 ? ` and ${modified.length - 5} more` : ""} changed after Nix registered ${modified.length === 1 ? "it" : "them"} (content hash mismatch)`
        : e.reason,
      hint: "The store volume was tampered with or damaged; nothing was pushed. Delete the store volume (its PVC) so the next build starts from a fresh store.",
      ...(e.command !== undefined ? { command: e.command } : {}),
      ...(e.exitCode !== undefined ? { exitCode: e.exitCode } : {}),
      cause: e,
    });
  }
}
