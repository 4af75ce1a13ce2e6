// The builder Job's optional cache step (design.md section 10): after a successful build it copies
// the built closure to the cluster binary cache, signing it, so a cold store volume elsewhere
// substitutes instead of rebuilding. It holds the signing key (and upload credentials), runs no
// flake code (only `nix copy`), and reads from the build step's directory only the out path
// (validated as a store path by readStepFiles).
//
// A failed copy does not fail the build: the image is pushed either way, and a cache is an
// optimisation. The result says what happened.
import type { Logger } from "../log/logger.ts";
import type { NixCommand } from "../nix/nix-command.ts";
import { NixError, redactUrlCredentials } from "../nix/nix-error.ts";
import { readStepFiles } from "./step-files.ts";
import type { CacheStepResult } from "./step-results.ts";

export interface CacheStepOptions {
  /** The build step's directory. */
  from: string;
  /** Binary cache store URL (file://, https://, s3://, http://), store parameters allowed. */
  to: string;
  /** The file with the key from `nix key generate-secret`. */
  secretKeyFile: string;
  /** A netrc file with the upload credentials (https:// caches). */
  netrcFile?: string;
  nix: NixCommand;
  signal?: AbortSignal;
  logger?: Logger;
  timeoutMs?: number;
}

/** `url` with `name=value` added to its query (Nix store parameters). */
export function withStoreParameter(url: string, name: string, value: string): string {
  const [base, query] = url.split("?", 2) as [string, string | undefined];
  const params = new URLSearchParams(query ?? "");
  params.set(name, value);
  // Nix reads the query raw: keep slashes in paths readable.
  return `${base}?${params.toString().replace(/%2F/gi, "/")}`;
}

/**
 * The store URL `nix copy --to` gets: the signing key as a store parameter, and zstd compression
 * unless the URL picks one (Nix's default, xz, took 70 s for 64 MiB of incompressible data where
 * zstd took 1.2 s, on the test machine; Nix 2.8 and later substitute zstd NARs).
 */
export function uploadStoreUrl(to: string, secretKeyFile: string): string {
  const withCompression = /[?&]compression=/.test(to) ? to : withStoreParameter(to, "compression", "zstd");
  return withStoreParameter(withCompression, "secret-key", secretKeyFile);
}

export async function runCacheStep(options: CacheStepOptions): Promise<CacheStepResult> {
  const { result, closure } = await readStepFiles(options.from);
  const cache = redactUrlCredentials(options.to.split("?")[0]!);
  const started = performance.now();
  const target = uploadStoreUrl(options.to, options.secretKeyFile);
  const base = { cache, outPath: result.outPath, closurePaths: closure.length };
  try {
    const netrc = options.netrcFile !== undefined ? ["--option", "netrc-file", options.netrcFile] : [];
    await options.nix.run(["copy", ...netrc, "--to", target, result.outPath], {
      what: `copy ${result.outPath} to the binary cache ${cache}`,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
    const seconds = Math.round(performance.now() - started) / 1000;
    options.logger?.info({ ...base, seconds }, "closure copied to the binary cache");
    return { ...base, copied: true, seconds };
  } catch (error) {
    const seconds = Math.round(performance.now() - started) / 1000;
    // Nix's own reason (the hint of a failed build does not apply to a copy); the message names the
    // store URL without its query (where the key path would be).
    const reason = error instanceof NixError ? error.reason : (error as Error).message;
    const message = redactUrlCredentials(reason).replaceAll(target, cache);
    options.logger?.warn({ ...base, err: message }, "could not copy the closure to the binary cache; the build itself is fine");
    return { ...base, copied: false, seconds, error: message.slice(0, 2000) };
  }
}
