// The builder Job's fetch step (design.md section 10): the ONLY step that holds the source
// credential (ssh key + known_hosts, netrc, Nix access tokens). It locks the flake ref and fetches
// the locked source and every locked input into the store (`nix flake archive`), then writes
// fetch.json for the build step, which builds from that store path without any credential.
//
// It evaluates no flake outputs and builds nothing: Nix reads flake.nix only for its inputs, with
// the safety options of every Nix call (no flake nixConfig, no registry, no import-from-derivation).
import { mkdir, readFile, stat, symlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.ts";
import { lockFlake, lockFlags, assertPlainFlakeRef, type LockedFlake } from "../nix/flake-metadata.ts";
import type { NixCommand } from "../nix/nix-command.ts";
import { silentProgress, type ProgressSink } from "./progress-reporter.ts";
import { storePathPattern, writeFetchResult, type FetchResult } from "./step-files.ts";

class FetchStepError extends Error {
  override name = "FetchStepError";
}

/** Files a credentials directory (a mounted Secret) may hold; each optional. */
const credentialFiles = {
  netrc: "netrc",
  accessTokens: "access-tokens",
  sshKey: "ssh-privatekey",
  knownHosts: "known_hosts",
} as const;

export interface SourceCredentials {
  /** The secret words in them (netrc passwords, tokens): redacted from any message. */
  secrets: string[];
  netrcFile?: string;
  /** Nix's `access-tokens` value: `host=token` words. */
  accessTokens?: string;
  sshKeyFile?: string;
  knownHostsFile?: string;
}

async function exists(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

/** Reads the credential files found in the given directories (later directories win). */
export async function readCredentialDirs(dirs: readonly string[]): Promise<SourceCredentials> {
  const found: SourceCredentials = { secrets: [] };
  for (const dir of dirs) {
    const f = (name: string) => join(dir, name);
    if (await exists(f(credentialFiles.netrc))) {
      found.netrcFile = f(credentialFiles.netrc);
      const words = (await readFile(found.netrcFile, "utf8")).split(/\s+/);
      words.forEach((w, i) => {
        if ((w === "password" || w === "account") && words[i + 1]) found.secrets.push(words[i + 1]!);
      });
    }
    if (await exists(f(credentialFiles.sshKey))) found.sshKeyFile = f(credentialFiles.sshKey);
    if (await exists(f(credentialFiles.knownHosts))) found.knownHostsFile = f(credentialFiles.knownHosts);
    if (await exists(f(credentialFiles.accessTokens))) {
      const words = (await readFile(f(credentialFiles.accessTokens), "utf8")).split(/\s+/).filter((w) => w !== "");
      // Never echo a token: say only which word is wrong.
      words.forEach((w, i) => {
        if (!/^[A-Za-z0-9.-]+(:\d+)?(\/[^\s=]*)?=\S+$/.test(w)) {
          throw new FetchStepError(`${credentialFiles.accessTokens}: word ${i + 1} is not host=token (Nix's access-tokens format, e.g. github.com=TOKEN)`);
        }
      });
      if (words.length > 0) found.accessTokens = words.join(" ");
      for (const w of words) found.secrets.push(w.slice(w.indexOf("=") + 1));
    }
  }
  if (found.sshKeyFile !== undefined && found.knownHostsFile === undefined) {
    throw new FetchStepError(
      `${credentialFiles.sshKey} without ${credentialFiles.knownHosts}: host keys are always checked; add the server's keys (ssh-keyscan HOST) to the Secret as ${credentialFiles.knownHosts}`,
    );
  }
  return found;
}

/**
 * The environment that hands the credential to Nix and the git it runs, for the fetch step's Nix
 * only: HOME is a directory of this step (git and curl read $HOME/.netrc), ssh checks host keys
 * against known_hosts only, and git never prompts.
 */
export async function credentialEnvironment(credentials: SourceCredentials, home: string, baseNixConfig = ""): Promise<Record<string, string>> {
  await mkdir(home, { recursive: true, mode: 0o700 });
  const env: Record<string, string> = { HOME: home, GIT_TERMINAL_PROMPT: "0", GIT_ASKPASS: "/bin/false", SSH_ASKPASS: "/bin/false" };
  const config = [baseNixConfig.trimEnd()];
  if (credentials.netrcFile !== undefined) {
    // git's curl reads $HOME/.netrc; Nix's own downloads (tarballs, forge APIs) read netrc-file.
    await symlink(credentials.netrcFile, join(home, ".netrc")).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e;
    });
    config.push(`netrc-file = ${credentials.netrcFile}`);
  }
  if (credentials.accessTokens !== undefined) config.push(`access-tokens = ${credentials.accessTokens}`);
  if (credentials.sshKeyFile !== undefined && credentials.knownHostsFile !== undefined) {
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    env.GIT_SSH_COMMAND = [
      "ssh",
      "-F",
      "/dev/null",
      "-i",
      q(credentials.sshKeyFile),
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      `UserKnownHostsFile=${q(credentials.knownHostsFile)}`,
      "-o",
      "BatchMode=yes",
    ].join(" ");
  }
  env.NIX_CONFIG = `${config.filter((l) => l !== "").join("\n")}\n`;
  return env;
}

