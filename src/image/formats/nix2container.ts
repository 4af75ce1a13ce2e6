// PURE (plus one file read): parses the image JSON nix2container's buildImage writes to the store
// into the config and the store paths of each layer, so the pusher can tar those paths with its
// own deterministic tar writer.
//
// The JSON (nix2container `types.Image`, version 1):
//   { "version": 1,
//     "image-config": { "Entrypoint": [...], "Cmd": [...], "Env": [...], ... },  // OCI ImageConfig
//     "layers": [ { "digest": "sha256:..", "size": n, "diff_ids": "sha256:..",
//                   "paths": [ { "path": "/nix/store/..", "options": { "rewrite": {regex, repl},
//                                "perms": [...], "ignoreDestination": ".." } } ],
//                   "mediatype": "application/vnd.oci.image.layer.v1.tar",
//                   "layer-path": "/nix/store/..-blob"   // prebuilt blob (base image layers)
//                 } ],
//     "arch": "amd64", "created": "..." }
// Older and hand-written variants use "config" for the image config and plain strings in "paths";
// both are accepted.
//
// nix2container's `digest`/`diff_ids` are of ITS tar of the paths; ours differs (entry order,
// headers), so they are informational for path layers. For a `layer-path` layer the digest is the
// blob's and can be trusted once the pusher has re-hashed the file.
import { readFile, stat } from "node:fs/promises";
import { ImageFormatError } from "./format-error.ts";

interface Nix2ContainerPathOptions {
  rewrite?: { regex: string; repl: string };
  perms?: Array<Record<string, unknown>>;
  ignoreDestination?: string;
}

interface Nix2ContainerPath {
  path: string;
  options?: Nix2ContainerPathOptions;
}

interface Nix2ContainerLayer {
  /** Store paths in this layer, in the JSON's order. */
  paths: string[];
  /** The same with nix2container's per-path options (only entries that have options). */
  pathOptions: Nix2ContainerPath[];
  /** nix2container's digest (of its tar, or of `layerPath`). */
  digest?: string;
  diffId?: string;
  size?: number;
  mediaType?: string;
  /** A prebuilt layer blob in the store (fromImage layers); `paths` is then empty. */
  layerPath?: string;
}

export interface Nix2ContainerImage {
  version: number;
  /** OCI ImageConfig (capitalised keys: Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, Labels, ...). */
  config: Record<string, unknown>;
  architecture?: string;
  created?: string;
  /** Bottom layer first. */
  layers: Nix2ContainerLayer[];
}

export interface ParseNix2ContainerOptions {
  /** Store directory that layer paths must be inside. Default /nix/store. */
  storeDir?: string;
  /** For error messages. */
  source?: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fail(source: string, reason: string): ImageFormatError {
  return new ImageFormatError({
    format: "nix2container",
    source,
    reason,
    hint: "Check that the attribute is a nix2container buildImage output (the image JSON), or set the format explicitly.",
  });
}

/** Whether `p` is `<storeDir>/<hash>-<name>` or a path below one, without `..` or NULs. */
export function isStorePathUnder(p: string, storeDir: string): boolean {
  if (!p.startsWith(`${storeDir}/`) || p.includes("\0")) return false;
  const rest = p.slice(storeDir.length + 1);
  const parts = rest.split("/");
  if (parts.some((x) => x === "" || x === "." || x === "..")) return false;
  return /^[0-9a-z]{32}-[A-Za-z0-9+._?=-]+$/.test(parts[0]!);
}

/** Whether a parsed JSON value has the shape of a nix2container image (for format detection). */
export function looksLikeNix2Container(json: unknown): boolean {
  if (!isRecord(json) || !Array.isArray(json.layers)) return false;
  const hasConfig = isRecord(json["image-config"]) || isRecord(json.config);
  const hasVersion = typeof json.version === "number";
  const layerShape = json.layers.every((l) => isRecord(l) && (Array.isArray(l.paths) || typeof l["layer-path"] === "string" || typeof l.digest === "string"));
  return hasConfig && hasVersion && layerShape;
}

function parsePathOptions(v: unknown, source: string, where: string): Nix2ContainerPathOptions | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) throw fail(source, `${where}: options is not an object`);
  const out: Nix2ContainerPathOptions = {};
  if (isRecord(v.rewrite) && typeof v.rewrite.regex === "string" && v.rewrite.regex !== "") {
    out.rewrite = { regex: v.rewrite.regex, repl: typeof v.rewrite.repl === "string" ? v.rewrite.repl : "" };
  }
  if (Array.isArray(v.perms) && v.perms.length > 0) out.perms = v.perms.filter(isRecord);
  if (typeof v.ignoreDestination === "string" && v.ignoreDestination !== "") out.ignoreDestination = v.ignoreDestination;
  return Object.keys(out).length > 0 ? out : undefined;
}

