// Runs `nix` / `nix-store` for untrusted flakes: argv arrays only (never a shell string), a fixed
// set of safety options on every call, an environment reduced to what Nix needs, stderr parsed
// (`--log-format internal-json`) into progress callbacks, and failures turned into NixError with
// Nix's own reason and a hint.
//
// Safety options (design §6), always passed on the command line, so they win over nix.conf and
// NIX_CONFIG:
//   accept-flake-config = false           a flake's nixConfig cannot change settings
//   flake-registry = ""                   no global registry: indirect refs (`nixpkgs`) fail
//   sandbox-fallback = false              no silent unsandboxed build when the sandbox is unavailable
//   allow-import-from-derivation = false  unless enabled for the NixImage
// plus `extra-substituters` / `extra-trusted-public-keys` only from the two allowlisted spec
// fields (validated again here), and `extra-experimental-features = nix-command flakes`.
import { spawn } from "node:child_process";
import type { Logger } from "../log/logger.ts";
import { classifyNixFailure, NixError, redactUrlCredentials } from "./nix-error.ts";
import { NixLogParser, type NixProgress } from "./nix-log.ts";

export interface NixSettings {
  /** spec.build.allowImportFromDerivation; default false. */
  allowImportFromDerivation?: boolean;
  /** spec.build.nixConfig.substituters: https:// binary caches added to the configured ones. */
  extraSubstituters?: readonly string[];
  /** spec.build.nixConfig.trustedPublicKeys: `name:base64key`. */
  extraTrustedPublicKeys?: readonly string[];
  /**
   * The operator's cluster binary cache (config.binaryCache.url, an admin setting): https://,
   * s3:// or http:// (signatures are checked either way). Builds fall back to building when it
   * is unreachable: an optional cache never fails a build.
   */
  clusterSubstituters?: readonly string[];
}

/**
 * Environment variables passed through to Nix from the base environment; everything else (and so
 * any secret the operator process might hold) is dropped.
 */
const passthroughEnv: readonly string[] = [
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "TMPDIR",
  "LANG",
  "LC_ALL",
  "TZ",
  "NIX_REMOTE",
  "NIX_CONF_DIR",
  "NIX_USER_CONF_FILES",
  "NIX_CONFIG",
  "NIX_STORE_DIR",
  "NIX_STATE_DIR",
  "NIX_LOG_DIR",
  "NIX_SSL_CERT_FILE",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "GIT_SSL_CAINFO",
  "GIT_SSH_COMMAND",
  "XDG_CACHE_HOME",
  "XDG_CONFIG_HOME",
  "XDG_DATA_HOME",
  "XDG_STATE_HOME",
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "ALL_PROXY",
];

export interface NixCommandOptions {
  /** Default "nix" (found on PATH). */
  nixBin?: string;
  /** Default "nix-store". */
  nixStoreBin?: string;
  /** Where passthrough variables are taken from; default process.env. */
  baseEnv?: NodeJS.ProcessEnv;
  /** Set as-is after filtering (e.g. the test bed's NIX_CONF_DIR); must not hold secrets. */
  extraEnv?: Readonly<Record<string, string>>;
  settings?: NixSettings;
  logger?: Logger;
  /** SIGTERM first, SIGKILL after this long. Default 10 s. */
  killGraceMs?: number;
  /** A command printing more than this on stdout is killed. Default 256 MiB. */
  maxStdoutBytes?: number;
  /** Minimum time between two progress callbacks (phase changes are always reported). Default 500 ms. */
  progressIntervalMs?: number;
}

export interface NixRunOptions {
  /** The step in words for errors and logs: "lock flake github:acme/shop", "build ...#web". */
  what: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  onProgress?: (progress: NixProgress) => void;
  /** Every builder log line, with the derivation's store path when known. */
  onBuildLog?: (line: string, drvPath: string | undefined) => void;
}

export interface NixRunResult {
  stdout: string;
  /** The final progress snapshot. */
  progress: NixProgress;
  warnings: string[];
  durationMs: number;
}

const substituterPattern = /^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$/;
const clusterSubstituterPattern = /^(https|http|s3):\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[A-Za-z0-9._~!$&'()*+,;=:%/-]*)?(\?[A-Za-z0-9._~!$&'()*+,;=:%/?-]*)?$/;
const publicKeyPattern = /^[A-Za-z0-9._-]{1,100}:[A-Za-z0-9+/]{20,100}={0,2}$/;

