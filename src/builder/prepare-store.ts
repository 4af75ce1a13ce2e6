// The builder Job's prepare step (design.md sections 3 and 4): the store volume is mounted at
// `volume` while the builder image's own /nix is still visible. Later steps mount the volume AT
// /nix, hiding the image's store, so:
//   - a volume without a Nix database gets a copy of the image's /nix (store, db, var), with
//     modes, symlinks, hard links, mtimes and (as root) owners preserved; the copy goes to a
//     temporary directory inside the volume and is moved into place at the end, `var` (the
//     database) last, so an interrupted copy is simply redone on the next run;
//   - a volume with a database must have the same Nix database schema version
//     (`var/nix/db/schema`) as the image's Nix, otherwise the step fails loudly: an older Nix
//     cannot read a newer database and a newer one would migrate it under the feet of other
//     builder images.
import { chmod, copyFile, lchown, link, lstat, lutimes, mkdir, readdir, readFile, readlink, rename, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.ts";

const SCHEMA_FILE = "var/nix/db/schema";
const SEED_DIR = ".niximage-seed";

/** The volume's Nix database is not one this image's Nix may use: every build on it would fail alike. */
export class StoreIncompatibleError extends Error {
  override name = "StoreIncompatibleError";
}

export interface PrepareStoreOptions {
  /** Where the store volume is mounted in this step. */
  volume: string;
  /** The image's own Nix root (default /nix). */
  nixRoot?: string;
  logger?: Logger;
}

export interface PrepareStoreResult {
  action: "seeded" | "checked";
  /** The Nix database schema version of the volume (after seeding). */
  schema: string;
  /** Files, directories and links copied (seeding only). */
  entries?: number;
  bytes?: number;
}

async function readSchema(root: string): Promise<string | undefined> {
  try {
    return (await readFile(join(root, SCHEMA_FILE), "utf8")).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

interface CopyState {
  /** dev:ino of files with several links -> their first copy. */
  inodes: Map<string, string>;
  entries: number;
  bytes: number;
  skipped: string[];
  asRoot: boolean;
}

async function preserveOwner(path: string, uid: number, gid: number, state: CopyState): Promise<void> {
  if (!state.asRoot) return;
  try {
    await lchown(path, uid, gid);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPERM") throw e;
  }
}

/** Copies `src` to `dst` (which must not exist), preserving what the store needs. */
async function copyTree(src: string, dst: string, state: CopyState): Promise<void> {
  const st = await lstat(src);
  if (st.isDirectory()) {
    await mkdir(dst, { mode: 0o700 });
    for (const name of (await readdir(src)).sort()) await copyTree(join(src, name), join(dst, name), state);
    await preserveOwner(dst, st.uid, st.gid, state);
    await chmod(dst, st.mode & 0o7777);
    await lutimes(dst, st.atime, st.mtime);
  } else if (st.isSymbolicLink()) {
    await symlink(await readlink(src), dst);
    await preserveOwner(dst, st.uid, st.gid, state);
    await lutimes(dst, st.atime, st.mtime);
  } else if (st.isFile()) {
    const key = `${st.dev}:${st.ino}`;
    const first = st.nlink > 1 ? state.inodes.get(key) : undefined;
    if (first !== undefined) {
      await link(first, dst);
      state.entries++;
      return;
    }
    await copyFile(src, dst);
    await preserveOwner(dst, st.uid, st.gid, state);
    await chmod(dst, st.mode & 0o7777);
    await lutimes(dst, st.atime, st.mtime);
    if (st.nlink > 1) state.inodes.set(key, dst);
    state.bytes += st.size;
  } else {
    // Sockets (the daemon socket), fifos, devices: runtime objects, not store content.
    state.skipped.push(src);
    return;
  }
  state.entries++;
}

/** Makes a tree deletable without CAP_DAC_OVERRIDE (store directories are read-only), then removes it. */
async function removeTree(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (st.isDirectory()) {
    await chmod(path, 0o700);
    for (const name of await readdir(path)) await removeTree(join(path, name));
  }
  await rm(path, { recursive: true, force: true });
}

export async function prepareStore(options: PrepareStoreOptions): Promise<PrepareStoreResult> {
  const nixRoot = options.nixRoot ?? "/nix";
  const volume = options.volume;
  const log = options.logger;
  const imageSchema = await readSchema(nixRoot);
  if (imageSchema === undefined) {
    throw new Error(`the builder image has no Nix database schema file ${join(nixRoot, SCHEMA_FILE)}: is Nix installed in this image?`);
  }
  if (!(await exists(volume))) throw new Error(`the store volume ${volume} is not mounted (no such directory)`);

  const volumeSchema = await readSchema(volume);
  if (volumeSchema !== undefined) {
    if (volumeSchema !== imageSchema) {
      const [theirs, ours] = [Number(volumeSchema), Number(imageSchema)];
      const which =
        theirs > ours
          ? "a newer Nix, whose database this Nix cannot read"
          : theirs < ours
            ? "an older Nix, which could no longer use it once this Nix migrated it"
            : "another Nix";
      throw new StoreIncompatibleError(
        `the store volume ${volume} holds a Nix database of schema version ${JSON.stringify(volumeSchema.slice(0, 20))}, written by ${which}; ` +
          `this builder image's Nix uses schema ${JSON.stringify(imageSchema)}: they cannot share a store. ` +
          "What to do: use a builder image with the Nix version that created the volume, or delete the volume's PVC so it is seeded afresh.",
      );
    }
    log?.info({ volume, schema: volumeSchema }, "store volume already seeded; schema matches");
    return { action: "checked", schema: volumeSchema };
  }
  if (await exists(join(volume, "var/nix/db/db.sqlite"))) {
    throw new StoreIncompatibleError(
      `the store volume ${volume} has a Nix database but no ${SCHEMA_FILE}: refusing to touch it. What to do: delete the volume's PVC so it is seeded afresh.`,
    );
  }

  // Seed: copy into a temporary directory inside the volume, then move into place.
  const seed = join(volume, SEED_DIR);
  await removeTree(seed);
  await mkdir(seed, { mode: 0o755 });
  const state: CopyState = { inodes: new Map(), entries: 0, bytes: 0, skipped: [], asRoot: typeof process.getuid === "function" && process.getuid() === 0 };
  const names = (await readdir(nixRoot)).filter((n) => n !== SEED_DIR).sort((a, b) => Number(a === "var") - Number(b === "var") || (a < b ? -1 : 1));
  log?.info({ from: nixRoot, volume, entries: names }, "seeding the store volume from the image's /nix");
  for (const name of names) await copyTree(join(nixRoot, name), join(seed, name), state);
  // Leftovers of an interrupted seed (no database, so nothing in them is registered).
  for (const name of names) await removeTree(join(volume, name));
  for (const name of names) await rename(join(seed, name), join(volume, name));
  await rm(seed, { recursive: true, force: true });
  if (state.skipped.length > 0) log?.info({ skipped: state.skipped.slice(0, 10) }, "special files not copied");
  const schema = (await readSchema(volume)) ?? imageSchema;
  log?.info({ volume, schema, entries: state.entries, bytes: state.bytes }, "store volume seeded");
  return { action: "seeded", schema, entries: state.entries, bytes: state.bytes };
}
