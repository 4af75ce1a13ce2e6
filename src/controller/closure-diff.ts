// What changed between two closures (lists of store paths), by package name and version: for
// warm builds with updated inputs, which report the difference instead of rolling out.
//
// A store path `/nix/store/<hash>-<name>` is split like `builtins.parseDrvName`: the version starts
// after the first `-` that is followed by a character that is not a letter (`hello-2.12.1` ->
// hello / 2.12.1, `python3.11-requests-2.31.0` -> python3.11-requests / 2.31.0). A trailing output
// name (`-bin`, `-dev`, `-man`, `-lib64`...) is dropped first when what is left still has a version,
// so `glibc-2.38-bin` counts as glibc 2.38. Paths that differ only in their hash (same name and
// versions) are not listed; they are counted as `rebuilt`.

interface PackageAdded {
  name: string;
  /** Versions after, sorted, joined by ", " ("" for paths without a version). */
  to: string;
}

interface PackageRemoved {
  name: string;
  from: string;
}

interface PackageChanged {
  name: string;
  from: string;
  to: string;
}

export interface ClosureDiff {
  added: PackageAdded[];
  removed: PackageRemoved[];
  changed: PackageChanged[];
  /** Packages with the same name and versions on both sides whose store paths differ. */
  rebuilt: number;
  /** True when a list was cut at the limit; `totals` has the full counts. */
  truncated: boolean;
  totals: { added: number; removed: number; changed: number };
}

export const CLOSURE_DIFF_LIMIT = 256;

export interface DiffClosuresOptions {
  /** Entries per list. Default CLOSURE_DIFF_LIMIT. */
  limit?: number;
}

/** `builtins.parseDrvName`: the version starts after the first `-` not followed by a letter. */
export function parseDrvName(s: string): { name: string; version: string } {
  for (let i = 0; i < s.length - 1; i++) {
    if (s[i] === "-" && !/[A-Za-z]/.test(s[i + 1]!)) return { name: s.slice(0, i), version: s.slice(i + 1) };
  }
  return { name: s, version: "" };
}

export interface StorePathName {
  /** The 32-character hash part ("" when the path does not have one). */
  hash: string;
  /** Everything after the hash: `hello-2.12.1-man`. */
  fullName: string;
  /** Package name: `hello`. */
  name: string;
  /** `2.12.1` ("" when none). */
  version: string;
  /** Output name split off the end (`man`), if any. */
  output?: string;
}

const NIX_HASH_RE = /^([0-9a-df-np-sv-z]{32})-(.+)$/;
const OUTPUT_SUFFIX_RE = /^(.+)-([a-z]+|lib32|lib64)$/;

/** Splits a store path (or its base name) into hash, package name, version and output. */
export function parseStorePathName(path: string): StorePathName {
  const base = path.slice(path.lastIndexOf("/") + 1);
  const m = NIX_HASH_RE.exec(base);
  const hash = m ? m[1]! : "";
  const fullName = m ? m[2]! : base;
  const out = OUTPUT_SUFFIX_RE.exec(fullName);
  if (out) {
    const stripped = parseDrvName(out[1]!);
    if (stripped.version !== "") return { hash, fullName, name: stripped.name, version: stripped.version, output: out[2]! };
  }
  const { name, version } = parseDrvName(fullName);
  return { hash, fullName, name, version };
}

/** Version components as `builtins.compareVersions` sees them: runs of digits or of other characters, split at `.` and `-`. */
function versionComponents(v: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < v.length) {
    const c = v[i]!;
    if (c === "." || c === "-") {
      i++;
      continue;
    }
    const digit = c >= "0" && c <= "9";
    let j = i + 1;
    while (j < v.length && v[j] !== "." && v[j] !== "-" && (v[j]! >= "0" && v[j]! <= "9") === digit) j++;
    out.push(v.slice(i, j));
    i = j;
  }
  return out;
}

const isNumeric = (c: string) => c !== "" && /^[0-9]+$/.test(c);

function componentLess(a: string, b: string): boolean {
  if (isNumeric(a) && isNumeric(b)) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y;
  }
  if (a === "" && isNumeric(b)) return true;
  if (a === "pre" && b !== "pre") return true;
  if (b === "pre") return false;
  if (isNumeric(b)) return true;
  if (isNumeric(a)) return false;
  return a < b;
}

/** `builtins.compareVersions`: -1, 0 or 1 ("1.10" > "1.9", "1.0pre1" < "1.0"). */
export function compareVersions(a: string, b: string): -1 | 0 | 1 {
  const ca = versionComponents(a);
  const cb = versionComponents(b);
  for (let i = 0; i < Math.max(ca.length, cb.length); i++) {
    const x = ca[i] ?? "";
    const y = cb[i] ?? "";
    if (componentLess(x, y)) return -1;
    if (componentLess(y, x)) return 1;
  }
  return 0;
}

function byVersion(a: string, b: string): number {
  return compareVersions(a, b) || (a < b ? -1 : a > b ? 1 : 0);
}

function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

interface Package {
  versions: Set<string>;
  /** Store path base names (hash included): what makes two sides identical. */
  paths: Set<string>;
}

function group(paths: Iterable<string>): Map<string, Package> {
  const out = new Map<string, Package>();
  for (const p of paths) {
    const parsed = parseStorePathName(p);
    let pkg = out.get(parsed.name);
    if (!pkg) {
      pkg = { versions: new Set(), paths: new Set() };
      out.set(parsed.name, pkg);
    }
    pkg.versions.add(parsed.version);
    pkg.paths.add(p.slice(p.lastIndexOf("/") + 1));
  }
  return out;
}

const joinVersions = (versions: Set<string>) => [...versions].sort(byVersion).join(", ");

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** Packages added, removed and changed in version from `before` to `after`, sorted by name. */
export function diffClosures(before: Iterable<string>, after: Iterable<string>, options: DiffClosuresOptions = {}): ClosureDiff {
  const limit = options.limit ?? CLOSURE_DIFF_LIMIT;
  if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`limit must be a non-negative integer, got ${limit}`);
  const a = group(before);
  const b = group(after);
  const added: PackageAdded[] = [];
  const removed: PackageRemoved[] = [];
  const changed: PackageChanged[] = [];
  let rebuilt = 0;
  for (const [name, pa] of a) {
    const pb = b.get(name);
    if (!pb) removed.push({ name, from: joinVersions(pa.versions) });
    else if (!sameSet(pa.versions, pb.versions)) changed.push({ name, from: joinVersions(pa.versions), to: joinVersions(pb.versions) });
    else if (!sameSet(pa.paths, pb.paths)) rebuilt++;
  }
  for (const [name, pb] of b) {
    if (!a.has(name)) added.push({ name, to: joinVersions(pb.versions) });
  }
  added.sort(byName);
  removed.sort(byName);
  changed.sort(byName);
  const totals = { added: added.length, removed: removed.length, changed: changed.length };
  const truncated = added.length > limit || removed.length > limit || changed.length > limit;
  return {
    added: added.slice(0, limit),
    removed: removed.slice(0, limit),
    changed: changed.slice(0, limit),
    rebuilt,
    truncated,
    totals,
  };
}