/** PURE: decoded JSON -> Nix2ContainerImage; throws ImageFormatError with the offending layer. */
export function parseNix2Container(json: unknown, options: ParseNix2ContainerOptions = {}): Nix2ContainerImage {
  const source = options.source ?? "image JSON";
  const storeDir = (options.storeDir ?? "/nix/store").replace(/\/+$/, "");
  if (!isRecord(json)) throw fail(source, "not a JSON object");
  const version = json.version;
  if (typeof version !== "number") throw fail(source, "no numeric `version`");
  if (version !== 1) throw fail(source, `version ${version} is not supported (only 1)`);
  const configRaw = json["image-config"] ?? json.config ?? {};
  if (!isRecord(configRaw)) throw fail(source, "`image-config` is not an object");
  if (!Array.isArray(json.layers)) throw fail(source, "`layers` is not a list");
  const layers = json.layers.map((raw, i): Nix2ContainerLayer => {
    const where = `layer ${i + 1}`;
    if (!isRecord(raw)) throw fail(source, `${where} is not an object`);
    const paths: string[] = [];
    const pathOptions: Nix2ContainerPath[] = [];
    const rawPaths = raw.paths ?? [];
    if (!Array.isArray(rawPaths)) throw fail(source, `${where}: paths is not a list`);
    for (const p of rawPaths) {
      const path = typeof p === "string" ? p : isRecord(p) && typeof p.path === "string" ? p.path : undefined;
      if (path === undefined) throw fail(source, `${where}: a path entry has no string path`);
      if (!isStorePathUnder(path, storeDir)) throw fail(source, `${where}: ${JSON.stringify(path.slice(0, 200))} is not a path in ${storeDir}`);
      paths.push(path);
      const opts = isRecord(p) ? parsePathOptions(p.options, source, `${where} ${path}`) : undefined;
      if (opts) pathOptions.push({ path, options: opts });
    }
    const layer: Nix2ContainerLayer = { paths, pathOptions };
    if (typeof raw.digest === "string" && raw.digest !== "") layer.digest = raw.digest;
    if (typeof raw.diff_ids === "string" && raw.diff_ids !== "") layer.diffId = raw.diff_ids;
    if (typeof raw.size === "number" && Number.isSafeInteger(raw.size) && raw.size >= 0) layer.size = raw.size;
    if (typeof raw.mediatype === "string" && raw.mediatype !== "") layer.mediaType = raw.mediatype;
    const layerPath = raw["layer-path"];
    if (typeof layerPath === "string" && layerPath !== "") {
      if (!isStorePathUnder(layerPath, storeDir)) throw fail(source, `${where}: layer-path ${JSON.stringify(layerPath.slice(0, 200))} is not in ${storeDir}`);
      layer.layerPath = layerPath;
    }
    if (layer.paths.length === 0 && layer.layerPath === undefined) throw fail(source, `${where} has neither paths nor a layer-path`);
    if (layer.layerPath !== undefined && !/^sha256:[0-9a-f]{64}$/.test(layer.digest ?? "")) {
      throw fail(source, `${where}: layer-path without a sha256 digest`);
    }
    return layer;
  });
  const out: Nix2ContainerImage = { version, config: configRaw, layers };
  if (typeof json.arch === "string" && json.arch !== "") out.architecture = json.arch;
  if (typeof json.created === "string" && json.created !== "") out.created = json.created;
  return out;
}

/**
 * What the pusher must support to reproduce the image faithfully: path rewrites, permission
 * overrides, ignored destinations, prebuilt blobs. Empty when plain store-path tars suffice.
 */
export function nix2ContainerFeatures(image: Nix2ContainerImage): string[] {
  const features = new Set<string>();
  for (const l of image.layers) {
    if (l.layerPath !== undefined) features.add("layer-path");
    for (const p of l.pathOptions) {
      if (p.options?.rewrite) features.add("rewrite");
      if (p.options?.perms) features.add("perms");
      if (p.options?.ignoreDestination) features.add("ignoreDestination");
    }
  }
  return [...features].sort();
}

/** A nix2container JSON lists store paths per layer: megabytes at most. */
const MAX_NIX2CONTAINER_JSON_BYTES = 64 * 1024 * 1024;

/** Reads and parses the JSON file at `path` (a store path). */
export async function readNix2Container(path: string, options: Omit<ParseNix2ContainerOptions, "source"> = {}): Promise<Nix2ContainerImage> {
  let text: string;
  try {
    // Flake output: a multi-GB file must fail before it fills memory.
    const size = (await stat(path)).size;
    if (size > MAX_NIX2CONTAINER_JSON_BYTES) throw new Error(`it is ${size} bytes, more than ${MAX_NIX2CONTAINER_JSON_BYTES}`);
    text = await readFile(path, "utf8");
  } catch (e) {
    throw fail(path, `cannot read: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw fail(path, `not valid JSON (${text.length} characters)`);
  }
  return parseNix2Container(json, { ...options, source: path });
}
