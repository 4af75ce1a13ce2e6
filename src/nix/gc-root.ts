// Per-image GC roots on the store volume, so `nix-collect-garbage` keeps the last N successful
// closures of every image and frees the rest.
//
// Layout: `<rootsDir>/<image>/<generation>` for the first path of a build and
// `<generation>-<k>` for further ones (several outputs, warm attributes). Each link is registered
// with `nix-store --add-root <link> --indirect --realise <path>`: Nix records it under
// /nix/var/nix/gcroots/auto, which is how a root outside the gcroots directory counts. Removing an
// old link is enough to release it: the dangling auto entry is dropped by the next GC.
// Put rootsDir on the store volume (e.g. /nix/var/nix/gcroots/niximage) so roots live exactly as
// long as the store they protect.
import { lstat, mkdir, readdir, readlink, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { NixCommand, NixRunOptions } from "./nix-command.ts";
import { NixError } from "./nix-error.ts";

export interface GcRootEntry {
  generation: number;
  /** 0 for `<generation>`, k for `<generation>-<k>`. */
  index: number;
  link: string;
  /** The store path the link points to (undefined when unreadable). */
  target?: string;
}

export interface RegisterGcRootsOptions {
  rootsDir: string;
  /** A key per image: `<namespace>_<name>` or similar; [a-z0-9._-], no path separators. */
  image: string;
  /** Monotonic per image: the build number. */
  generation: number;
  /** Store paths to keep alive, e.g. the build's out paths (their closures are kept too). */
  paths: readonly string[];
  /** Generations to keep, this one included (>= 1). */
  keep: number;
  signal?: AbortSignal;
}

export interface RegisterGcRootsResult {
  created: string[];
  /** Links removed because their generation fell out of the last `keep`. */
  removed: string[];
}

const imageKeyPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;
const entryPattern = /^(\d{1,15})(?:-(\d{1,6}))?$/;

function badInput(reason: string): NixError {
  return new NixError({ kind: "invalid-settings", what: "register GC roots", reason, hint: "This is a bug in the caller." });
}

function imageDir(rootsDir: string, image: string): string {
  if (!imageKeyPattern.test(image) || image.includes("..")) badInputThrow(`image key ${JSON.stringify(image.slice(0, 100))} is not [A-Za-z0-9._-]`);
  return join(rootsDir, image);
}

function badInputThrow(reason: string): never {
  throw badInput(reason);
}

/** PURE: `<generation>` / `<generation>-<k>` -> numbers; undefined for foreign names. */
export function parseRootName(name: string): { generation: number; index: number } | undefined {
  const m = entryPattern.exec(name);
  if (!m) return undefined;
  return { generation: Number(m[1]), index: m[2] === undefined ? 0 : Number(m[2]) };
}

/** PURE: the generations to remove so that only the `keep` highest remain. */
export function generationsToRemove(generations: Iterable<number>, keep: number): number[] {
  const sorted = [...new Set(generations)].sort((a, b) => b - a);
  return sorted.slice(Math.max(keep, 0)).sort((a, b) => a - b);
}

/** The roots of one image, by generation then index. */
export async function listGcRoots(rootsDir: string, image: string): Promise<GcRootEntry[]> {
  const dir = imageDir(rootsDir, image);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  const out: GcRootEntry[] = [];
  for (const name of names) {
    const parsed = parseRootName(name);
    if (!parsed) continue;
    const link = join(dir, name);
    const st = await lstat(link).catch(() => undefined);
    if (!st?.isSymbolicLink()) continue;
    const entry: GcRootEntry = { ...parsed, link };
    const target = await readlink(link).catch(() => undefined);
    if (target !== undefined) entry.target = target;
    out.push(entry);
  }
  out.sort((a, b) => a.generation - b.generation || a.index - b.index);
  return out;
}

/** Removes all but the `keep` newest generations of an image; returns the removed links. */
export async function pruneGcRoots(rootsDir: string, image: string, keep: number): Promise<string[]> {
  const entries = await listGcRoots(rootsDir, image);
  const drop = new Set(
    generationsToRemove(
      entries.map((e) => e.generation),
      keep,
    ),
  );
  const removed: string[] = [];
  for (const e of entries) {
    if (!drop.has(e.generation)) continue;
    try {
      await unlink(e.link);
      removed.push(e.link);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  return removed;
}

/** Registers one root per path for this generation, then prunes older generations. */
export async function registerGcRoots(nix: NixCommand, options: RegisterGcRootsOptions): Promise<RegisterGcRootsResult> {
  if (!Number.isSafeInteger(options.generation) || options.generation < 0) badInputThrow(`generation ${options.generation} is not a non-negative integer`);
  if (!Number.isSafeInteger(options.keep) || options.keep < 1) badInputThrow(`keep ${options.keep} must be at least 1`);
  const dir = imageDir(options.rootsDir, options.image);
  await mkdir(dir, { recursive: true });
  const created: string[] = [];
  for (const [k, path] of options.paths.entries()) {
    if (!path.startsWith("/") || /[\s\0]/.test(path)) badInputThrow(`${JSON.stringify(path.slice(0, 200))} is not a store path`);
    const link = join(dir, k === 0 ? String(options.generation) : `${options.generation}-${k}`);
    const run: NixRunOptions = { what: `register GC root ${link}` };
    if (options.signal) run.signal = options.signal;
    await nix.runStore(["--add-root", link, "--indirect", "--realise", path], run);
    created.push(link);
  }
  // Earlier runs of the same generation may have registered more paths than this one.
  const stale = (await listGcRoots(options.rootsDir, options.image)).filter((e) => e.generation === options.generation && !created.includes(e.link));
  for (const e of stale) await unlink(e.link).catch(() => undefined);
  const removed = await pruneGcRoots(options.rootsDir, options.image, options.keep);
  return { created, removed };
}
