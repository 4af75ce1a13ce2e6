// The runtime configuration (entrypoint, cmd, env, ...) of the pushed image:
//   - a plain package gets defaults: Entrypoint `<out>/bin/<mainProgram or pname or name>`, PATH
//     with the package's bin directory first, SSL_CERT_FILE/NIX_SSL_CERT_FILE when the closure
//     has a CA bundle (nixpkgs' cacert);
//   - a nix2container image brings its own (OCI-style `image-config`);
//   - the user's settings (spec.image.config / CLI flags) win field by field; env by name.
import { access, constants, readdir, stat } from "node:fs/promises";
import type { z } from "zod";
import type { imageConfigSchema } from "../api/niximage.ts";
import type { ImageRuntimeConfig } from "../oci/image-manifest.ts";
import { defaultProgram, type AttributeInfo } from "../nix/nix-build.ts";
import type { ClosurePath } from "../image/path-info.ts";

/** spec.image.config as the NixImage schema defines it. */
export type SpecImageConfig = z.input<typeof imageConfigSchema>;

const DEFAULT_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin";
const CA_BUNDLES = ["etc/ssl/certs/ca-bundle.crt", "etc/ssl/certs/ca-certificates.crt"];
const MAX_PATH_ENTRIES = 32;

/** spec.image.config -> the manifest builder's shape. */
export function fromSpecConfig(spec: SpecImageConfig | undefined): ImageRuntimeConfig {
  const out: ImageRuntimeConfig = {};
  if (!spec) return out;
  if (spec.entrypoint !== undefined) out.entrypoint = [...spec.entrypoint];
  if (spec.cmd !== undefined) out.cmd = [...spec.cmd];
  if (spec.env !== undefined) out.env = spec.env.map((e) => `${e.name}=${e.value}`);
  if (spec.workingDir !== undefined) out.workingDir = spec.workingDir;
  if (spec.user !== undefined) out.user = spec.user;
  if (spec.exposedPorts !== undefined) out.exposedPorts = [...spec.exposedPorts];
  if (spec.labels !== undefined) out.labels = { ...spec.labels };
  return out;
}

function stringList(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every((x) => typeof x === "string") ? [...(v as string[])] : undefined;
}

