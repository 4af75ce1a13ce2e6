// The contract between the builder Job's build step and its push step (design.md section 3): the
// build step writes two files into a shared directory, the push step reads only those and the
// store.
//
//   result.json   what was built: the locked revision, the out paths, the detected image format,
//                 what the default entrypoint needs (mainProgram, pname, name), closure totals,
//                 GC roots, seconds per phase (BuildResult below, `version: 1`)
//   closure.json  `nix path-info --json --recursive <outPath>` in the array form
//                 [{path, narSize, narHash, references}], sorted by path
//   locked-closure.json
//                 warm builds with --update-inputs only: the same for the attribute built from
//                 the flake's committed lock file (closure.json is then the updated inputs' one),
//                 so the warm report can say what updating the inputs would change
//
// The push step holds the push credentials and treats both files as untrusted input: they are
// validated here (store paths only, bounded sizes) before anything is read from the store.
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open, rename, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { ClosurePath } from "../image/path-info.ts";
import { parsePathInfo, PathInfoError } from "../image/path-info.ts";

const RESULT_FILE = "result.json";
const LOCKED_CLOSURE_FILE = "locked-closure.json";
const CLOSURE_FILE = "closure.json";

/** Store paths as the push step accepts them: `/nix/store/<32 chars>-<name>`, nothing below. */
export const storePathPattern = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}$/;

const storePath = z.string().regex(storePathPattern, "must be a store path /nix/store/<hash>-<name>");

export const imageFormats = ["package", "docker-archive", "stream-layered", "nix2container"] as const;

export const revisionSchema = z.strictObject({
  /** The locked flake URL (pinned revision). */
  url: z.string().min(1).max(2048),
  rev: z
    .string()
    .regex(/^[0-9a-f]{40}$/)
    .optional(),
  lastModified: z.number().int().min(0),
  narHash: z.string().min(1).max(128),
});
export type Revision = z.output<typeof revisionSchema>;

export const buildResultSchema = z.strictObject({
  version: z.literal(1),
  /** The flake ref as given to the build step. */
  flake: z.string().max(4096),
  attribute: z.string().max(256),
  revision: revisionSchema,
  /** e.g. x86_64-linux. */
  system: z.string().max(64),
  drvPath: z.string().max(512).optional(),
  /** All outputs of the attribute, `out` first. */
  outPaths: z.array(storePath).min(1).max(64),
  /** The output the image is made from (outPaths[0]). */
  outPath: storePath,
  format: z.enum(imageFormats),
  formatReason: z.string().max(1024),
  archiveCompression: z.enum(["none", "gzip", "zstd"]).optional(),
  mainProgram: z.string().max(256).optional(),
  pname: z.string().max(256).optional(),
  name: z.string().max(256).optional(),
  closure: z.strictObject({ paths: z.number().int().min(0), narSize: z.number().int().min(0) }),
  /** Warm builds: further attributes built into the store (kept alive by GC roots). */
  extraAttributes: z
    .array(z.strictObject({ attribute: z.string().max(256), outPaths: z.array(storePath).max(64) }))
    .max(64)
    .default([]),
  gcRoots: z.array(z.string().max(4096)).max(256).default([]),
  seconds: z.record(z.string().max(32), z.number()),
  // For the push step's SBOM and provenance (absent in results of older builder images).
  /** When the build step started (RFC 3339). */
  startedAt: z.string().max(64).optional(),
  /** `nix --version` of the build step, e.g. 2.8.0. */
  nixVersion: z.string().max(128).optional(),
  /** Every input of the flake's lock with its NAR hash. */
  inputs: z
    .array(
      z.strictObject({
        name: z.string().max(256),
        url: z.string().max(2048),
        narHash: z.string().max(128),
        rev: z.string().max(64).optional(),
      }),
    )
    .max(1024)
    .optional(),
  /** The package's meta (packages only). */
  meta: z
    .strictObject({
      licenses: z.array(z.string().max(128)).max(16).optional(),
      homepage: z.string().max(256).optional(),
      description: z.string().max(1024).optional(),
      version: z.string().max(256).optional(),
    })
    .optional(),
});
export type BuildResult = z.output<typeof buildResultSchema>;

/**
 * fetch.json: what the fetch step (the only step with the source credential) fetched, for the
 * build step, which builds from `sourcePath` in the store (with the flake's locked inputs already
 * there) and reports `revision` as the revision it built.
 */
const FETCH_FILE = "fetch.json";
export const fetchResultSchema = z.strictObject({
  version: z.literal(1),
  /** The flake ref as given to the fetch step. */
  flake: z.string().max(4096),
  revision: revisionSchema,
  revCount: z.number().int().min(0).optional(),
  /** The locked source tree in the store. */
  sourcePath: storePath,
  /** Store paths of the flake's inputs (transitively), fetched into the store. */
  inputPaths: z.array(storePath).max(4096),
  seconds: z.record(z.string().max(32), z.number()),
});
export type FetchResult = z.output<typeof fetchResultSchema>;

export async function writeFetchResult(dir: string, result: FetchResult): Promise<void> {
  await writeFileAtomic(join(dir, FETCH_FILE), `${JSON.stringify(fetchResultSchema.parse(result), null, 2)}\n`);
}

