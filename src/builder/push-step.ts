// The builder Job's push step (design.md section 3), also the second half of `build`: reads ONLY
// the build step's directory (result.json, closure.json) and the store, assembles the image for
// the detected format and pushes it:
//   package         layers planned from the closure (push-closure.ts), config with defaults
//   nix2container   the JSON's layers of store paths, tarred by us, its config (+ user settings)
//   docker-archive  the tarball's layers and config as they are (push-archive.ts)
//   stream-layered  the script's stdout, consumed while it runs (push-archive.ts)
// Tags: the immutable `rev-…` tag plus the requested ones.
import { stat } from "node:fs/promises";
import { attachAttestations, type AttestationSettings, type AttestResult } from "../attest/attach-attestations.ts";
import { readNix2Container, nix2ContainerFeatures } from "../image/formats/nix2container.ts";
import type { DockerArchiveSource } from "../image/formats/docker-archive.ts";
import { noLayerCache, type LayerCache } from "../image/layer-cache.ts";
import { pushClosure, type PushClosureResult, type RegistryPusher } from "../image/push-closure.ts";
import type { Logger } from "../log/logger.ts";
import type { ImageRuntimeConfig, LayerCompression } from "../oci/image-manifest.ts";
import type { ReferrersRegistry } from "../oci/referrers.ts";
import { fromOciConfig, mergeImageConfig, packageDefaults } from "./image-config.ts";
import { imageTags } from "./image-tags.ts";
import { pushDockerArchive } from "./push-archive.ts";
import { acceptStream } from "./stream-handoff.ts";
import type { PushStepResult } from "./step-results.ts";
import { silentProgress, type ProgressSink } from "./progress-reporter.ts";
import { readStepFiles, type StepFiles } from "./step-files.ts";

class PushStepError extends Error {
  override name = "PushStepError";
}

export interface PushStepOptions {
  /** The build step's directory. */
  from: string;
  registry: RegistryPusher & ReferrersRegistry;
  repository: string;
  /** Tags besides the immutable one. */
  tags?: readonly string[];
  /** The build's time (RFC 3339): also push the sortable tag `<YYYYMMDDHHMMSS>-<rev>` (image-tags.ts). */
  sortableTagTime?: string;
  /**
   * The image in use and the Nix output it was made from (same spec, same builder images: the
   * controller checks that). When this build's output is the same path, the image would be the
   * same bytes: nothing is pushed, not even a tag, and the result says `unchanged`.
   */
  unchangedIf?: { outPath: string; digest: string };
  maxLayers?: number;
  compression?: LayerCompression;
  /** The user's image settings (spec.image.config / flags); they win over defaults. */
  imageConfig?: ImageRuntimeConfig;
  cache?: LayerCache;
  onCacheMiss?: "upload" | "hash-first";
  /** Layers processed at once (default 3). */
  concurrency?: number;
  /** uid/gid a streamLayeredImage script runs as when this process is root (default 65534). */
  scriptUser?: { uid: number; gid: number };
  /**
   * Files the script must not be able to read (the push credentials). A streamLayeredImage script
   * is code from the flake: when it could read one of these, it is not run at all.
   */
  protectedFiles?: readonly string[];
  /**
   * Take a streamLayeredImage script's output from the stream step through this Unix socket
   * (stream-handoff.ts) instead of running the script here (issue 12, item 4).
   */
  streamSocket?: string;
  /** SBOM, provenance and signatures attached to the pushed digest (none when absent). */
  attest?: PushAttestOptions;
  progress?: ProgressSink;
  logger?: Logger;
  signal?: AbortSignal;
}

export interface PushAttestOptions extends AttestationSettings {
  operatorVersion: string;
  /** The builder Job's image, for the provenance. */
  builderImage?: string;
  /** The builder Job's name, for the provenance. */
  job?: string;
}

export interface PushStepOutput {
  result: PushStepResult;
  /** Absent when nothing was pushed (an unchanged output). */
  push?: PushClosureResult;
  files: StepFiles;
  attested?: AttestResult;
}

/** OCI architecture of a Nix system. */
export function ociPlatform(system: string): { architecture: string; variant?: string } {
  const arch = system.split("-")[0] ?? "";
  switch (arch) {
    case "x86_64":
      return { architecture: "amd64" };
    case "aarch64":
      return { architecture: "arm64", variant: "v8" };
    case "i686":
      return { architecture: "386" };
    case "armv7l":
      return { architecture: "arm", variant: "v7" };
    case "riscv64":
      return { architecture: "riscv64" };
    default:
      return { architecture: arch || "amd64" };
  }
}

