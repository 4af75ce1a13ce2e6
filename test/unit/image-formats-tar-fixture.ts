// Test helper: builds tar bytes in memory (ustar, with GNU long-name or PAX headers on request)
// and docker-archives from layer contents, for the image-formats tests.
import { createHash } from "node:crypto";

export interface TarFixtureEntry {
  name: string;
  type?: "file" | "dir" | "symlink" | "hardlink";
  data?: Buffer | string;
  linkName?: string;
  /** How to store a name longer than 100 bytes (default: ustar prefix when possible). */
  longName?: "gnu" | "pax";
  mode?: number;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function header(name: string, size: number, typeFlag: string, linkName = "", mode = 0o644, ustarPrefix = ""): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, "utf8");
  b.write(octal(mode, 8), 100, "latin1");
  b.write(octal(0, 8), 108, "latin1");
  b.write(octal(0, 8), 116, "latin1");
  b.write(octal(size, 12), 124, "latin1");
  b.write(octal(1, 12), 136, "latin1");
  b.write("        ", 148, "latin1");
  b.write(typeFlag, 156, "latin1");
  b.write(linkName, 157, 100, "utf8");
  b.write("ustar\u0000", 257, "latin1");
  b.write("00", 263, "latin1");
  b.write(ustarPrefix, 345, 155, "utf8");
  let sum = 0;
  for (const x of b) sum += x;
  b.write(octal(sum, 7) + " ", 148, "latin1");
  return b;
}

function pad(data: Buffer): Buffer {
  const rest = data.length % 512;
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(512 - rest)]);
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return `${len}${body}`;
}

export function tarBytes(entries: readonly TarFixtureEntry[], options: { endMarker?: boolean; trailingZeros?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? "file";
    const data = type === "file" ? Buffer.from(e.data ?? "") : Buffer.alloc(0);
    const flag = type === "file" ? "0" : type === "dir" ? "5" : type === "symlink" ? "2" : "1";
    let name = type === "dir" && !e.name.endsWith("/") ? `${e.name}/` : e.name;
    let prefix = "";
    if (Buffer.byteLength(name) > 100) {
      if (e.longName === "gnu") {
        const ln = Buffer.from(`${name}\0`);
        parts.push(header("././@LongLink", ln.length, "L"), pad(ln));
        name = name.slice(0, 100);
      } else if (e.longName === "pax") {
        const rec = Buffer.from(paxRecord("path", name));
        parts.push(header("PaxHeaders/x", rec.length, "x"), pad(rec));
        name = name.slice(0, 100);
      } else {
        const cut = name.lastIndexOf("/", name.length - 2);
        prefix = name.slice(0, cut);
        name = name.slice(cut + 1);
      }
    }
    parts.push(header(name, data.length, flag, e.linkName ?? "", e.mode ?? (type === "dir" ? 0o755 : 0o644), prefix));
    if (data.length > 0) parts.push(pad(data));
  }
  if (options.endMarker !== false) parts.push(Buffer.alloc(1024 + (options.trailingZeros ?? 0)));
  return Buffer.concat(parts);
}

export function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export interface ArchiveFixture {
  bytes: Buffer;
  layers: Buffer[];
  diffIds: string[];
  configBytes: Buffer;
  configName: string;
  manifest: unknown;
}

/**
 * A docker-archive with the given layer contents (each a small tar made here unless given raw),
 * in the given entry order ("manifest-last" like streamLayeredImage, or "manifest-first").
 */
export function dockerArchive(
  layerContents: readonly Buffer[],
  options: { order?: "manifest-last" | "manifest-first"; extra?: TarFixtureEntry[]; diffIds?: string[]; repoTags?: string[] } = {},
): ArchiveFixture {
  const diffIds = options.diffIds ?? layerContents.map((l) => `sha256:${sha256Hex(l)}`);
  const configBytes = Buffer.from(
    JSON.stringify({ architecture: "amd64", os: "linux", config: { Entrypoint: ["/bin/hello"] }, rootfs: { type: "layers", diff_ids: diffIds } }),
  );
  const configName = `${sha256Hex(configBytes)}.json`;
  const layerNames = layerContents.map((l) => `${sha256Hex(l)}/layer.tar`);
  const manifest = [{ Config: configName, RepoTags: options.repoTags ?? ["x:latest"], Layers: layerNames }];
  const layerEntries: TarFixtureEntry[] = layerContents.map((l, i) => ({ name: layerNames[i]!, data: l }));
  const meta: TarFixtureEntry[] = [
    { name: configName, data: configBytes },
    { name: "manifest.json", data: JSON.stringify(manifest) },
  ];
  const entries =
    options.order === "manifest-first"
      ? [...meta.slice().reverse(), ...(options.extra ?? []), ...layerEntries]
      : [...layerEntries, ...(options.extra ?? []), ...meta];
  return { bytes: tarBytes(entries), layers: [...layerContents], diffIds, configBytes, configName, manifest };
}

/** A small inner layer tar with one file of `size` pseudo-random bytes. */
export function layerTar(seed: number, size: number): Buffer {
  const data = Buffer.alloc(size);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    data[i] = x >>> 24;
  }
  return tarBytes([
    { name: "bin", type: "dir" },
    { name: `bin/file-${seed}`, data },
  ]);
}
