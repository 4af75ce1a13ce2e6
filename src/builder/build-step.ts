// The builder Job's build step (design.md section 3), also the first half of `build`:
//   lock the flake ref -> nix build <locked>#<attribute> (argv only) -> detect the image format ->
//   read the closure -> register GC roots -> write result.json + closure.json (step-files.ts).
// Untrusted flake code runs here (Nix evaluation and builders); this step holds no secrets.
import { mkdir } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { detectFormat, type DetectedFormat } from "../image/formats/detect-format.ts";
import type { ImageFormat } from "../image/formats/format-error.ts";
import type { ClosurePath } from "../image/path-info.ts";
import type { Logger } from "../log/logger.ts";
import { closureNarSize, queryClosure } from "../nix/closure.ts";
import { verifyClosure } from "../nix/verify-closure.ts";
import { requireBuildUsers } from "../nix/build-users.ts";
import { lockFlake, type LockedFlake } from "../nix/flake-metadata.ts";
import { listGcRoots, registerGcRoots } from "../nix/gc-root.ts";
import { collectGarbageIfFull } from "../nix/store-gc.ts";
import { buildFlakeAttribute, evalAttributeInfo, nixVersion, type AttributeInfo } from "../nix/nix-build.ts";
import type { NixCommand } from "../nix/nix-command.ts";
import { checkAttribute } from "../flake/flake-ref-policy.ts";
import { silentProgress, type ProgressSink } from "./progress-reporter.ts";
import { writeStepFiles, type BuildResult, type FetchResult, type Revision } from "./step-files.ts";
import { storeBuildRef } from "./fetch-step.ts";

class BuildStepError extends Error {
  override name = "BuildStepError";
}

export interface BuildStepOptions {
  nix: NixCommand;
  /** Flake ref without `#attribute` (already allowed by the flake ref policy). */
  flake: string;
  attribute: string;
  format?: ImageFormat | "auto";
  /** Where result.json and closure.json go (created when missing). */
  outDir: string;
  /** Per-image GC root directory, e.g. /nix/var/nix/gcroots/niximage/<ns>/<name>. */
  gcRootDir?: string;
  /** Generations of roots kept in gcRootDir (default 5). */
  keep?: number;
  /** Collect garbage after rooting this build when the store's filesystem is fuller than this. */
  gcThresholdPercent?: number;
  /** Generation number of this build's roots; default: one more than the highest present. */
  generation?: number;
  /** Warm builds: more attributes to build into the store and keep alive. */
  extraAttributes?: readonly string[];
  /**
   * Warm builds with updateInputs: build against freshly locked inputs (`--recreate-lock-file`
   * with `--no-write-lock-file`: the source is never written), and also build the attribute from
   * the committed lock file, whose closure goes to locked-closure.json for the closure diff.
   */
  updateInputs?: boolean;
  /**
   * What the fetch step fetched (it alone held the source credential): build from that store
   * path, offline for the source and its locked inputs, and report its revision.
   */
  fetched?: FetchResult;
  /** Refuse to build when this process is root and Nix has no build users (see nix/build-users.ts). */
  requireBuildUsers?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  progress?: ProgressSink;
  logger?: Logger;
}

export interface BuildStepOutput {
  result: BuildResult;
  closure: ClosurePath[];
  detected: DetectedFormat;
  info: AttributeInfo;
  /** With updateInputs: the closure of the attribute built from the committed lock file. */
  lockedClosure?: ClosurePath[];
}

/** x86_64-linux, aarch64-linux, ... of this machine (builds are for the local system). */
function localSystem(): string {
  const arch = process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : process.arch === "ia32" ? "i686" : process.arch;
  return `${arch}-${process.platform}`;
}

function revisionOf(locked: LockedFlake): Revision {
  const r: Revision = { url: locked.url, lastModified: locked.lastModified, narHash: locked.narHash };
  if (locked.rev !== undefined) r.rev = locked.rev;
  return r;
}

function secondsSince(start: number): number {
  return Math.round(performance.now() - start) / 1000;
}