/** PURE: store paths of `nix flake archive --json` output ({path, inputs: {name: {path, inputs}}}). */
export function archivedPaths(json: unknown): { path: string; inputs: string[] } {
  const inputs = new Set<string>();
  const walk = (node: unknown): void => {
    if (typeof node !== "object" || node === null) return;
    const n = node as { path?: unknown; inputs?: unknown };
    if (typeof n.inputs !== "object" || n.inputs === null) return;
    for (const child of Object.values(n.inputs as Record<string, unknown>)) {
      const p = (child as { path?: unknown }).path;
      if (typeof p === "string" && storePathPattern.test(p)) inputs.add(p);
      walk(child);
    }
  };
  const top = (json as { path?: unknown } | null)?.path;
  if (typeof top !== "string" || !storePathPattern.test(top)) throw new FetchStepError("nix flake archive printed no source store path");
  walk(json);
  return { path: top, inputs: [...inputs].sort() };
}

/**
 * PURE: the ref the build step builds from: the fetched source in the store as a `path:` flake
 * with the revision's attributes, so `self.rev`, `self.lastModified` and `self.revCount` are what
 * they would be from the original URL, and Nix needs no network (nor credential) for it. Its
 * locked inputs are found in the store by their NAR hashes.
 */
export function storeBuildRef(fetched: FetchResult): string {
  const q = new URLSearchParams();
  q.set("narHash", fetched.revision.narHash);
  q.set("lastModified", String(fetched.revision.lastModified));
  if (fetched.revision.rev !== undefined) q.set("rev", fetched.revision.rev);
  if (fetched.revCount !== undefined) q.set("revCount", String(fetched.revCount));
  return `path:${fetched.sourcePath}?${q.toString()}`;
}

export interface FetchStepOptions {
  nix: NixCommand;
  flake: string;
  outDir: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  progress?: ProgressSink;
  logger?: Logger;
}

function secondsSince(start: number): number {
  return Math.round(performance.now() - start) / 1000;
}

export async function runFetchStep(options: FetchStepOptions): Promise<FetchResult> {
  const progress = options.progress ?? silentProgress;
  assertPlainFlakeRef(options.flake);
  const common = {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    onProgress: (p: Parameters<ProgressSink["nix"]>[0]) => progress.nix(p),
  };
  const started = performance.now();
  const seconds: Record<string, number> = {};
  progress.phase("lock", options.flake);
  let t = performance.now();
  const locked: LockedFlake = await lockFlake(options.nix, options.flake, common);
  seconds.fetchLock = secondsSince(t);
  if (locked.sourcePath === undefined || !storePathPattern.test(locked.sourcePath)) {
    throw new FetchStepError(`nix flake metadata gave no store path for ${options.flake}`);
  }

  progress.phase("fetch", "the locked flake and its inputs");
  t = performance.now();
  const run: Parameters<NixCommand["run"]>[1] = { what: `fetch the inputs of ${locked.url}`, ...common };
  const archived = await options.nix.run(["flake", "archive", "--json", ...lockFlags(), "--", locked.url], run);
  let json: unknown;
  try {
    json = JSON.parse(archived.stdout);
  } catch {
    throw new FetchStepError(`nix flake archive printed no valid JSON (${archived.stdout.length} characters)`);
  }
  const paths = archivedPaths(json);
  seconds.fetchInputs = secondsSince(t);
  if (paths.path !== locked.sourcePath) throw new FetchStepError(`nix flake archive fetched ${paths.path}, not the locked source ${locked.sourcePath}`);
  seconds.fetch = secondsSince(started);
  options.logger?.info({ flake: options.flake, rev: locked.rev, inputs: paths.inputs.length }, "fetched the flake and its inputs");

  const result: FetchResult = {
    version: 1,
    flake: options.flake,
    revision: { url: locked.url, lastModified: locked.lastModified, narHash: locked.narHash, ...(locked.rev !== undefined ? { rev: locked.rev } : {}) },
    sourcePath: locked.sourcePath,
    inputPaths: paths.inputs,
    seconds,
  };
  if (locked.revCount !== undefined) result.revCount = locked.revCount;
  await mkdir(options.outDir, { recursive: true });
  await writeFetchResult(options.outDir, result);
  return result;
}

/** Failures of the source's server or the network that may pass on a later try (the controller retries those builds). */
const transientFetch =
  /Could not resolve host|Couldn't resolve|Couldn't connect|Failed to connect|Connection (reset|refused|timed out)|timed out|HTTP error 5\d\d|returned error: 5\d\d|The requested URL returned error: (429|5\d\d)|early EOF|unexpected disconnect/i;

/** PURE: whether a fetch failure's message says it may pass. */
export function isTransientFetchFailure(message: string): boolean {
  return transientFetch.test(message);
}
