// Parses `nix path-info --json -r` output: an ARRAY of objects with `path` in Nix <= 2.18, an
// OBJECT keyed by store path in Nix >= 2.19 (null for an invalid path). References may be full
// store paths or, in some newer formats, base names; both are normalised to full paths.

/** One store path of a closure, as the layer planner and pusher need it. */
export interface ClosurePath {
  path: string;
  narSize: number;
  /** `sha256-<base64>` or `sha256:<base32>` as Nix prints it; part of the layer cache key. */
  narHash?: string;
  references: string[];
}

export class PathInfoError extends Error {
  override name = "PathInfoError";
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function shown(s: string): string {
  return JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);
}

function storeDirOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash > 0 ? path.slice(0, slash) : "";
}

function normaliseReference(ref: unknown, storeDir: string, owner: string): string {
  if (typeof ref !== "string" || ref === "" || ref.includes("\0")) {
    throw new PathInfoError(`path-info: bad reference of ${shown(owner)}`);
  }
  if (ref.startsWith("/")) return ref;
  if (ref.includes("/")) throw new PathInfoError(`path-info: bad reference ${shown(ref)} of ${shown(owner)}`);
  return `${storeDir}/${ref}`;
}

function entry(path: string, info: unknown): ClosurePath {
  if (!path.startsWith("/") || storeDirOf(path) === "") {
    throw new PathInfoError(`path-info: ${shown(path)} is not an absolute store path`);
  }
  if (info === null || info === undefined) {
    throw new PathInfoError(`path-info: ${shown(path)} is not valid in the store (no path info)`);
  }
  if (!isRecord(info)) throw new PathInfoError(`path-info: entry of ${shown(path)} is not an object`);
  if (info.valid === false) throw new PathInfoError(`path-info: ${shown(path)} is not valid in the store`);
  const narSize = info.narSize;
  if (typeof narSize !== "number" || !Number.isSafeInteger(narSize) || narSize < 0) {
    throw new PathInfoError(`path-info: ${shown(path)} has no valid narSize`);
  }
  const refs = info.references ?? [];
  if (!Array.isArray(refs)) throw new PathInfoError(`path-info: references of ${shown(path)} is not a list`);
  const storeDir = storeDirOf(path);
  const references = [...new Set(refs.map((r) => normaliseReference(r, storeDir, path)))].sort();
  const out: ClosurePath = { path, narSize, references };
  if (typeof info.narHash === "string") out.narHash = info.narHash;
  return out;
}

/** Parses already-decoded JSON of either format; paths come out sorted, duplicates rejected. */
export function parsePathInfo(json: unknown): ClosurePath[] {
  const out: ClosurePath[] = [];
  if (Array.isArray(json)) {
    for (const item of json) {
      if (!isRecord(item) || typeof item.path !== "string") {
        throw new PathInfoError("path-info: array entry without a string `path`");
      }
      out.push(entry(item.path, item));
    }
  } else if (isRecord(json)) {
    for (const [path, info] of Object.entries(json)) out.push(entry(path, info));
  } else {
    throw new PathInfoError("path-info: expected a JSON array (Nix <= 2.18) or object (Nix >= 2.19)");
  }
  out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 1; i < out.length; i++) {
    if (out[i]!.path === out[i - 1]!.path) throw new PathInfoError(`path-info: duplicate path ${shown(out[i]!.path)}`);
  }
  return out;
}

/** Parses the text Nix printed. A JSON syntax error is reported without echoing the text. */
export function parsePathInfoText(text: string): ClosurePath[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new PathInfoError(`path-info: output is not valid JSON (${text.length} characters)`);
  }
  return parsePathInfo(json);
}