/** The options every call gets, in order. Exported for tests and for display. */
export function safetyArgs(settings: NixSettings = {}): string[] {
  const args = [
    "--option",
    "extra-experimental-features",
    "nix-command flakes",
    "--option",
    "accept-flake-config",
    "false",
    "--option",
    "flake-registry",
    "",
    "--option",
    "sandbox-fallback",
    "false",
    "--option",
    "allow-import-from-derivation",
    settings.allowImportFromDerivation === true ? "true" : "false",
  ];
  const subs = settings.extraSubstituters ?? [];
  const keys = settings.extraTrustedPublicKeys ?? [];
  for (const s of subs) {
    if (!substituterPattern.test(s)) {
      throw new NixError({
        kind: "invalid-settings",
        what: "configure Nix",
        reason: `substituter ${JSON.stringify(s.slice(0, 200))} is not an https:// binary cache URL`,
        hint: "Only https:// substituter URLs without spaces or credentials are accepted in spec.build.nixConfig.substituters.",
      });
    }
  }
  for (const k of keys) {
    if (!publicKeyPattern.test(k)) {
      throw new NixError({
        kind: "invalid-settings",
        what: "configure Nix",
        reason: `trusted public key ${JSON.stringify(k.slice(0, 120))} is not of the form name:base64key`,
        hint: "Use keys like cache.example.org-1:AbCd...= in spec.build.nixConfig.trustedPublicKeys.",
      });
    }
  }
  const cluster = settings.clusterSubstituters ?? [];
  for (const s of cluster) {
    if (!clusterSubstituterPattern.test(s)) {
      throw new NixError({
        kind: "invalid-settings",
        what: "configure Nix",
        reason: `cluster binary cache ${JSON.stringify(s.slice(0, 200))} is not an https://, s3:// or http:// URL without credentials`,
        hint: "Fix config.binaryCache.url in the operator config; credentials go in config.binaryCache.credentialsSecret.",
      });
    }
  }
  if (cluster.length > 0) args.push("--option", "fallback", "true");
  const allSubs = [...subs, ...cluster];
  if (allSubs.length > 0) args.push("--option", "extra-substituters", allSubs.join(" "));
  if (keys.length > 0) args.push("--option", "extra-trusted-public-keys", keys.join(" "));
  return args;
}

/** The environment a Nix child process gets: passthrough variables only, then `extra`. */
export function nixEnvironment(base: NodeJS.ProcessEnv, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of passthroughEnv) {
    const v = base[name];
    if (v !== undefined) env[name] = v;
  }
  Object.assign(env, extra);
  // Colour codes only make error messages harder to read.
  env.NO_COLOR = "1";
  env.TERM = "dumb";
  if (env.PATH === undefined) env.PATH = "/usr/local/bin:/usr/bin:/bin";
  return env;
}

/** Quotes an argv for display in logs and errors (never executed). */
export function displayArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_./:=@+,#%^-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}

export class NixCommand {
  readonly nixBin: string;
  readonly nixStoreBin: string;
  readonly settings: NixSettings;
  private readonly env: Record<string, string>;
  private readonly logger: Logger | undefined;
  private readonly killGraceMs: number;
  private readonly maxStdoutBytes: number;
  private readonly progressIntervalMs: number;
  private readonly safety: string[];

  constructor(options: NixCommandOptions = {}) {
    this.nixBin = options.nixBin ?? "nix";
    this.nixStoreBin = options.nixStoreBin ?? "nix-store";
    this.settings = { ...options.settings };
    this.env = nixEnvironment(options.baseEnv ?? process.env, options.extraEnv);
    this.logger = options.logger;
    this.killGraceMs = options.killGraceMs ?? 10_000;
    this.maxStdoutBytes = options.maxStdoutBytes ?? 256 * 1024 * 1024;
    this.progressIntervalMs = options.progressIntervalMs ?? 500;
    this.safety = safetyArgs(this.settings); // validates once, early
  }

  /** The full argv of `nix <args>` as it would be run. */
  nixArgv(args: readonly string[]): string[] {
    return ["--log-format", "internal-json", ...this.safety, ...args];
  }

  /** `nix <safety options> <args>`, e.g. `run(["build", "--json", "--no-link", ref], {...})`. */
  run(args: readonly string[], options: NixRunOptions): Promise<NixRunResult> {
    return this.exec(this.nixBin, this.nixArgv(args), options);
  }

  /** `nix-store <safety options> <args>` (legacy CLI; same options and log format). */
  runStore(args: readonly string[], options: NixRunOptions): Promise<NixRunResult> {
    return this.exec(this.nixStoreBin, ["--log-format", "internal-json", ...this.safety, ...args], options);
  }

