// Nix for the test bed: the machine's Nix (Debian nix-bin 2.8) with a test-owned configuration,
// so neither /etc/nix/nix.conf nor the user's config nor the network can change what tests see.
// Exposed as environment variables to merge into the env of any `nix` a test runs.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { run } from "./process.ts";

const nixSettings: Readonly<Record<string, string>> = {
  "experimental-features": "nix-command flakes",
  sandbox: "false",
  "sandbox-fallback": "false",
  substituters: "",
  "trusted-public-keys": "",
  "flake-registry": "",
  "accept-flake-config": "false",
  "allow-import-from-derivation": "false",
  // Builds run as the test user itself (root here), no nixbld group needed.
  "build-users-group": "",
  // Re-check git refs every time: tests push new commits to the same URL.
  "tarball-ttl": "0",
  "warn-dirty": "false",
  "connect-timeout": "5",
  fallback: "false",
  builders: "",
};

export interface NixEnv {
  /** Merge into the environment of every nix command: `{ ...process.env, ...env }`. */
  env: Record<string, string>;
  confFile: string;
  version: string;
  system: string;
}

export async function prepareNixEnv(dir: string): Promise<NixEnv> {
  await mkdir(join(dir, "cache"), { recursive: true });
  const text =
    Object.entries(nixSettings)
      .map(([k, v]) => `${k} = ${v}`.trimEnd())
      .join("\n") + "\n";
  const confFile = join(dir, "nix.conf");
  await writeFile(confFile, text);
  const env: Record<string, string> = {
    NIX_CONF_DIR: dir, // replaces /etc/nix/nix.conf
    NIX_USER_CONF_FILES: confFile, // replaces ~/.config/nix/nix.conf
    NIX_CONFIG: text, // and wins over anything else
    XDG_CACHE_HOME: join(dir, "cache"), // per-run fetcher caches (git clones, eval cache)
  };
  const fullEnv = { ...process.env, ...env };
  let version: string;
  try {
    const out = await run("nix", ["--version"], { env: fullEnv });
    version = /(\d+\.\d+(?:\.\d+)?)/.exec(out.stdout)?.[1] ?? out.stdout.trim();
  } catch (e) {
    throw new Error(`nix not found or not runnable: apt-get install nix-bin, or run scripts/setup.sh (${(e as Error).message})`);
  }
  let system: string;
  try {
    // Proves the store is usable by this user and the config parses.
    const out = await run("nix", ["eval", "--raw", "--impure", "--expr", "builtins.currentSystem"], { env: fullEnv });
    system = out.stdout.trim();
  } catch (e) {
    throw new Error(`nix ${version} cannot evaluate with the test-bed config (${confFile}): ${(e as Error).message}`);
  }
  return { env, confFile, version, system };
}