class StepFilesError extends Error {
  override name = "StepFilesError";
}

/** Writes a file atomically (temp file + rename) so a reader never sees half of it. */
async function writeFileAtomic(file: string, text: string, mode = 0o644): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, text, { mode });
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

function closureDocument(closure: readonly ClosurePath[]): string {
  const paths = [...closure].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return `${JSON.stringify(paths.map((p) => ({ path: p.path, narSize: p.narSize, ...(p.narHash ? { narHash: p.narHash } : {}), references: [...p.references].sort() })))}\n`;
}

export async function writeStepFiles(dir: string, result: BuildResult, closure: readonly ClosurePath[], lockedClosure?: readonly ClosurePath[]): Promise<void> {
  if (lockedClosure !== undefined) await writeFileAtomic(join(dir, LOCKED_CLOSURE_FILE), closureDocument(lockedClosure));
  // closure.json first: a result.json always has its closure next to it.
  await writeFileAtomic(join(dir, CLOSURE_FILE), closureDocument(closure));
  await writeFileAtomic(join(dir, RESULT_FILE), `${JSON.stringify(buildResultSchema.parse(result), null, 2)}\n`);
}

const MAX_RESULT_BYTES = 1024 * 1024;
/** About 100,000 store paths; JSON.parse needs several times this in memory. */
const MAX_CLOSURE_BYTES = 64 * 1024 * 1024;

/**
 * Reads at most `limit` bytes: the build step's directory is written by flake code, so a
 * multi-GB (or endless, e.g. a FIFO or /dev/zero symlink) file must fail before it fills memory.
 */
async function readBounded(file: string, limit: number): Promise<string> {
  const cannot = (e: unknown) => {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    return new StepFilesError(`cannot read ${file} (${code}): did the build step finish successfully?`);
  };
  let handle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    throw cannot(e);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new StepFilesError(`${file} is not a regular file; the build step writes plain files there`);
    if (st.size > limit) throw new StepFilesError(`${file} is ${st.size} bytes, more than ${limit}: refusing to read it`);
    // One byte more than stat says, to notice a file that grows while it is read.
    const buffer = Buffer.alloc(st.size + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > st.size) throw new StepFilesError(`${file} grew while it was read: refusing it`);
    }
    return buffer.toString("utf8", 0, length);
  } catch (e) {
    if (e instanceof StepFilesError) throw e;
    throw cannot(e);
  } finally {
    await handle.close();
  }
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // JSON.parse errors echo their input: never show it.
    throw new StepFilesError(`${file} is not valid JSON (${text.length} characters)`);
  }
}

export interface StepFiles {
  result: BuildResult;
  closure: ClosurePath[];
}

/** Reads and validates result.json and closure.json from the build step's directory. */
export async function readStepFiles(dir: string): Promise<StepFiles> {
  const resultFile = join(dir, RESULT_FILE);
  const closureFile = join(dir, CLOSURE_FILE);
  const parsed = buildResultSchema.safeParse(parseJson(await readBounded(resultFile, MAX_RESULT_BYTES), resultFile));
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new StepFilesError(`${resultFile} is not a build result: ${first ? `${first.path.join(".") || "(root)"}: ${first.message}` : "invalid"}`);
  }
  const result = parsed.data;
  const closure = await readClosureFile(closureFile);
  if (!closure.some((p) => p.path === result.outPath)) throw new StepFilesError(`${closureFile} does not contain the out path ${result.outPath}`);
  if (result.outPaths[0] !== result.outPath) throw new StepFilesError(`${resultFile}: outPath is not the first of outPaths`);
  return { result, closure };
}

/** Reads and validates a closure file (store paths only, bounded size). */
async function readClosureFile(closureFile: string): Promise<ClosurePath[]> {
  let closure: ClosurePath[];
  try {
    closure = parsePathInfo(parseJson(await readBounded(closureFile, MAX_CLOSURE_BYTES), closureFile));
  } catch (e) {
    if (e instanceof PathInfoError) throw new StepFilesError(`${closureFile}: ${e.message}`);
    throw e;
  }
  for (const p of closure) {
    if (!storePathPattern.test(p.path)) throw new StepFilesError(`${closureFile} lists ${JSON.stringify(p.path.slice(0, 200))}, which is not a store path`);
    for (const r of p.references) {
      if (!storePathPattern.test(r))
        throw new StepFilesError(`${closureFile}: ${p.path} references ${JSON.stringify(r.slice(0, 200))}, which is not a store path`);
    }
  }
  return closure;
}

/** The closure of the build from the committed lock file, when the build step updated the inputs. */
export async function readLockedClosure(dir: string): Promise<ClosurePath[] | undefined> {
  const file = join(dir, LOCKED_CLOSURE_FILE);
  try {
    await stat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return readClosureFile(file);
}

/** Reads and validates the fetch step's fetch.json. */
export async function readFetchResult(file: string): Promise<FetchResult> {
  const parsed = fetchResultSchema.safeParse(parseJson(await readBounded(file, MAX_RESULT_BYTES), file));
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new StepFilesError(`${file} is not a fetch result: ${first ? `${first.path.join(".") || "(root)"}: ${first.message}` : "invalid"}`);
  }
  return parsed.data;
}
