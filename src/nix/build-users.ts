// Builds must not run as root on a shared store (issue 12, item 2): Nix running as root drops to
// the `build-users-group` users for builders, which cannot change registered store paths or the
// database. A root Nix with that setting empty runs flake builders as root: refuse it when asked.
import type { NixCommand, NixRunOptions } from "./nix-command.ts";
import { NixError } from "./nix-error.ts";

/** The effective `build-users-group` (empty: builders run as the calling user). */
async function buildUsersGroup(nix: NixCommand, options: Pick<NixRunOptions, "signal" | "timeoutMs"> = {}): Promise<string> {
  const result = await nix.run(["show-config", "--json"], { what: "read the Nix configuration", ...options });
  let value: unknown;
  try {
    value = (JSON.parse(result.stdout) as Record<string, { value?: unknown } | undefined>)["build-users-group"]?.value;
  } catch {
    value = undefined;
  }
  if (typeof value !== "string") {
    throw new NixError({
      kind: "invalid-output",
      what: "read the Nix configuration",
      reason: "nix show-config --json has no build-users-group",
      hint: "Use a supported builder image (Nix >= 2.8).",
    });
  }
  return value.trim();
}

/**
 * Throws when this process is root and Nix would run builders as root (no build users). The
 * message says how to configure the builder image.
 */
export async function requireBuildUsers(nix: NixCommand, uid: number | undefined, options: Pick<NixRunOptions, "signal" | "timeoutMs"> = {}): Promise<void> {
  if (uid !== 0) return;
  if ((await buildUsersGroup(nix, options)) !== "") return;
  throw new NixError({
    kind: "invalid-settings",
    what: "check Nix build users",
    reason: "Nix runs as root with build-users-group empty, so flake builders would run as root on the shared store volume",
    hint: "Use a builder image whose nix.conf sets build-users-group = nixbld with nixbld users (the default builder image does), or set config.builder.buildCapabilities to [] for a single-user image, which turns this check off.",
  });
}
