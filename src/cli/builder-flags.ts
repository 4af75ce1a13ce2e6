// Flags and helpers shared by the builder commands (build, build-step, push-step, prepare-store):
// strict value parsing with messages that name the flag, the push target's flags, the image
// settings, and one way to report a failure (stderr + termination message + exit code 1).
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { imageConfigSchema } from "../api/niximage.ts";
import { parseDuration } from "../api/duration.ts";
import { describeZodError } from "../api/describe-issues.ts";
import { errorMessage, FlakeRefDeniedError, shortErrorMessage } from "../builder/error-message.ts";
import { checkFlakeRef, type FlakeRefPolicy } from "../flake/flake-ref-policy.ts";
import { fromSpecConfig, mergeImageConfig } from "../builder/image-config.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import type { ProgressSink } from "../builder/progress-reporter.ts";
import { DirectoryLayerCache, noLayerCache, type LayerCache } from "../image/layer-cache.ts";
import type { ImageFormat } from "../image/formats/format-error.ts";
import type { Logger } from "../log/logger.ts";
import { NixCommand } from "../nix/nix-command.ts";
import type { ImageRuntimeConfig, LayerCompression } from "../oci/image-manifest.ts";
import { UsageError, type CommandContext } from "./command.ts";
import { loadSigningKey, type SigningKey } from "../attest/signing-key.ts";
import type { PushAttestOptions } from "../builder/push-step.ts";
import packageJson from "../../package.json" with { type: "json" };

const formatChoices = ["auto", "package", "docker-archive", "stream-layered", "nix2container"] as const;

/** Flags of every command that pushes. */
export const pushFlags = {
  image: { type: "string" },
  tag: { type: "string", multiple: true },
  "auth-file": { type: "string" },
  "plain-http": { type: "boolean" },
  "ca-file": { type: "string" },
  "max-layers": { type: "string" },
  compression: { type: "string" },
  "image-config": { type: "string" },
  "layer-cache": { type: "string" },
  "on-cache-miss": { type: "string" },
  config: { type: "string" },
  json: { type: "boolean" },
  "no-sbom": { type: "boolean" },
  "no-provenance": { type: "boolean" },
  "sign-key": { type: "string" },
  "sign-key-password-file": { type: "string" },
  "builder-image": { type: "string" },
  job: { type: "string" },
} as const;

export function positiveInt(flag: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value) || Number(value) < min || Number(value) > max)
    throw new UsageError(`${flag} must be an integer from ${min} to ${max} (got ${JSON.stringify(value.slice(0, 50))})`);
  return Number(value);
}

/** `--timeout` and the like: a duration such as 30s or 1h30m, in milliseconds. */
export function durationFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value);
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}

export function oneOf<T extends string>(flag: string, value: string | undefined, choices: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(choices as readonly string[]).includes(value))
    throw new UsageError(`${flag} must be one of ${choices.join(", ")} (got ${JSON.stringify(value.slice(0, 50))})`);
  return value as T;
}

export function parseFormat(value: string | undefined): ImageFormat | "auto" {
  return oneOf("--format", value, formatChoices) ?? "auto";
}

export function parseCompression(value: string | undefined): LayerCompression | undefined {
  return oneOf("--compression", value, ["none", "gzip"] as const);
}

/** `--image-config` JSON in the shape of spec.image.config. */
export function parseImageConfigJson(text: string | undefined): ImageRuntimeConfig {
  if (text === undefined) return {};
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`--image-config is not valid JSON (${text.length} characters)`);
  }
  const parsed = imageConfigSchema.safeParse(json);
  if (!parsed.success) throw new UsageError(`--image-config: ${describeZodError(parsed.error).join("; ")}`);
  return fromSpecConfig(parsed.data);
}

function keyValues(flag: string, values: readonly string[] | undefined): Array<[string, string]> {
  return (values ?? []).map((kv) => {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`${flag} must look like NAME=value (got ${JSON.stringify(kv.slice(0, 50))})`);
    return [kv.slice(0, eq), kv.slice(eq + 1)];
  });
}

/** The image settings of `build`: --image-config, then the single flags on top. */
export function imageConfigFromFlags(values: {
  "image-config"?: string | undefined;
  entrypoint?: string[] | undefined;
  cmd?: string[] | undefined;
  env?: string[] | undefined;
  workdir?: string | undefined;
  user?: string | undefined;
  expose?: string[] | undefined;
  label?: string[] | undefined;
}): ImageRuntimeConfig {
  const base = parseImageConfigJson(values["image-config"]);
  const flags: ImageRuntimeConfig = {};
  if (values.entrypoint !== undefined) flags.entrypoint = values.entrypoint;
  if (values.cmd !== undefined) flags.cmd = values.cmd;
  if (values.env !== undefined) flags.env = keyValues("--env", values.env).map(([k, v]) => `${k}=${v}`);
  if (values.workdir !== undefined) flags.workingDir = values.workdir;
  if (values.user !== undefined) flags.user = values.user;
  if (values.expose !== undefined) flags.exposedPorts = values.expose;
  if (values.label !== undefined) flags.labels = Object.fromEntries(keyValues("--label", values.label));
  const spec = imageConfigSchema.safeParse({
    ...(flags.env ? { env: keyValues("--env", values.env).map(([name, value]) => ({ name, value })) } : {}),
    ...(flags.user ? { user: flags.user } : {}),
    ...(flags.exposedPorts ? { exposedPorts: flags.exposedPorts } : {}),
  });
  if (!spec.success) throw new UsageError(describeZodError(spec.error).join("; "));
  return mergeImageConfig(base, flags);
}

