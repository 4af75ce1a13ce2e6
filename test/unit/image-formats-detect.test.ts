import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { detectFormat, firstTarEntryName, sniffFormat } from "../../src/image/formats/detect-format.ts";
import { ImageFormatError } from "../../src/image/formats/format-error.ts";
import { dockerArchive, layerTar, tarBytes } from "./image-formats-tar-fixture.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "detect-format-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, content: Buffer | string, mode = 0o444): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, content);
  await chmod(p, mode);
  return p;
}

const n2c = {
  version: 1,
  "image-config": { Entrypoint: ["/nix/store/c3jb20ggb2p6m0ynj8qniycjird2h4li-n2c-hello/bin/hello"] },
  layers: [
    {
      digest: `sha256:${"a".repeat(64)}`,
      size: 0,
      diff_ids: `sha256:${"a".repeat(64)}`,
      paths: [{ path: "/nix/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-busybox-static" }],
      mediatype: "application/vnd.oci.image.layer.v1.tar",
    },
  ],
  arch: "amd64",
};

// Names are deliberately misleading: detection must not look at them.
describe("detectFormat", () => {
  it("a directory is a package", async () => {
    const d = join(dir, "pkg.tar.gz");
    await mkdir(join(d, "bin"), { recursive: true });
    expect(await detectFormat(d)).toMatchObject({ format: "package", kind: "directory" });
  });

  it("docker-archives: plain, gzip, zstd, manifest first or last, buildImage's ./ entries", async () => {
    const fx = dockerArchive([layerTar(1, 100)]);
    const mf = dockerArchive([layerTar(1, 100)], { order: "manifest-first" });
    const buildImageStyle = tarBytes([
      { name: "./", type: "dir" },
      { name: `./${"b".repeat(64)}/`, type: "dir" },
      { name: `./${"b".repeat(64)}/layer.tar`, data: layerTar(2, 10) },
      { name: "./manifest.json", data: "[]" },
    ]);
    const cases: Array<[string, Buffer, string]> = [
      ["a.json", fx.bytes, "none"],
      ["b", gzipSync(fx.bytes), "gzip"],
      ["c", zstdCompressSync(fx.bytes), "zstd"],
      ["d", mf.bytes, "none"],
      ["e", gzipSync(buildImageStyle), "gzip"],
    ];
    for (const [name, bytes, compression] of cases) {
      const r = await detectFormat(await file(name, bytes));
      expect(r, name).toMatchObject({ format: "docker-archive", compression, kind: "file" });
    }
  });

  it("a tar of something else is a package", async () => {
    const r = await detectFormat(await file("src.tar", tarBytes([{ name: "hello-2.12/configure", data: "#!/bin/sh" }])));
    expect(r.format).toBe("package");
    expect(r.reason).toContain("hello-2.12/configure");
    expect((await detectFormat(await file("x.gz", gzipSync("just text")))).format).toBe("package");
  });

  it("a streamLayeredImage-style script is stream-layered; other scripts are packages", async () => {
    const wrapper = `#!/nix/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-busybox-static/bin/sh\nexec /nix/store/nvrdvamv4drrdgxygj1ihb05p2l4yx9l-stream /nix/store/lqdf55zq0f9q21frrsa2yvvbgp2y47hq-parts "$@"\n`;
    const nixpkgsWrapper = `#! /nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bash-5.2/bin/bash -e\nexec "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-stream"  --repo_tag "web:abc" "/nix/store/cccccccccccccccccccccccccccccccc-conf.json" "$@"\n`;
    expect((await detectFormat(await file("s1", wrapper, 0o555))).format).toBe("stream-layered");
    expect((await detectFormat(await file("s2", nixpkgsWrapper, 0o555))).format).toBe("stream-layered");
    expect((await detectFormat(await file("s3", "#!/bin/sh\necho hello\n", 0o555))).format).toBe("package");
    const notExec = await detectFormat(await file("s4", wrapper, 0o444));
    expect(notExec.format).toBe("package");
    expect(notExec.reason).toMatch(/not executable/);
  });

  it("nix2container JSON, also with the `config` spelling; other JSON is a package", async () => {
    expect((await detectFormat(await file("image.tar", JSON.stringify(n2c)))).format).toBe("nix2container");
    const alt = { version: 1, config: {}, layers: [{ paths: ["/nix/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-busybox-static"] }] };
    expect((await detectFormat(await file("alt", `  \n${JSON.stringify(alt)}`))).format).toBe("nix2container");
    expect((await detectFormat(await file("pkg.json", '{"name":"x","layers":"no"}'))).format).toBe("package");
    const big = { ...n2c, "image-config": { Labels: { pad: "x".repeat(100_000) } } };
    expect((await detectFormat(await file("big.json", JSON.stringify(big)))).format).toBe("nix2container");
  });

  it("a binary or empty file is a package; symlinks are followed", async () => {
    const elf = await file("hello", Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), 0o555);
    expect((await detectFormat(elf)).format).toBe("package");
    expect((await detectFormat(await file("empty", ""))).format).toBe("package");
    const link = join(dir, "result");
    await symlink(join(dir, "a.json"), link);
    expect((await detectFormat(link)).format).toBe("docker-archive");
  });

  it("an explicit format skips sniffing but must be plausible", async () => {
    const script = await file("forced", "#!/bin/sh\nexec cat /x.tar\n", 0o555);
    expect(await detectFormat(script, { format: "stream-layered" })).toMatchObject({ format: "stream-layered" });
    expect((await detectFormat(script, { format: "package" })).format).toBe("package");
    await expect(detectFormat(join(dir, "pkg.tar.gz"), { format: "docker-archive" })).rejects.toThrow(ImageFormatError);
    await expect(detectFormat(await file("noexec", "#!/bin/sh\n"), { format: "stream-layered" })).rejects.toThrow(/not an executable file/);
    await expect(detectFormat(script, { format: "nix2container" })).rejects.toThrow(/not a JSON file.*looks like package/);
  });

  it("a missing path fails clearly", async () => {
    await expect(detectFormat(join(dir, "missing"))).rejects.toThrow(/cannot stat/);
  });
});

describe("sniffFormat and firstTarEntryName", () => {
  it("reads the first real entry behind ./, GNU long names and PAX headers", () => {
    const long = `${"f".repeat(64)}/${"x".repeat(120)}`;
    expect(
      firstTarEntryName(
        tarBytes([
          { name: "./", type: "dir" },
          { name: "./manifest.json", data: "[]" },
        ]),
      ),
    ).toBe("manifest.json");
    expect(firstTarEntryName(tarBytes([{ name: long, data: "x", longName: "gnu" }]))).toBe(long);
    expect(firstTarEntryName(tarBytes([{ name: long, data: "x", longName: "pax" }]))).toBe(long);
    expect(firstTarEntryName(Buffer.alloc(512, 1))).toBeUndefined();
  });

  it("decides from the first bytes alone for a truncated gzip prefix", () => {
    const fx = dockerArchive([layerTar(3, 200_000)]);
    const head = gzipSync(fx.bytes).subarray(0, 4096);
    expect(sniffFormat(head, { kind: "file", executable: false, size: 1e6 }).format).toBe("docker-archive");
  });
});
