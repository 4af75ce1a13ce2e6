import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gzipSync, zstdCompressSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  indexDockerArchiveFile,
  layerBlobStreamSource,
  openDockerArchive,
  parseArchiveManifest,
  type ArchiveLayer,
  type DockerArchiveSource,
} from "../../src/image/formats/docker-archive.ts";
import { ImageFormatError } from "../../src/image/formats/format-error.ts";
import { dockerArchive, layerTar, sha256Hex, tarBytes } from "./image-formats-tar-fixture.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "docker-archive-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function consume(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

function chunked(bytes: Buffer, size: number): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return Readable.from(chunks);
}

/** Reads every layer fully; returns what was seen in archive order. */
async function readArchive(source: DockerArchiveSource, options: Parameters<typeof openDockerArchive>[1] = {}) {
  const archive = openDockerArchive(source, options);
  const seen: Array<{ path: string; size: number; digest: string; bytes: Buffer; layer: ArchiveLayer }> = [];
  for await (const layer of archive.layers()) {
    const bytes = await consume(layer.stream);
    seen.push({ path: layer.path, size: layer.size, digest: await layer.digest, bytes, layer });
  }
  return { seen, image: await archive.image() };
}

describe("docker-archive reader", () => {
  it("streams layers before a trailing manifest.json and orders them by the manifest", async () => {
    const layers = [layerTar(1, 3000), layerTar(2, 10), layerTar(3, 70_000)];
    const fx = dockerArchive(layers);
    const { seen, image } = await readArchive({ kind: "stream", stream: chunked(fx.bytes, 1000) });
    expect(seen.map((s) => s.path)).toEqual(layers.map((l) => `${sha256Hex(l)}/layer.tar`));
    for (const [i, s] of seen.entries()) {
      expect(s.bytes.equals(layers[i]!)).toBe(true);
      expect(s.digest).toBe(fx.diffIds[i]);
      expect(s.size).toBe(layers[i]!.length);
      expect(s.layer.compression).toBe("none");
    }
    expect(image.layers.map((l) => l.digest)).toEqual(fx.diffIds);
    expect(image.layers.map((l) => l.diffId)).toEqual(fx.diffIds);
    expect(image.configBytes.equals(fx.configBytes)).toBe(true);
    expect(image.configDigest).toBe(`sha256:${sha256Hex(fx.configBytes)}`);
    expect(image.configPath).toBe(fx.configName);
    expect(image.repoTags).toEqual(["x:latest"]);
    expect((image.config.config as Record<string, unknown>).Entrypoint).toEqual(["/bin/hello"]);
    expect(image.unusedEntries).toEqual([]);
    expect(image.archiveCompression).toBe("none");
  });

  it("with manifest.json first, yields only the listed layers", async () => {
    const layers = [layerTar(4, 500), layerTar(5, 600)];
    const fx = dockerArchive(layers, {
      order: "manifest-first",
      extra: [
        { name: "repositories", data: '{"x":{"latest":"abc"}}' },
        { name: "stray.bin", data: Buffer.alloc(3000, 1) },
      ],
    });
    const { seen, image } = await readArchive({ kind: "stream", stream: chunked(fx.bytes, 333) });
    expect(seen.map((s) => s.path)).toEqual(layers.map((l) => `${sha256Hex(l)}/layer.tar`));
    expect(image.layers.map((l) => l.digest)).toEqual(fx.diffIds);
  });

  it("without a manifest yet, yields stray binary entries too and reports them unused", async () => {
    const layers = [layerTar(6, 100)];
    const fx = dockerArchive(layers, { extra: [{ name: "stray.bin", data: Buffer.alloc(3000, 1) }] });
    const { seen, image } = await readArchive({ kind: "stream", stream: Readable.from([fx.bytes]) });
    expect(seen.map((s) => s.path)).toEqual([`${sha256Hex(layers[0]!)}/layer.tar`, "stray.bin"]);
    expect(image.unusedEntries).toEqual(["stray.bin"]);
    expect(image.layers).toHaveLength(1);
  });

  it("reads gzip and plain files, with reopen for plain files only", async () => {
    const layers = [layerTar(7, 2000), layerTar(8, 5000)];
    const fx = dockerArchive(layers);
    const plain = join(dir, "plain.tar");
    const gz = join(dir, "image.tar.gz");
    await writeFile(plain, fx.bytes);
    await writeFile(gz, gzipSync(fx.bytes));

    const p = await readArchive({ kind: "file", path: plain });
    expect(p.image.layers.map((l) => l.digest)).toEqual(fx.diffIds);
    const again = await consume(p.seen[1]!.layer.reopen!());
    expect(again.equals(layers[1]!)).toBe(true);

    const g = await readArchive({ kind: "file", path: gz });
    expect(g.image.layers.map((l) => l.digest)).toEqual(fx.diffIds);
    expect(g.image.archiveCompression).toBe("gzip");
    expect(g.seen[0]!.layer.reopen).toBeUndefined();
  });

  it("reads a zstd stream", async () => {
    const fx = dockerArchive([layerTar(9, 4000)]);
    const { image } = await readArchive({ kind: "stream", stream: chunked(zstdCompressSync(fx.bytes), 100) });
    expect(image.layers.map((l) => l.digest)).toEqual(fx.diffIds);
    expect(image.archiveCompression).toBe("zstd");
  });

  it("marks gzip-compressed layer entries and skips the diff_id check for them", async () => {
    const inner = layerTar(10, 1000);
    const gzLayer = gzipSync(inner);
    const fx = dockerArchive([gzLayer], { diffIds: [`sha256:${sha256Hex(inner)}`] });
    const { seen, image } = await readArchive({ kind: "stream", stream: Readable.from([fx.bytes]) });
    expect(seen[0]!.layer.compression).toBe("gzip");
    expect(image.layers[0]!.digest).toBe(`sha256:${sha256Hex(gzLayer)}`);
    expect(image.layers[0]!.diffId).toBe(`sha256:${sha256Hex(inner)}`);
  });

  it("resolves layers repeated through symlinks and hardlinks (docker save)", async () => {
    const l1 = layerTar(11, 800);
    const id1 = sha256Hex(l1);
    const config = Buffer.from(JSON.stringify({ rootfs: { type: "layers", diff_ids: [`sha256:${id1}`, `sha256:${id1}`, `sha256:${id1}`] } }));
    const bytes = tarBytes([
      { name: `${id1}/layer.tar`, data: l1 },
      { name: "bbbb/layer.tar", type: "symlink", linkName: `../${id1}/layer.tar` },
      { name: "cccc/layer.tar", type: "hardlink", linkName: `${id1}/layer.tar` },
      { name: "cfg.json", data: config },
      {
        name: "manifest.json",
        data: JSON.stringify([{ Config: "cfg.json", RepoTags: null, Layers: [`${id1}/layer.tar`, "bbbb/layer.tar", "cccc/layer.tar"] }]),
      },
    ]);
    const { seen, image } = await readArchive({ kind: "stream", stream: Readable.from([bytes]) });
    expect(seen).toHaveLength(1);
    expect(image.layers.map((l) => [l.path, l.source, l.digest])).toEqual([
      [`${id1}/layer.tar`, `${id1}/layer.tar`, `sha256:${id1}`],
      ["bbbb/layer.tar", `${id1}/layer.tar`, `sha256:${id1}`],
      ["cccc/layer.tar", `${id1}/layer.tar`, `sha256:${id1}`],
    ]);
    expect(image.repoTags).toEqual([]);
  });

  it("hands out a listed layer that looked like JSON at the end", async () => {
    const odd = Buffer.from('{"this is": "a layer that starts with a brace"}');
    const fx = dockerArchive([layerTar(12, 100), odd]);
    const { seen, image } = await readArchive({ kind: "stream", stream: Readable.from([fx.bytes]) });
    expect(seen.map((s) => s.path)).toEqual([`${sha256Hex(layerTar(12, 100))}/layer.tar`, `${sha256Hex(odd)}/layer.tar`]);
    expect(seen[1]!.bytes.equals(odd)).toBe(true);
    expect(image.layers.map((l) => l.digest)).toEqual(fx.diffIds);
  });

  it("streams a large layer with backpressure and a slow consumer", async () => {
    const big = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const fx = dockerArchive([big, layerTar(13, 10)]);
    const archive = openDockerArchive({ kind: "stream", stream: chunked(fx.bytes, 65536) }, { chunkSize: 16 * 1024 });
    const digests: string[] = [];
    for await (const layer of archive.layers()) {
      const hash = createHash("sha256");
      let n = 0;
      for await (const c of layer.stream) {
        hash.update(c as Buffer);
        if (++n % 50 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      digests.push(`sha256:${hash.digest("hex")}`);
      expect(await layer.digest).toBe(digests[digests.length - 1]);
    }
    expect(digests).toEqual(fx.diffIds);
    expect((await archive.image()).layers.map((l) => l.digest)).toEqual(fx.diffIds);
  });

  it("drains an abandoned layer, continues, and fails at the end naming it", async () => {
    const layers = [layerTar(14, 9000), layerTar(15, 100)];
    const fx = dockerArchive(layers);
    const archive = openDockerArchive({ kind: "stream", stream: chunked(fx.bytes, 512) });
    const digests: Array<Promise<string>> = [];
    let i = 0;
    const loop = (async () => {
      for await (const layer of archive.layers()) {
        digests.push(layer.digest);
        if (i++ === 1) await consume(layer.stream); // the first one is never read
      }
    })();
    await expect(loop).rejects.toThrow(/layer .*\/layer\.tar abandoned before its end/);
    await expect(digests[0]).rejects.toThrow(/abandoned/);
    expect(await digests[1]).toBe(fx.diffIds[1]);
    await expect(archive.image()).rejects.toThrow(/abandoned/);
  });

  it("fails image() when iteration stops early", async () => {
    const fx = dockerArchive([layerTar(16, 10), layerTar(17, 10)]);
    const archive = openDockerArchive({ kind: "stream", stream: Readable.from([fx.bytes]) });
    for await (const layer of archive.layers()) {
      await consume(layer.stream);
      break;
    }
    await expect(archive.image()).rejects.toThrow(/not iterated to its end/);
  });

  it("verifies layer digests against rootfs.diff_ids", async () => {
    const fx = dockerArchive([layerTar(18, 10)], { diffIds: [`sha256:${"0".repeat(64)}`] });
    const run = readArchive({ kind: "stream", stream: Readable.from([fx.bytes]) });
    await expect(run).rejects.toThrow(ImageFormatError);
    await expect(readArchive({ kind: "stream", stream: Readable.from([fx.bytes]) })).rejects.toThrow(/corrupt/);
    const ok = await readArchive({ kind: "stream", stream: Readable.from([fx.bytes]) }, { verifyDiffIds: false });
    expect(ok.image.layers).toHaveLength(1);
  });

  it.each([
    ["no manifest", tarBytes([{ name: "a/layer.tar", data: layerTar(19, 10) }]), /no manifest\.json/],
    ["missing config", tarBytes([{ name: "manifest.json", data: '[{"Config":"c.json","Layers":[]}]' }]), /config c\.json .* not in the archive/],
    [
      "missing layer",
      tarBytes([
        { name: "c.json", data: "{}" },
        { name: "manifest.json", data: '[{"Config":"c.json","Layers":["l/layer.tar"]}]' },
      ]),
      /layer l\/layer\.tar .* not in the archive/,
    ],
    ["bad manifest", tarBytes([{ name: "manifest.json", data: "{" }]), /manifest\.json is not valid JSON/],
    ["not a tar", Buffer.alloc(2048, 0x41), /not a tar archive/],
    ["truncated", dockerArchive([layerTar(20, 5000)]).bytes.subarray(0, 3000), /ends inside an entry/],
  ])("fails clearly: %s", async (_name, bytes, message) => {
    await expect(readArchive({ kind: "stream", stream: Readable.from([bytes]) })).rejects.toThrow(message);
  });

  it("reads a command's stdout and reports a failing command with its stderr", async () => {
    const fx = dockerArchive([layerTar(21, 300)]);
    const file = join(dir, "cmd.tar");
    await writeFile(file, fx.bytes);
    const ok = await readArchive({ kind: "command", argv: ["/bin/sh", "-c", `echo "Creating layer 1" >&2; /bin/cat ${file}`] });
    expect(ok.image.layers.map((l) => l.digest)).toEqual(fx.diffIds);

    const failing = readArchive({
      kind: "command",
      argv: ["/bin/sh", "-c", `/usr/bin/head -c 1500 ${file}; echo "error: cannot read store path /nix/store/x" >&2; exit 3`],
    });
    await expect(failing).rejects.toThrow(/image script failed \(exit code 3\); its last output:\nerror: cannot read store path/);

    const silent = readArchive({ kind: "command", argv: ["/bin/sh", "-c", "exit 0"] });
    await expect(silent).rejects.toThrow(/printed nothing/);
    const missing = readArchive({ kind: "command", argv: [join(dir, "nope")] });
    await expect(missing).rejects.toThrow(/image script failed/);
  });

  it("runs a command with a clean environment by default", async () => {
    process.env.NIO_TEST_SECRET = "hunter2";
    try {
      const script = `out=$(/usr/bin/env); case "$out" in *hunter2*) exit 9;; esac; /bin/cat ${join(dir, "cmd.tar")}`;
      const fx = dockerArchive([layerTar(21, 300)]);
      await writeFile(join(dir, "cmd.tar"), fx.bytes);
      const r = await readArchive({ kind: "command", argv: ["/bin/sh", "-c", script] });
      expect(r.image.layers).toHaveLength(1);
    } finally {
      delete process.env.NIO_TEST_SECRET;
    }
  });

  it("adapts layers to a re-openable blob source", async () => {
    const layers = [layerTar(22, 4000)];
    const fx = dockerArchive(layers);
    const file = join(dir, "blob.tar");
    await writeFile(file, fx.bytes);
    const archive = openDockerArchive({ kind: "file", path: file });
    for await (const layer of archive.layers()) {
      const src = layerBlobStreamSource(layer);
      const first = src.open();
      await consume(first.stream);
      expect(await first.result).toEqual({ digest: fx.diffIds[0], size: layers[0]!.length });
      const second = src.open();
      const bytes = await consume(second.stream);
      expect(bytes.equals(layers[0]!)).toBe(true);
      expect(await second.result).toEqual({ digest: fx.diffIds[0], size: layers[0]!.length });
    }
    await archive.image();
  });

  it("property: any layer sizes, order and chunking give the manifest's digests", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 5 }),
        fc.constantFrom("manifest-last" as const, "manifest-first" as const),
        fc.integer({ min: 1, max: 2000 }),
        async (sizes, order, chunk) => {
          const layers = sizes.map((s, i) => layerTar(100 + i, s));
          const fx = dockerArchive(layers, { order });
          const { image, seen } = await readArchive({ kind: "stream", stream: chunked(fx.bytes, chunk) }, { chunkSize: 777 });
          expect(image.layers.map((l) => l.digest)).toEqual(fx.diffIds);
          expect(new Set(seen.map((s) => s.path))).toEqual(new Set(layers.map((l) => `${sha256Hex(l)}/layer.tar`)));
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe("indexDockerArchiveFile", () => {
  it("knows manifest and config first and streams layers by offset, in manifest order", async () => {
    const layers = [layerTar(30, 70_000), layerTar(31, 10), layerTar(32, 3000)];
    for (const order of ["manifest-last", "manifest-first"] as const) {
      const fx = dockerArchive(layers, { order, extra: [{ name: "repositories", data: "{}" }] });
      const path = join(dir, `index-${order}.tar`);
      await writeFile(path, fx.bytes);
      const idx = await indexDockerArchiveFile(path);
      expect(idx).toBeDefined();
      expect(idx!.configBytes.equals(fx.configBytes)).toBe(true);
      expect(idx!.configDigest).toBe(`sha256:${sha256Hex(fx.configBytes)}`);
      expect(idx!.layers.map((l) => l.diffId)).toEqual(fx.diffIds);
      for (const [i, l] of idx!.layers.entries()) {
        const bytes = await consume(l.open());
        expect(bytes.equals(layers[i]!)).toBe(true);
        expect(l.size).toBe(layers[i]!.length);
        expect(fx.bytes.subarray(l.offset, l.offset + l.size).equals(layers[i]!)).toBe(true);
      }
    }
  });

  it("resolves links and marks compressed layers", async () => {
    const l1 = gzipSync(layerTar(33, 100));
    const bytes = tarBytes([
      { name: "a/layer.tar", data: l1 },
      { name: "b/layer.tar", type: "symlink", linkName: "../a/layer.tar" },
      { name: "c.json", data: '{"rootfs":{"diff_ids":["sha256:x","sha256:y"]}}' },
      { name: "manifest.json", data: '[{"Config":"c.json","Layers":["a/layer.tar","b/layer.tar"]}]' },
    ]);
    const path = join(dir, "index-links.tar");
    await writeFile(path, bytes);
    const idx = await indexDockerArchiveFile(path);
    expect(idx!.layers.map((l) => [l.path, l.source, l.compression, l.diffId])).toEqual([
      ["a/layer.tar", "a/layer.tar", "gzip", "sha256:x"],
      ["b/layer.tar", "a/layer.tar", "gzip", "sha256:y"],
    ]);
  });

  it("returns undefined for compressed files and fails clearly on broken ones", async () => {
    const fx = dockerArchive([layerTar(34, 10)]);
    await writeFile(join(dir, "index.tar.gz"), gzipSync(fx.bytes));
    expect(await indexDockerArchiveFile(join(dir, "index.tar.gz"))).toBeUndefined();
    await writeFile(join(dir, "index-nomanifest.tar"), tarBytes([{ name: "a/layer.tar", data: "x" }]));
    await expect(indexDockerArchiveFile(join(dir, "index-nomanifest.tar"))).rejects.toThrow(/no manifest\.json/);
    await writeFile(join(dir, "index-trunc.tar"), fx.bytes.subarray(0, 700));
    await expect(indexDockerArchiveFile(join(dir, "index-trunc.tar"))).rejects.toThrow(ImageFormatError);
    await expect(indexDockerArchiveFile(join(dir, "missing.tar"))).rejects.toThrow(/cannot open/);
  });
});

describe("parseArchiveManifest", () => {
  it("normalises ./ prefixes and tolerates null RepoTags", () => {
    expect(parseArchiveManifest(Buffer.from('[{"Config":"./c.json","RepoTags":null,"Layers":["./a/layer.tar"]}]'))).toEqual([
      { Config: "c.json", RepoTags: [], Layers: ["a/layer.tar"] },
    ]);
  });
  it.each(["[]", "{}", '[{"Config":1,"Layers":[]}]', '[{"Config":"c","Layers":[1]}]'])("rejects %s", (text) => {
    expect(() => parseArchiveManifest(Buffer.from(text))).toThrow(ImageFormatError);
  });
});