/** Whether uid/gid can read `file` by its permission bits (ignoring ACLs and directory search rights). */
async function readableBy(file: string, uid: number, gid: number): Promise<boolean> {
  let st;
  try {
    st = await stat(file);
  } catch {
    return false;
  }
  if (uid === 0) return true;
  if (st.uid === uid) return (st.mode & 0o400) !== 0;
  if (st.gid === gid) return (st.mode & 0o040) !== 0;
  return (st.mode & 0o004) !== 0;
}

function onlyLabels(config: ImageRuntimeConfig | undefined): string[] {
  return Object.keys(config ?? {}).filter((k) => k !== "labels" && (config as Record<string, unknown>)[k] !== undefined);
}

export async function runPushStep(options: PushStepOptions): Promise<PushStepOutput> {
  const progress = options.progress ?? silentProgress;
  const log = options.logger;
  const files = await readStepFiles(options.from);
  const { result: built, closure } = files;
  const tags = imageTags(
    built.revision,
    built.outPath,
    options.tags ?? [],
    options.sortableTagTime !== undefined ? { sortableAt: options.sortableTagTime } : {},
  );
  const cache = options.cache ?? noLayerCache;
  const onProgress = (p: Parameters<ProgressSink["push"]>[0]) => progress.push(p);
  const common = {
    registry: options.registry,
    repository: options.repository,
    tags,
    cache,
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    onProgress,
  };
  const closureOptions = {
    ...common,
    closure,
    ...(options.maxLayers !== undefined ? { maxLayers: options.maxLayers } : {}),
    ...(options.compression !== undefined ? { compression: options.compression } : {}),
    ...(options.onCacheMiss !== undefined ? { onCacheMiss: options.onCacheMiss } : {}),
    ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
  };
  if (options.unchangedIf !== undefined && options.unchangedIf.outPath === built.outPath) {
    // No registry request at all: an unchanged output is an exact no-op (issue 14). No revision
    // tag either: a new tag on the same digest would look like a new image to tag-following
    // image updaters (and could start a Git write-back loop).
    log?.info({ outPath: built.outPath, digest: options.unchangedIf.digest }, "same Nix output as the image in use: nothing to push");
    const result: PushStepResult = {
      image: `${options.registry.host}/${options.repository}@${options.unchangedIf.digest}`,
      digest: options.unchangedIf.digest,
      tags: [],
      format: built.format,
      revision: built.revision,
      layers: { total: 0, pushed: 0, skipped: 0, mounted: 0 },
      bytesPushed: 0,
      seconds: { ...built.seconds, push: 0 },
      outPath: built.outPath,
      unchanged: true,
    };
    return { result, files };
  }
  const platform = ociPlatform(built.system);
  progress.phase("push", `${options.repository} (${built.format})`);

  let push: PushClosureResult;
  switch (built.format) {
    case "package": {
      const info = {
        ...(built.mainProgram ? { mainProgram: built.mainProgram } : {}),
        ...(built.pname ? { pname: built.pname } : {}),
        ...(built.name ? { name: built.name } : {}),
      };
      const defaults = await packageDefaults({ outPath: built.outPath, info, closure });
      const config = mergeImageConfig(defaults.config, options.imageConfig ?? {});
      if (defaults.warning && config.entrypoint === undefined) log?.warn({ outPath: built.outPath }, `no entrypoint: ${defaults.warning}`);
      push = await pushClosure({ ...closureOptions, roots: [built.outPath], image: { config, ...platform } });
      break;
    }
    case "nix2container": {
      const image = await readNix2Container(built.outPath);
      const unsupported = nix2ContainerFeatures(image);
      if (unsupported.length > 0) {
        throw new PushStepError(
          `nix2container image ${built.outPath} uses ${unsupported.join(", ")}, which this pusher does not reproduce yet; build the image without them, or push the attribute as a plain package`,
        );
      }
      const known = new Set(closure.map((p) => p.path));
      const missing = image.layers.flatMap((l) => l.paths).filter((p) => !known.has(p));
      if (missing.length > 0) throw new PushStepError(`nix2container image ${built.outPath} lists ${missing[0]}, which is not in its closure`);
      const oci = fromOciConfig(image.config);
      if (oci.ignored.length > 0) log?.warn({ keys: oci.ignored }, "nix2container image-config keys not carried over");
      const config = mergeImageConfig(oci.config, options.imageConfig ?? {});
      const arch = image.architecture !== undefined ? { architecture: image.architecture } : platform;
      push = await pushClosure({
        ...closureOptions,
        roots: [built.outPath],
        layers: image.layers.map((l) => ({ paths: l.paths })),
        image: { config, ...arch, ...(image.created !== undefined ? { created: image.created } : {}) },
      });
      break;
    }
    case "docker-archive":
    case "stream-layered": {
      const ignored = onlyLabels(options.imageConfig);
      if (ignored.length > 0) log?.warn({ settings: ignored }, `only labels are applied to a prebuilt ${built.format} image; ignoring the other settings`);
      let source: DockerArchiveSource;
      let totalBytes: number | undefined;
      if (built.format === "docker-archive") {
        source = { kind: "file", path: built.outPath };
        totalBytes = (await stat(built.outPath)).size;
      } else if (options.streamSocket !== undefined) {
        // The script runs in the stream step's container (no Secret, no cache); its stdout arrives here.
        progress.phase("stream", `waiting for the stream step on ${options.streamSocket}`);
        const stream = await acceptStream(options.streamSocket, options.signal ? { signal: options.signal } : {});
        source = { kind: "stream", stream, description: `${built.outPath} (run by the stream step)` };
      } else {
        // The script is code from the flake: a clean environment, no credentials readable.
        const asRoot = typeof process.getuid === "function" && process.getuid() === 0;
        const user = asRoot ? (options.scriptUser ?? { uid: 65534, gid: 65534 }) : { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
        for (const file of options.protectedFiles ?? []) {
          if (await readableBy(file, user.uid, user.gid)) {
            throw new PushStepError(
              `refusing to run the streamLayeredImage script ${built.outPath}: it is code from the flake and could read the push credentials or the layer cache key ${file} as uid ${user.uid}. ` +
                "What to do: run the push step as root (it then runs the script as uid 65534) with those files readable by root only (Secret volume defaultMode 0400), or build the image as a docker-archive (dockerTools.buildLayeredImage) or a plain package",
            );
          }
        }
        source = { kind: "command", argv: [built.outPath], env: { PATH: "/usr/bin:/bin" }, cwd: "/", ...(asRoot ? user : {}) };
      }
      if (options.compression === "gzip") log?.warn({}, `layers of a prebuilt ${built.format} image are pushed as stored; --compression does not apply`);
      push = await pushDockerArchive({
        ...common,
        // A socket cannot be read twice: no cache hits to re-check by a second read.
        ...(source.kind === "stream" ? { cache: noLayerCache } : {}),
        source,
        cacheId: built.outPath,
        ...(options.imageConfig?.labels ? { labels: options.imageConfig.labels } : {}),
        ...(totalBytes !== undefined ? { totalBytes } : {}),
      });
      break;
    }
  }
  let attested: AttestResult | undefined;
  const attest = options.attest;
  if (attest && (attest.sbom || attest.provenance || attest.signingKey)) {
    progress.phase("attest", `${options.repository}@${push.digest}`);
    attested = await attachAttestations({
      ...attest,
      registry: options.registry,
      repository: options.repository,
      image: { mediaType: push.mediaType, digest: push.digest, size: push.size },
      build: built,
      closure,
      ...(log ? { logger: log } : {}),
    });
  }
  progress.done();
  // The build step's phases (lock, build, closure, ...) and the push's, as `build` reports them:
  // the controller copies these into status.lastBuild.durations.
  const { total: pushTotal, ...pushPhases } = push.seconds;
  const result: PushStepResult = {
    image: `${options.registry.host}/${options.repository}@${push.digest}`,
    digest: push.digest,
    tags: push.tags,
    format: built.format,
    revision: built.revision,
    layers: push.layers,
    bytesPushed: push.bytesPushed,
    seconds: { ...built.seconds, ...pushPhases, push: pushTotal ?? 0, ...(attested ? { attest: attested.seconds } : {}) },
    ...(attested ? { attestations: attested.digests } : {}),
    outPath: built.outPath,
  };
  return { result, push, files, ...(attested ? { attested } : {}) };
}