/** Throws FlakeRefDeniedError when the policy does not allow `ref` (an ssh key is assumed to exist). */
export function checkRefAllowed(ref: string, policy: FlakeRefPolicy): void {
  const verdict = checkFlakeRef(ref, policy, { hasSshKey: true });
  if (!verdict.ok) throw new FlakeRefDeniedError(verdict.code, verdict.reason);
}

/**
 * Where `build` keeps its layer cache unless told otherwise: $NIX_IMAGE_OPERATOR_CACHE, else
 * $XDG_CACHE_HOME/nix-image-operator/layers, else ~/.cache/nix-image-operator/layers.
 */
export function defaultLayerCacheDir(env: NodeJS.ProcessEnv): string {
  if (env.NIX_IMAGE_OPERATOR_CACHE) return env.NIX_IMAGE_OPERATOR_CACHE;
  const base = env.XDG_CACHE_HOME || join(env.HOME || homedir(), ".cache");
  return join(base, "nix-image-operator", "layers");
}

export function layerCacheFrom(dir: string | undefined): LayerCache {
  return dir === undefined ? noLayerCache : new DirectoryLayerCache(dir);
}

/** On a terminal only warnings are logged (the progress line shows the rest); JSON lines otherwise. */
export function pipelineLogger(context: CommandContext): Logger {
  return context.stderr.isTTY === true ? context.logger.child({}, { level: "warn" }) : context.logger;
}

/**
 * Reports a failure: the full message on stderr, a short one in the termination message file,
 * exit code 1. Usage errors are re-thrown (exit code 2) after the termination message is written.
 */
export async function reportFailure(
  context: CommandContext,
  error: unknown,
  options: {
    terminationMessage?: string | undefined;
    /** Writes the termination message instead (the step runner's, which writes one per run). */
    write?: (text: string) => Promise<void>;
    secrets?: readonly string[];
    progress?: ProgressSink;
  },
): Promise<number> {
  options.progress?.done();
  const secrets = options.secrets ?? [];
  const text = shortErrorMessage(error, secrets);
  await (options.write ? options.write(text) : writeTerminationMessage(options.terminationMessage, text));
  if (error instanceof UsageError) throw error;
  context.stderr.write(`error: ${errorMessage(error, secrets)}\n`);
  return 1;
}

/** The Nix runner for a build from the flags every build command shares (allowlisted settings only). */
export function nixFromFlags(
  values: { "allow-import-from-derivation"?: boolean; substituter?: string[]; "trusted-public-key"?: string[]; "cluster-cache"?: string[] },
  env: NodeJS.ProcessEnv,
  logger: Logger,
): NixCommand {
  return new NixCommand({
    baseEnv: env,
    logger,
    settings: {
      allowImportFromDerivation: values["allow-import-from-derivation"] === true,
      extraSubstituters: values.substituter ?? [],
      extraTrustedPublicKeys: values["trusted-public-key"] ?? [],
      clusterSubstituters: values["cluster-cache"] ?? [],
    },
  });
}

function missingAsUndefined(e: unknown): undefined {
  if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
  throw e;
}

/** The SBOM / provenance / signing settings of --no-sbom, --no-provenance, --sign-key (reads the key). */
export async function attestFromFlags(
  values: {
    "no-sbom"?: boolean;
    "no-provenance"?: boolean;
    "sign-key"?: string;
    "sign-key-password-file"?: string;
    "builder-image"?: string;
    job?: string;
  },
  env: Readonly<Record<string, string | undefined>>,
): Promise<PushAttestOptions> {
  let signingKey: SigningKey | undefined;
  const keyFile = values["sign-key"];
  if (keyFile !== undefined) {
    const passwordFile = values["sign-key-password-file"];
    // A missing password file means a key without one (the Job mounts the Secret's optional key).
    const fromFile = passwordFile !== undefined ? await readFile(passwordFile, "utf8").catch(missingAsUndefined) : undefined;
    const password = fromFile !== undefined ? fromFile.replace(/\r?\n$/, "") : env.COSIGN_PASSWORD;
    signingKey = await loadSigningKey(await readFile(keyFile, "utf8"), password);
  }
  return {
    sbom: values["no-sbom"] !== true,
    provenance: values["no-provenance"] !== true,
    ...(signingKey ? { signingKey } : {}),
    operatorVersion: packageJson.version,
    ...(values["builder-image"] !== undefined ? { builderImage: values["builder-image"] } : {}),
    ...(values.job !== undefined ? { job: values.job } : {}),
  };
}
