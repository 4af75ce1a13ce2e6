// Builds a flake attribute and reads what the image config needs from it.
//
//   nix build --json --no-link --no-write-lock-file -- <lockedUrl>#<attribute>
//     -> [{"drvPath": "...drv", "outputs": {"out": "/nix/store/..."}}]   (Nix 2.8; no --print-out-paths)
//   nix eval --json --apply <fn> -- <lockedUrl>#<attribute>
//     -> {"mainProgram": "hello" | null, "pname": ..., "name": ..., "version": ..., "type": ...}
//
// `attribute` is what `nix build REF#attribute` accepts; the ref policy (src/flake) restricts its
// characters. It is checked again here so that nothing option-like reaches argv.
import type { NixCommand, NixRunOptions } from "./nix-command.ts";
import { NixError } from "./nix-error.ts";
import type { NixProgress } from "./nix-log.ts";
import { lockFlags } from "./flake-metadata.ts";

export interface BuiltDerivation {
  drvPath: string;
  /** Output name -> store path, e.g. { out: "/nix/store/...-hello" }. */
  outputs: Record<string, string>;
}

export interface NixBuildResult {
  derivations: BuiltDerivation[];
  /** All output paths, `out` of each derivation first, then the others by name. */
  outPaths: string[];
  progress: NixProgress;
  durationMs: number;
}

export interface AttributeInfo {
  /** meta.mainProgram when it is a string. */
  mainProgram?: string;
  pname?: string;
  /** The derivation name (`<pname>-<version>` for stdenv packages). */
  name?: string;
  version?: string;
  /** "derivation" for packages and images. */
  type?: string;
  /** meta.license as SPDX ids (short names when a license has none), for the SBOM. */
  licenses?: string[];
  homepage?: string;
  description?: string;
}

export interface NixBuildOptions {
  /** `--recreate-lock-file`: build against freshly locked inputs (warm builds with updateInputs). */
  updateInputs?: boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
  onProgress?: (p: NixProgress) => void;
  onBuildLog?: (line: string, drvPath: string | undefined) => void;
}

