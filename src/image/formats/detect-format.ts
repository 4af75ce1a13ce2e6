// Decides what a built out path is, by content (magic bytes, tar entry names, JSON shape,
// shebang), never by name:
//
//   directory                                       -> package (the image is made from its closure)
//   tar / gzip / zstd whose first entry is docker-archive metadata or `<sha256>/layer.tar`,
//     `<id>/`, `<sha256>.json`, manifest.json, repositories, blobs/, oci-layout, index.json
//                                                   -> docker-archive (dockerTools.buildImage/buildLayeredImage)
//   executable `#!` script that runs nixpkgs' stream script (`/nix/store/<hash>-stream`, or
//     mentions stream_layered_image)               -> stream-layered (streamLayeredImage)
//   JSON object with numeric `version`, `image-config` (or `config`) and `layers`
//                                                   -> nix2container
//   anything else (a single binary, an unrelated tarball, other JSON)
//                                                   -> package
//
// An explicit format (spec `format` / `--format`) skips sniffing but is checked for a plausible
// file type, so a mistake fails here with a clear message instead of deep inside the pusher.
import { open, stat } from "node:fs/promises";
import { constants, createGunzip, createZstdDecompress, gunzipSync } from "node:zlib";
import { ImageFormatError, type ImageFormat } from "./format-error.ts";
import { looksLikeNix2Container } from "./nix2container.ts";
import { isTarHeader, normaliseEntryName, parseNumeric, TAR_BLOCK } from "./tar-reader.ts";

export interface DetectedFormat {
  format: ImageFormat;
  /** Why, in words (for logs and the build result). */
  reason: string;
  /** docker-archive files: the compression of the archive. */
  compression?: "none" | "gzip" | "zstd";
  /** The regular file or directory actually inspected (symlinks followed). */
  kind: "directory" | "file";
  executable: boolean;
}

export interface FileFacts {
  kind: "directory" | "file" | "other";
  executable: boolean;
  size: number;
}

/** Bytes read from the start of a file for sniffing. */
const SNIFF_BYTES = 64 * 1024;
/** Largest file parsed as JSON when sniffing for nix2container. */
const JSON_SNIFF_LIMIT = 32 * 1024 * 1024;

const archiveEntryPattern =
  /^(manifest\.json|repositories|index\.json|oci-layout|blobs|blobs\/.*|[0-9a-f]{64}(\.json|\/|\/layer\.tar|\/json|\/VERSION)?|[0-9a-f]{64}\/.*)$/;