  private exec(bin: string, argv: string[], options: NixRunOptions): Promise<NixRunResult> {
    const command = redactUrlCredentials(displayArgv([bin, ...argv]));
    const started = Date.now();
    const parser = new NixLogParser();
    const log = this.logger?.child({ nixCommand: options.what });
    log?.debug({ command }, "running nix");

    return new Promise<NixRunResult>((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(new NixError({ kind: "aborted", what: options.what, reason: "cancelled before it started", hint: "Nothing to do.", command }));
        return;
      }
      const child = spawn(bin, argv, { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
      const stdout: Buffer[] = [];
      let stdoutBytes = 0;
      let stderrRest = "";
      let stopReason: "timeout" | "aborted" | "stdout-limit" | undefined;
      let killTimer: NodeJS.Timeout | undefined;
      let lastProgressAt = 0;
      let lastPhase = "";
      let settled = false;

      const emitProgress = (force: boolean) => {
        if (!options.onProgress) return;
        const p = parser.progress();
        const now = Date.now();
        if (!force && p.phase === lastPhase && now - lastProgressAt < this.progressIntervalMs) return;
        lastProgressAt = now;
        lastPhase = p.phase;
        try {
          options.onProgress(p);
        } catch (e) {
          log?.warn({ err: e }, "progress callback threw");
        }
      };

      const stop = (reason: "timeout" | "aborted" | "stdout-limit") => {
        if (stopReason !== undefined || child.exitCode !== null) return;
        stopReason = reason;
        child.kill("SIGTERM");
        killTimer = setTimeout(() => child.kill("SIGKILL"), this.killGraceMs);
        killTimer.unref();
      };
      const onAbort = () => stop("aborted");
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const timeout = options.timeoutMs !== undefined ? setTimeout(() => stop("timeout"), options.timeoutMs) : undefined;

      const handleLine = (line: string) => {
        const ev = parser.feed(line);
        if (ev.kind === "build-log") {
          options.onBuildLog?.(redactUrlCredentials(ev.line), ev.drvPath);
        } else if (ev.kind === "message" && ev.level === 1) {
          log?.warn({ nixWarning: redactUrlCredentials(ev.text) }, "nix warning");
        }
        if (ev.kind !== "ignored") emitProgress(false);
      };

      child.stdout.on("data", (chunk: Buffer) => {
        stdoutBytes += chunk.length;
        if (stdoutBytes > this.maxStdoutBytes) {
          stop("stdout-limit");
          return;
        }
        stdout.push(chunk);
      });
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk: string) => {
        stderrRest += chunk;
        let nl: number;
        while ((nl = stderrRest.indexOf("\n")) >= 0) {
          handleLine(stderrRest.slice(0, nl));
          stderrRest = stderrRest.slice(nl + 1);
        }
        // A runaway line without newline must not grow without bound.
        if (stderrRest.length > 1024 * 1024) {
          handleLine(stderrRest.slice(0, 1024 * 1024));
          stderrRest = "";
        }
      });

      const finish = (err: NixError | undefined, result?: NixRunResult) => {
        if (settled) return;
        settled = true;
        if (timeout) clearTimeout(timeout);
        if (killTimer) clearTimeout(killTimer);
        options.signal?.removeEventListener("abort", onAbort);
        if (err) {
          log?.info({ command, kind: err.kind, exitCode: err.exitCode }, "nix failed");
          reject(err);
        } else if (result) {
          log?.debug({ command, durationMs: result.durationMs }, "nix done");
          resolve(result);
        }
      };

      child.on("error", (e: NodeJS.ErrnoException) => {
        const notFound = e.code === "ENOENT";
        finish(
          new NixError({
            kind: notFound ? "nix-not-found" : "unknown",
            what: options.what,
            reason: notFound ? `${bin} not found on PATH` : `could not run ${bin}: ${e.message}`,
            hint: notFound ? "Run the build step in an image with Nix installed (the builder image)." : "Check the builder image.",
            command,
            cause: e,
          }),
        );
      });

      child.on("close", (code, signal) => {
        if (stderrRest !== "") handleLine(stderrRest);
        emitProgress(true);
        const progress = parser.progress();
        const durationMs = Date.now() - started;
        if (stopReason !== undefined) {
          const reason =
            stopReason === "timeout"
              ? `no result within ${Math.round((options.timeoutMs ?? 0) / 1000)} s`
              : stopReason === "aborted"
                ? "cancelled"
                : `printed more than ${this.maxStdoutBytes} bytes on stdout`;
          finish(
            new NixError({
              kind: stopReason === "timeout" ? "timeout" : stopReason === "aborted" ? "aborted" : "invalid-output",
              what: options.what,
              reason: `${reason} (while ${progress.phase}${progress.runningBuilds.length ? `: ${progress.runningBuilds.join(", ")}` : ""})`,
              hint:
                stopReason === "timeout"
                  ? "Raise spec.build.timeout, or make the build faster (binary cache substituters, warm builds)."
                  : stopReason === "aborted"
                    ? "Nothing to do: the build was cancelled."
                    : "The command printed far more than expected; this is a bug or a hostile flake.",
              command,
              exitCode: code,
              signal,
              logTail: parser.textTail().map(redactUrlCredentials),
            }),
          );
          return;
        }
        if (code === 0) {
          finish(undefined, { stdout: Buffer.concat(stdout).toString("utf8"), progress, warnings: parser.warningsSeen(), durationMs });
          return;
        }
        const classified = classifyNixFailure(parser.errors(), parser.textTail(), !parser.realised());
        const logTail = (classified.drvPath !== undefined ? parser.buildLog(classified.drvPath) : parser.textTail()).map(redactUrlCredentials);
        const init: ConstructorParameters<typeof NixError>[0] = {
          kind: classified.kind,
          what: options.what,
          reason: classified.reason,
          hint: classified.hint,
          command,
          exitCode: code,
          signal,
          logTail,
        };
        if (classified.drvPath !== undefined) init.drvPath = classified.drvPath;
        finish(new NixError(init));
      });
    });
  }
}