const attributePattern = /^[A-Za-z0-9_][A-Za-z0-9_.+'-]{0,199}$/;

/** `<url>#<attribute>` after checking both parts; throws NixError(invalid-settings). */
export function installable(url: string, attribute: string): string {
  if (url === "" || url.startsWith("-") || url.includes("#") || /[\s\0]/.test(url)) {
    throw new NixError({
      kind: "invalid-settings",
      what: "build",
      reason: `flake URL ${JSON.stringify(url.slice(0, 200))} is not usable (empty, '-', '#' or whitespace)`,
      hint: "Lock the flake first and build from its locked URL.",
    });
  }
  if (!attributePattern.test(attribute) || attribute.includes("..") || attribute.endsWith(".")) {
    throw new NixError({
      kind: "invalid-settings",
      what: "build",
      reason: `attribute ${JSON.stringify(attribute.slice(0, 200))} has characters outside [A-Za-z0-9_.+'-] or is too long`,
      hint: "Use an attribute path like `default`, `web` or `packages.x86_64-linux.web`.",
    });
  }
  return `${url}#${attribute}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function invalid(what: string, reason: string): NixError {
  return new NixError({ kind: "invalid-output", what, reason, hint: "Use a supported builder image (Nix >= 2.8)." });
}

/** PURE: parses `nix build --json` output. */
export function parseBuildOutput(json: unknown, what = "build"): BuiltDerivation[] {
  if (!Array.isArray(json)) throw invalid(what, "nix build --json did not print a JSON array");
  return json.map((item, i) => {
    if (!isRecord(item) || typeof item.drvPath !== "string" || !isRecord(item.outputs)) {
      throw invalid(what, `nix build --json entry ${i} has no drvPath/outputs`);
    }
    const outputs: Record<string, string> = {};
    for (const [name, path] of Object.entries(item.outputs)) {
      if (typeof path !== "string" || !path.startsWith("/")) throw invalid(what, `output ${name} of entry ${i} is not a store path`);
      outputs[name] = path;
    }
    if (Object.keys(outputs).length === 0) throw invalid(what, `entry ${i} has no outputs`);
    return { drvPath: item.drvPath, outputs };
  });
}

/** `out` first, then other outputs by name, derivation by derivation; duplicates dropped. */
export function orderedOutPaths(derivations: readonly BuiltDerivation[]): string[] {
  const out: string[] = [];
  for (const d of derivations) {
    const names = Object.keys(d.outputs).sort((a, b) => (a === "out" ? -1 : b === "out" ? 1 : a < b ? -1 : a > b ? 1 : 0));
    for (const n of names) {
      const p = d.outputs[n]!;
      if (!out.includes(p)) out.push(p);
    }
  }
  return out;
}

function runOptions(what: string, o: NixBuildOptions): NixRunOptions {
  const r: NixRunOptions = { what };
  if (o.signal) r.signal = o.signal;
  if (o.timeoutMs !== undefined) r.timeoutMs = o.timeoutMs;
  if (o.onProgress) r.onProgress = o.onProgress;
  if (o.onBuildLog) r.onBuildLog = o.onBuildLog;
  return r;
}

/** Builds `<url>#<attribute>` without a result link (GC roots are registered separately). */
export async function buildFlakeAttribute(nix: NixCommand, url: string, attribute: string, options: NixBuildOptions = {}): Promise<NixBuildResult> {
  const inst = installable(url, attribute);
  const what = `build ${inst}`;
  const result = await nix.run(["build", "--json", "--no-link", ...lockFlags(options), "--", inst], runOptions(what, options));
  let json: unknown;
  try {
    json = JSON.parse(result.stdout);
  } catch {
    throw invalid(what, `nix build printed no valid JSON (${result.stdout.length} characters)`);
  }
  const derivations = parseBuildOutput(json, what);
  return { derivations, outPaths: orderedOutPaths(derivations), progress: result.progress, durationMs: result.durationMs };
}

/**
 * The Nix function applied to the attribute: every field tolerates absence (and a non-attrset
 * attribute), so evaluation only fails when the attribute itself does.
 */
const attributeInfoExpr = [
  "d: let",
  "  a = builtins.isAttrs d;",
  "  str = v: if builtins.isString v then v else null;",
  "  meta = if a && builtins.isAttrs (d.meta or null) then d.meta else {};",
  "in {",
  "  mainProgram = str (meta.mainProgram or null);",
  "  pname = if a then str (d.pname or null) else null;",
  "  name = if a then str (d.name or null) else null;",
  "  version = if a then str (d.version or null) else null;",
  "  type = if a then str (d.type or null) else null;",
  "  homepage = let h = meta.homepage or null; in if builtins.isList h then str (builtins.head (h ++ [null])) else str h;",
  "  description = str (meta.description or null);",
  "  licenses = let l = meta.license or null; ls = if builtins.isList l then l else if l == null then [] else [l]; in",
  "    builtins.filter (x: x != null) (map (x: if builtins.isAttrs x then str (x.spdxId or x.shortName or null) else str x) ls);",
  "}",
].join("\n");

/** PURE: the JSON of `attributeInfoExpr` -> AttributeInfo (nulls dropped). */
export function parseAttributeInfo(json: unknown): AttributeInfo {
  const out: AttributeInfo = {};
  if (!isRecord(json)) return out;
  for (const key of ["mainProgram", "pname", "name", "version", "type", "homepage", "description"] as const) {
    const v = json[key];
    if (typeof v === "string" && v !== "") out[key] = v.slice(0, key === "description" ? 1024 : 256);
  }
  const licenses = Array.isArray(json.licenses) ? json.licenses.filter((l): l is string => typeof l === "string" && l !== "").map((l) => l.slice(0, 128)) : [];
  if (licenses.length > 0) out.licenses = licenses.slice(0, 16);
  return out;
}

/** meta.mainProgram, pname, name, version, type of `<url>#<attribute>` (absent ones omitted). */
export async function evalAttributeInfo(nix: NixCommand, url: string, attribute: string, options: NixBuildOptions = {}): Promise<AttributeInfo> {
  const inst = installable(url, attribute);
  const what = `evaluate ${inst}`;
  const result = await nix.run(["eval", "--json", ...lockFlags(options), "--apply", attributeInfoExpr, "--", inst], runOptions(what, options));
  let json: unknown;
  try {
    json = JSON.parse(result.stdout);
  } catch {
    throw invalid(what, `nix eval printed no valid JSON (${result.stdout.length} characters)`);
  }
  return parseAttributeInfo(json);
}

/**
 * The program an image of a plain package runs by default: `bin/<mainProgram>`, else
 * `bin/<pname>`, else `bin/<name without version>` (nixpkgs' `lib.getExe` rule). Undefined when
 * nothing is known.
 */
export function defaultProgram(info: AttributeInfo): string | undefined {
  if (info.mainProgram) return info.mainProgram;
  if (info.pname) return info.pname;
  if (info.name) {
    // `hello-2.12.1` -> `hello`: drop a trailing `-<version>` that starts with a digit.
    return info.name.replace(/-[0-9][^-]*$/, "") || info.name;
  }
  return undefined;
}

/** `nix --version` -> `2.8.0` (the whole first line when it has another shape). */
export async function nixVersion(nix: NixCommand, options: NixBuildOptions = {}): Promise<string> {
  const result = await nix.run(["--version"], runOptions("nix --version", options));
  const line = result.stdout.split("\n")[0]?.trim() ?? "";
  return (/\(Nix\) (\S+)$/.exec(line)?.[1] ?? line).slice(0, 128);
}
