// Hostile inputs for the push step (issue 12, item 8), shared by the resource-exhaustion test and
// bench/push-exhaustion.ts (which measures the push step's peak RSS under each): build-step
// directories whose result.json names a store path that is a gzip bomb or a docker-archive full of
// huge JSON entries, multi-GB step files, and a "registry" whose response bodies never end.
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdir, truncate, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { createWriteStream } from "node:fs";
import { createGzip } from "node:zlib";

/** A ustar header for a regular file `name` of `size` bytes. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, "utf8");
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(size.toString(8).padStart(11, "0") + "\0", 124);
  h.write("00000000001\0", 136);
  h.write("        ", 148);
  h.write("0", 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

function padding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** Tar entries (name + bytes or a size of zeros), streamed. */
async function* tarStream(entries: { name: string; bytes?: Buffer; zeros?: number }[]): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(1024 * 1024);
  for (const e of entries) {
    const size = e.bytes?.length ?? e.zeros ?? 0;
    yield tarHeader(e.name, size);
    if (e.bytes) yield e.bytes;
    else for (let left = size; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
    yield padding(size);
  }
  yield Buffer.alloc(1024);
}

async function writeTar(file: string, entries: { name: string; bytes?: Buffer; zeros?: number }[], gzip: boolean): Promise<void> {
  const source = Readable.from(tarStream(entries));
  if (gzip) await pipeline(source, createGzip({ level: 9 }), createWriteStream(file));
  else await pipeline(source, createWriteStream(file));
}

const manifest = (layers: string[]) => Buffer.from(JSON.stringify([{ Config: "config.json", RepoTags: [], Layers: layers }]));

/**
 * A gzip-compressed docker-archive: manifest.json first, then an entry of `zerosMiB` MiB of zeros
 * (about 1000:1 compressed). The manifest lists another layer, so nothing is uploaded: the bound
 * must hold while the archive is only read.
 */
export async function gzipBombArchive(file: string, zerosMiB = 2048): Promise<void> {
  await writeTar(
    file,
    [
      { name: "manifest.json", bytes: manifest(["b/layer.tar"]) },
      { name: "a/layer.tar", zeros: zerosMiB * 1024 * 1024 },
    ],
    true,
  );
}

/** An uncompressed docker-archive with `count` JSON-looking entries of `eachMiB` MiB before its manifest. */
export async function hugeJsonArchive(file: string, count = 6, eachMiB = 15): Promise<void> {
  const big = Buffer.alloc(eachMiB * 1024 * 1024, 0x20);
  big.write("[", 0);
  big.write("]", big.length - 1);
  const entries = Array.from({ length: count }, (_, i) => ({ name: `junk${i}.json`, bytes: big }));
  await writeTar(file, [...entries, { name: "manifest.json", bytes: manifest([]) }], false);
}

/** Adds `file` to the store (as root in the test bed) and returns its store path. */
export function addToStore(file: string, env: NodeJS.ProcessEnv): string {
  const r = spawnSync("nix-store", ["--add", file], { env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`nix-store --add ${file} failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** A build-step directory naming `outPath` as a docker-archive (what a malicious flake could make the build step write). */
export async function archiveStepDir(dir: string, outPath: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const result = {
    version: 1,
    flake: "git+https://example.com/evil.git",
    attribute: "default",
    revision: { url: "git+https://example.com/evil.git?rev=" + "0".repeat(40), rev: "0".repeat(40), lastModified: 0, narHash: "sha256-x" },
    system: "x86_64-linux",
    outPaths: [outPath],
    outPath,
    format: "docker-archive",
    formatReason: "test",
    closure: { paths: 1, narSize: 1 },
    seconds: {},
  };
  await writeFile(join(dir, "result.json"), JSON.stringify(result));
  await writeFile(join(dir, "closure.json"), JSON.stringify([{ path: outPath, narSize: 1, references: [] }]));
}

/** A build-step directory whose result.json or closure.json is a sparse file of `gib` GiB. */
export async function hugeStepFileDir(dir: string, which: "result.json" | "closure.json", gib = 4): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "result.json"), "{}");
  await writeFile(join(dir, "closure.json"), "[]");
  await truncate(join(dir, which), gib * 1024 * 1024 * 1024);
}

/**
 * An HTTP "registry" that answers everything with `status` and a body that never ends (1 MiB
 * chunks until the client goes away). Counts the bytes it sent.
 */
export async function startEndlessRegistry(
  status: number,
  contentType = "application/json",
): Promise<{ host: string; sent: () => number; close(): Promise<void> }> {
  let sent = 0;
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  const server: Server = createServer((req, res) => {
    req.resume();
    res.writeHead(status, { "content-type": contentType, ...(status === 401 ? { "www-authenticate": 'Basic realm="x"' } : {}) });
    const pump = () => {
      while (!res.destroyed && res.write(chunk)) sent += chunk.length;
      if (!res.destroyed) res.once("drain", pump);
    };
    res.on("close", () => undefined);
    pump();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    sent: () => sent,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