const knownOciKeys = new Set(["Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "StopSignal"]);

/**
 * An OCI/Docker-style config object (`{"Entrypoint": [...], "Env": [...], ...}`, as nix2container
 * writes it) -> the manifest builder's shape; `ignored` lists keys that are not carried over.
 */
export function fromOciConfig(config: Record<string, unknown>): { config: ImageRuntimeConfig; ignored: string[] } {
  const out: ImageRuntimeConfig = {};
  const entrypoint = stringList(config.Entrypoint);
  if (entrypoint) out.entrypoint = entrypoint;
  const cmd = stringList(config.Cmd);
  if (cmd) out.cmd = cmd;
  const env = stringList(config.Env);
  if (env) out.env = env.filter((e) => /^[^=]+=/.test(e));
  if (typeof config.WorkingDir === "string" && config.WorkingDir !== "") out.workingDir = config.WorkingDir;
  if (typeof config.User === "string" && config.User !== "") out.user = config.User;
  if (typeof config.ExposedPorts === "object" && config.ExposedPorts !== null) out.exposedPorts = Object.keys(config.ExposedPorts);
  if (typeof config.Labels === "object" && config.Labels !== null) {
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(config.Labels as Record<string, unknown>)) if (typeof v === "string") labels[k] = v;
    out.labels = labels;
  }
  if (typeof config.StopSignal === "string" && config.StopSignal !== "") out.stopSignal = config.StopSignal;
  const ignored = Object.keys(config).filter((k) => !knownOciKeys.has(k) && config[k] !== null);
  return { config: out, ignored };
}

function envName(entry: string): string {
  return entry.slice(0, entry.indexOf("="));
}

/** `override` wins field by field; env entries are merged by name (override's value, base's order). */
export function mergeImageConfig(base: ImageRuntimeConfig, override: ImageRuntimeConfig): ImageRuntimeConfig {
  const out: ImageRuntimeConfig = { ...base, ...override };
  if (base.env !== undefined || override.env !== undefined) {
    const merged = new Map<string, string>();
    for (const e of base.env ?? []) merged.set(envName(e), e);
    for (const e of override.env ?? []) merged.set(envName(e), e);
    out.env = [...merged.values()];
  }
  if (base.labels !== undefined || override.labels !== undefined) out.labels = { ...base.labels, ...override.labels };
  // An explicit entrypoint without cmd drops the default cmd (Docker does the same).
  if (override.entrypoint !== undefined && override.cmd === undefined) delete out.cmd;
  return out;
}

async function exists(path: string, mode = constants.F_OK): Promise<boolean> {
  try {
    await access(path, mode);
    return true;
  } catch {
    return false;
  }
}

export interface PackageDefaultsInput {
  outPath: string;
  info: AttributeInfo;
  closure: readonly ClosurePath[];
  /** Where the store is readable when not at /nix/store (see TarStorePathsOptions.readRoot). */
  readRoot?: string;
}

export interface PackageDefaults {
  config: ImageRuntimeConfig;
  /** Why there is no entrypoint, when there is none. */
  warning?: string;
}

/** The defaults of an image made from a plain package's closure. */
export async function packageDefaults(input: PackageDefaultsInput): Promise<PackageDefaults> {
  const root = input.readRoot ?? "";
  const config: ImageRuntimeConfig = {};
  let warning: string | undefined;
  const bin = `${input.outPath}/bin`;
  const program = defaultProgram(input.info);
  const outStat = await stat(`${root}${input.outPath}`).catch(() => undefined);
  if (outStat?.isFile() && (outStat.mode & 0o111) !== 0) {
    // The out path itself is a program (writeShellScript, a static binary).
    config.entrypoint = [input.outPath];
  } else if (program !== undefined && !program.includes("/") && (await exists(`${root}${bin}/${program}`, constants.X_OK))) {
    config.entrypoint = [`${bin}/${program}`];
  } else {
    // No such program: a package with exactly one executable still has an obvious entrypoint.
    const entries = await readdir(`${root}${bin}`).catch(() => [] as string[]);
    if (entries.length === 1) {
      config.entrypoint = [`${bin}/${entries[0]}`];
    } else {
      warning =
        program === undefined
          ? `the package has no meta.mainProgram, pname or name, and ${entries.length} programs in bin/: set an entrypoint`
          : `${bin}/${program} does not exist (from meta.mainProgram, pname or name) and bin/ has ${entries.length} programs: set an entrypoint`;
    }
  }

  // PATH: the package's bin first, then the bin directories of what it refers to directly.
  const pathDirs: string[] = [];
  if (await exists(`${root}${bin}`)) pathDirs.push(bin);
  const self = input.closure.find((p) => p.path === input.outPath);
  for (const ref of [...(self?.references ?? [])].sort()) {
    if (ref === input.outPath || pathDirs.length >= MAX_PATH_ENTRIES) continue;
    if (await exists(`${root}${ref}/bin`)) pathDirs.push(`${ref}/bin`);
  }
  const env = [`PATH=${[...pathDirs, DEFAULT_SYSTEM_PATH].join(":")}`];
  // CA certificates: nixpkgs' cacert first, then any other path that carries a bundle.
  const candidates = [...input.closure].sort((a, b) => Number(b.path.includes("cacert")) - Number(a.path.includes("cacert")) || (a.path < b.path ? -1 : 1));
  for (const p of candidates) {
    const found = await firstExisting(
      CA_BUNDLES.map((f) => `${p.path}/${f}`),
      root,
    );
    if (found !== undefined) {
      env.push(`SSL_CERT_FILE=${found}`, `NIX_SSL_CERT_FILE=${found}`);
      break;
    }
  }
  config.env = env;
  return warning !== undefined ? { config, warning } : { config };
}

async function firstExisting(paths: string[], root: string): Promise<string | undefined> {
  for (const p of paths) if (await exists(`${root}${p}`)) return p;
  return undefined;
}