export async function runBuildStep(options: BuildStepOptions): Promise<BuildStepOutput> {
  const progress = options.progress ?? silentProgress;
  const log = options.logger;
  const problem = checkAttribute(options.attribute);
  if (problem !== undefined) throw new BuildStepError(`attribute ${JSON.stringify(options.attribute.slice(0, 300))}: ${problem}`);
  for (const a of options.extraAttributes ?? []) {
    const p = checkAttribute(a);
    if (p !== undefined) throw new BuildStepError(`extra attribute ${JSON.stringify(a.slice(0, 300))}: ${p}`);
  }
  const common = {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.updateInputs ? { updateInputs: true } : {}),
    onProgress: (p: Parameters<ProgressSink["nix"]>[0]) => progress.nix(p),
  };
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const seconds: Record<string, number> = {};

  let t = performance.now();
  if (options.requireBuildUsers) await requireBuildUsers(options.nix, process.getuid?.(), options.signal ? { signal: options.signal } : {});
  const fetched = options.fetched;
  if (fetched && options.updateInputs)
    throw new BuildStepError("--update-inputs cannot build from a fetched source: updating inputs needs the source credential");
  if (fetched) for (const [phase, s] of Object.entries(fetched.seconds)) seconds[phase] = s;
  progress.phase("lock", fetched ? fetched.sourcePath : options.flake);
  const locked = fetched
    ? await lockFlake(options.nix, storeBuildRef(fetched), { ...common, refresh: false })
    : await lockFlake(options.nix, options.flake, common);
  if (fetched && locked.narHash !== fetched.revision.narHash)
    throw new BuildStepError(`the fetched source ${fetched.sourcePath} does not have the fetched NAR hash`);
  seconds.lock = secondsSince(t);
  log?.info({ flake: options.flake, url: locked.url, rev: locked.rev, lastModified: locked.lastModified }, "flake locked");

  t = performance.now();
  progress.phase("build", `${options.attribute}`);
  const built = await buildFlakeAttribute(options.nix, locked.url, options.attribute, common);
  seconds.build = secondsSince(t);
  const outPath = built.outPaths[0];
  if (outPath === undefined) throw new BuildStepError(`nix build of ${options.attribute} returned no out path`);
  log?.info({ attribute: options.attribute, outPaths: built.outPaths }, "built");

  t = performance.now();
  progress.phase("inspect", outPath);
  const detected = await detectFormat(outPath, { format: options.format ?? "auto" });
  let info: AttributeInfo = {};
  if (detected.format === "package") info = await evalAttributeInfo(options.nix, locked.url, options.attribute, common);
  log?.info({ format: detected.format, reason: detected.reason, ...info }, "image format");
  seconds.inspect = secondsSince(t);

  t = performance.now();
  progress.phase("closure", outPath);
  const closure = await queryClosure(options.nix, [outPath], options.signal ? { signal: options.signal } : {});
  seconds.closure = secondsSince(t);

  // The store volume is shared and outlives builds: what goes into the image must still be what
  // Nix registered (issue 12, item 2).
  t = performance.now();
  progress.phase("verify", `${closure.length} store paths`);
  await verifyClosure(
    options.nix,
    closure.map((p) => p.path),
    options.signal ? { signal: options.signal } : {},
  );
  seconds.verify = secondsSince(t);

  // With updated inputs, the same attribute from the committed lock file too: what the next image
  // build makes (so it is warm as well), and the "before" of the warm report's closure diff.
  let lockedClosure: ClosurePath[] | undefined;
  let lockedOutPaths: string[] = [];
  if (options.updateInputs) {
    t = performance.now();
    progress.phase("build", `${options.attribute} (committed lock file)`);
    const { updateInputs: _updated, ...committed } = common;
    const lockedBuild = await buildFlakeAttribute(options.nix, locked.url, options.attribute, committed);
    lockedOutPaths = lockedBuild.outPaths;
    const lockedOut = lockedBuild.outPaths[0];
    if (lockedOut === undefined) throw new BuildStepError(`nix build of ${options.attribute} from the committed lock file returned no out path`);
    lockedClosure = await queryClosure(options.nix, [lockedOut], options.signal ? { signal: options.signal } : {});
    log?.info({ attribute: options.attribute, outPath: lockedOut, updatedOutPath: outPath }, "built from the committed lock file too");
    seconds.lockedBuild = secondsSince(t);
  }

  const extraAttributes: BuildResult["extraAttributes"] = [];
  if ((options.extraAttributes ?? []).length > 0) {
    t = performance.now();
    for (const attribute of options.extraAttributes ?? []) {
      progress.phase("build", attribute);
      const extra = await buildFlakeAttribute(options.nix, locked.url, attribute, common);
      extraAttributes.push({ attribute, outPaths: extra.outPaths });
    }
    seconds.extra = secondsSince(t);
  }

  const gcRoots: string[] = [];
  if (options.gcRootDir !== undefined) {
    t = performance.now();
    progress.phase("gc-roots", options.gcRootDir);
    const rootsDir = dirname(options.gcRootDir);
    const image = basename(options.gcRootDir);
    const generation = options.generation ?? Math.max(0, ...(await listGcRoots(rootsDir, image)).map((e) => e.generation + 1));
    const paths = [...new Set([...built.outPaths, ...lockedOutPaths, ...extraAttributes.flatMap((e) => e.outPaths)])];
    const registered = await registerGcRoots(options.nix, {
      rootsDir,
      image,
      generation,
      paths,
      keep: options.keep ?? 5,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    gcRoots.push(...registered.created);
    if (registered.removed.length > 0) log?.info({ removed: registered.removed.length }, "old GC roots removed");
    seconds.gcRoots = secondsSince(t);
  }
  if (options.gcThresholdPercent !== undefined) {
    t = performance.now();
    progress.phase("gc", `store use above ${options.gcThresholdPercent}%?`);
    const gc = await collectGarbageIfFull(options.nix, { thresholdPercent: options.gcThresholdPercent, ...(options.signal ? { signal: options.signal } : {}) });
    if (gc.collected) {
      log?.info({ usedPercent: gc.usedPercent, freedBytes: gc.freedBytes }, "store above the threshold: garbage collected");
      seconds.gc = secondsSince(t);
    }
  }

  // For the provenance; a Nix that cannot say its version does not fail the build.
  const version = await nixVersion(options.nix, options.signal ? { signal: options.signal } : {}).catch(() => undefined);
  seconds.buildStep = secondsSince(started);
  const result: BuildResult = {
    version: 1,
    flake: options.flake,
    attribute: options.attribute,
    revision: fetched ? fetched.revision : revisionOf(locked),
    system: localSystem(),
    outPaths: built.outPaths,
    outPath,
    format: detected.format,
    formatReason: detected.reason,
    closure: { paths: closure.length, narSize: closureNarSize(closure) },
    extraAttributes,
    gcRoots,
    seconds,
    startedAt,
    inputs: locked.inputs,
  };
  if (version) result.nixVersion = version;
  const meta = {
    ...(info.licenses ? { licenses: info.licenses } : {}),
    ...(info.homepage ? { homepage: info.homepage } : {}),
    ...(info.description ? { description: info.description } : {}),
    ...(info.version ? { version: info.version } : {}),
  };
  if (Object.keys(meta).length > 0) result.meta = meta;
  const drvPath = built.derivations[0]?.drvPath;
  if (drvPath !== undefined) result.drvPath = drvPath;
  if (detected.compression !== undefined) result.archiveCompression = detected.compression;
  if (info.mainProgram !== undefined) result.mainProgram = info.mainProgram;
  if (info.pname !== undefined) result.pname = info.pname;
  if (info.name !== undefined) result.name = info.name;

  await mkdir(options.outDir, { recursive: true });
  await writeStepFiles(options.outDir, result, closure, lockedClosure);
  return { result, closure, detected, info, ...(lockedClosure ? { lockedClosure } : {}) };
}