const streamScriptPattern = /\/nix\/store\/[0-9a-z]{32}-stream(["'\s]|$)|stream_layered_image/m;

function sniffCompression(head: Buffer): "none" | "gzip" | "zstd" {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
  return "none";
}

/** Decompresses as much of a truncated gzip prefix as possible (synchronously). */
function partialGunzip(head: Buffer): Buffer {
  try {
    return gunzipSync(head, { finishFlush: constants.Z_SYNC_FLUSH });
  } catch {
    return Buffer.alloc(0);
  }
}

/** Decompresses as much of a truncated gzip/zstd prefix as the decoder gives before it runs out. */
function decompressPrefix(head: Buffer, compression: "gzip" | "zstd", limit = SNIFF_BYTES): Promise<Buffer> {
  return new Promise((resolve) => {
    const d = compression === "gzip" ? createGunzip() : createZstdDecompress();
    const out: Buffer[] = [];
    let n = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      d.destroy();
      resolve(Buffer.concat(out));
    };
    d.on("data", (c: Buffer) => {
      out.push(c);
      n += c.length;
      if (n >= limit) finish();
    });
    d.on("error", finish);
    d.on("end", finish);
    d.on("close", finish);
    d.end(head);
  });
}

/** The first non-root entry name of a tar prefix (skipping `./` and PAX/GNU headers), if readable. */
export function firstTarEntryName(tar: Buffer): string | undefined {
  let pos = 0;
  let longName: string | undefined;
  for (let guard = 0; guard < 16 && pos + TAR_BLOCK <= tar.length; guard++) {
    const block = tar.subarray(pos, pos + TAR_BLOCK);
    if (!isTarHeader(block)) return undefined;
    const type = String.fromCharCode(block[156]!);
    const size = parseNumeric(block, 124, 12);
    const dataBlocks = Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
    if (type === "L" && pos + TAR_BLOCK + size <= tar.length) {
      longName = tar
        .subarray(pos + TAR_BLOCK, pos + TAR_BLOCK + size)
        .toString("utf8")
        .replace(/\0+$/, "");
      pos += TAR_BLOCK + dataBlocks;
      continue;
    }
    if (type === "x" && pos + TAR_BLOCK + size <= tar.length) {
      const m = /\d+ path=([^\n]*)\n/.exec(tar.subarray(pos + TAR_BLOCK, pos + TAR_BLOCK + size).toString("utf8"));
      if (m) longName = m[1];
      pos += TAR_BLOCK + dataBlocks;
      continue;
    }
    if (type === "g" || type === "K") {
      pos += TAR_BLOCK + dataBlocks;
      continue;
    }
    const nul = block.indexOf(0);
    let name = longName ?? block.subarray(0, nul >= 0 && nul < 100 ? nul : 100).toString("utf8");
    if (longName === undefined && block.subarray(257, 263).toString("latin1") === "ustar\u0000") {
      const prefix = block.subarray(345, 500);
      const pn = prefix.indexOf(0);
      const p = prefix.subarray(0, pn >= 0 ? pn : prefix.length).toString("utf8");
      if (p !== "") name = `${p}/${name}`;
    }
    longName = undefined;
    const normalised = normaliseEntryName(name);
    if (normalised !== "" && normalised !== ".") return normalised;
    pos += TAR_BLOCK + (type === "5" ? 0 : dataBlocks);
  }
  return undefined;
}

/**
 * PURE: the format of a file from its first bytes (up to SNIFF_BYTES) and, for JSON, its parsed
 * content. `json` is only needed when `head` starts with `{`; `decompressed` is the start of a
 * gzip/zstd file's content (gzip is decompressed here when it is not given).
 */
export function sniffFormat(head: Buffer, facts: FileFacts, json?: unknown, decompressed?: Buffer): DetectedFormat {
  const base = { kind: facts.kind === "directory" ? ("directory" as const) : ("file" as const), executable: facts.executable };
  if (facts.kind === "directory") return { ...base, format: "package", reason: "the out path is a directory" };
  if (facts.kind !== "file") return { ...base, format: "package", reason: "the out path is not a regular file" };

  const compression = sniffCompression(head);
  const tar = compression === "none" ? head : (decompressed ?? (compression === "gzip" ? partialGunzip(head) : Buffer.alloc(0)));
  if (tar.length >= TAR_BLOCK && isTarHeader(tar.subarray(0, TAR_BLOCK))) {
    const first = firstTarEntryName(tar);
    if (first !== undefined && archiveEntryPattern.test(first)) {
      return {
        ...base,
        format: "docker-archive",
        compression,
        reason: `a ${compression === "none" ? "" : `${compression} `}tar whose first entry ${JSON.stringify(first)} is docker-archive layout`,
      };
    }
    return { ...base, format: "package", reason: `a tar archive, but its first entry ${JSON.stringify(first ?? "?")} is not docker-archive layout` };
  }
  if (compression !== "none") return { ...base, format: "package", reason: `${compression} data that is not a tar archive` };

  if (head.subarray(0, 2).toString("latin1") === "#!") {
    const text = head.toString("utf8");
    if (facts.executable && streamScriptPattern.test(text)) {
      return { ...base, format: "stream-layered", reason: "an executable script that runs a streamLayeredImage stream script" };
    }
    return {
      ...base,
      format: "package",
      reason: facts.executable ? "an executable script (not a streamLayeredImage script)" : "a script that is not executable",
    };
  }

  const firstChar = head.toString("utf8").trimStart()[0];
  if (firstChar === "{" && json !== undefined) {
    if (looksLikeNix2Container(json)) return { ...base, format: "nix2container", reason: "a JSON file with version, image-config and layers (nix2container)" };
    return { ...base, format: "package", reason: "a JSON file that is not a nix2container image" };
  }
  return { ...base, format: "package", reason: "a regular file of no image format" };
}

async function facts(path: string): Promise<FileFacts> {
  const st = await stat(path); // follows symlinks
  return {
    kind: st.isDirectory() ? "directory" : st.isFile() ? "file" : "other",
    executable: (st.mode & 0o111) !== 0,
    size: st.size,
  };
}

async function readHead(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

function parseJsonIfSmall(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export interface DetectFormatOptions {
  /** "auto" (default) sniffs; anything else is checked for plausibility and returned. */
  format?: ImageFormat | "auto";
}

/** Detects (or checks the forced) format of a built out path. */
export async function detectFormat(outPath: string, options: DetectFormatOptions = {}): Promise<DetectedFormat> {
  let f: FileFacts;
  try {
    f = await facts(outPath);
  } catch (e) {
    throw new ImageFormatError({
      format: options.format ?? "auto",
      source: outPath,
      reason: `cannot stat: ${(e as Error).message}`,
      hint: "Build the attribute first; the path must exist in the store.",
    });
  }
  let head: Buffer = Buffer.alloc(0);
  let json: unknown;
  let decompressed: Buffer | undefined;
  if (f.kind === "file") {
    head = await readHead(outPath, SNIFF_BYTES);
    const c = sniffCompression(head);
    if (c !== "none") decompressed = await decompressPrefix(head, c);
    if (head.toString("utf8").trimStart().startsWith("{") && f.size <= JSON_SNIFF_LIMIT) {
      json = parseJsonIfSmall((f.size <= head.length ? head : await readHead(outPath, f.size)).toString("utf8"));
    }
  }
  const sniffed = sniffFormat(head, f, json, decompressed);
  const forced = options.format ?? "auto";
  if (forced === "auto") return sniffed;
  const mismatch = (reason: string) =>
    new ImageFormatError({
      format: forced,
      source: outPath,
      reason: `format ${forced} was requested but ${reason}`,
      hint: `Remove the explicit format to detect it (it looks like ${sniffed.format}: ${sniffed.reason}).`,
    });
  switch (forced) {
    case "package":
      break;
    case "docker-archive":
      if (f.kind !== "file") throw mismatch("the out path is not a file");
      break;
    case "stream-layered":
      if (f.kind !== "file" || !f.executable) throw mismatch("the out path is not an executable file");
      break;
    case "nix2container":
      if (f.kind !== "file" || json === undefined) throw mismatch("the out path is not a JSON file");
      break;
  }
  const out: DetectedFormat = {
    format: forced,
    reason: `format ${forced} requested (content looks like ${sniffed.format})`,
    kind: sniffed.kind,
    executable: f.executable,
  };
  if (sniffed.compression !== undefined) out.compression = sniffed.compression;
  return out;
}
