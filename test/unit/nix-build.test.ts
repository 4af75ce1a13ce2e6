import { mkdir, mkdtemp, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { assertPlainFlakeRef, lockFlags, parseFlakeMetadata } from "../../src/nix/flake-metadata.ts";
import { generationsToRemove, listGcRoots, parseRootName, pruneGcRoots } from "../../src/nix/gc-root.ts";
import { defaultProgram, installable, orderedOutPaths, parseAttributeInfo, parseBuildOutput } from "../../src/nix/nix-build.ts";
import { NixError } from "../../src/nix/nix-error.ts";

// `nix flake metadata --json git+file:///tmp/nixexp/f1` as Nix 2.8.0 printed it.
const metadata28 = {
  lastModified: 1795261552,
  locked: {
    lastModified: 1795261552,
    narHash: "sha256-p0B18OuAV8AP4peO2b09QF8GliyoTQUZG7j5Kylj84M=",
    ref: "master",
    rev: "ebdeb20326cbf7dd13d762aa33770c95cb0ee389",
    revCount: 1,
    type: "git",
    url: "file:///tmp/nixexp/f1",
  },
  locks: { nodes: { root: {} }, root: "root", version: 7 },
  original: { type: "git", url: "file:///tmp/nixexp/f1" },
  originalUrl: "git+file:///tmp/nixexp/f1",
  path: "/nix/store/r9jmrhmgnvpg98x5948jai3f9mcgdx7f-source",
  resolved: { type: "git", url: "file:///tmp/nixexp/f1" },
  resolvedUrl: "git+file:///tmp/nixexp/f1",
  revCount: 1,
  revision: "ebdeb20326cbf7dd13d762aa33770c95cb0ee389",
  url: "git+file:///tmp/nixexp/f1?ref=master&rev=ebdeb20326cbf7dd13d762aa33770c95cb0ee389",
};

describe("parseFlakeMetadata", () => {
  it("reads Nix 2.8 output", () => {
    expect(parseFlakeMetadata(metadata28)).toEqual({
      url: "git+file:///tmp/nixexp/f1?ref=master&rev=ebdeb20326cbf7dd13d762aa33770c95cb0ee389",
      originalUrl: "git+file:///tmp/nixexp/f1",
      resolvedUrl: "git+file:///tmp/nixexp/f1",
      rev: "ebdeb20326cbf7dd13d762aa33770c95cb0ee389",
      revCount: 1,
      lastModified: 1795261552,
      narHash: "sha256-p0B18OuAV8AP4peO2b09QF8GliyoTQUZG7j5Kylj84M=",
      sourcePath: "/nix/store/r9jmrhmgnvpg98x5948jai3f9mcgdx7f-source",
      locked: metadata28.locked,
      inputs: [],
    });
  });

  it("prefers lockedUrl (newer Nix) and handles tarball sources without rev", () => {
    const m = parseFlakeMetadata({
      lockedUrl: "https://example.org/src.tar.gz?narHash=sha256-abc",
      url: "https://example.org/src.tar.gz?narHash=sha256-abc",
      originalUrl: "https://example.org/src.tar.gz",
      locked: { type: "tarball", narHash: "sha256-abc", url: "https://example.org/src.tar.gz" },
    });
    expect(m.url).toBe("https://example.org/src.tar.gz?narHash=sha256-abc");
    expect(m.rev).toBeUndefined();
    expect(m.lastModified).toBe(0);
  });

  it.each([[null], [[]], [{ url: "x" }], [{ locked: {}, url: "x" }], [{ locked: { narHash: "sha256-x" } }]])("rejects %j", (json) => {
    expect(() => parseFlakeMetadata(json)).toThrow(NixError);
  });
});

describe("flake ref checks", () => {
  it.each(["-L", "--option", "github:a/b#x", "github:a/b c", ""])("refuses %j", (ref) => {
    expect(() => assertPlainFlakeRef(ref)).toThrow(NixError);
  });
  it("accepts plain refs", () => {
    expect(() => assertPlainFlakeRef("git+http://127.0.0.1:8080/x.git?ref=main")).not.toThrow();
  });
  it("never writes lock files; recreates them for input updates", () => {
    expect(lockFlags()).toEqual(["--no-write-lock-file"]);
    expect(lockFlags({ updateInputs: true })).toEqual(["--no-write-lock-file", "--recreate-lock-file"]);
  });
});

describe("installable", () => {
  it("joins url and attribute", () => {
    expect(installable("github:a/b/abc", "packages.x86_64-linux.web")).toBe("github:a/b/abc#packages.x86_64-linux.web");
  });
  it.each(["", "-x", "a b", "a#b", "a..b", "a.", "x;rm", "a\nb", "$(x)"])("refuses attribute %j", (attr) => {
    expect(() => installable("github:a/b", attr)).toThrow(NixError);
  });
  it("refuses a url with a fragment", () => {
    expect(() => installable("github:a/b#x", "y")).toThrow(/not usable/);
  });
});

describe("parseBuildOutput", () => {
  it("reads nix build --json and orders out first", () => {
    const d = parseBuildOutput([
      { drvPath: "/nix/store/a.drv", outputs: { dev: "/nix/store/a-dev", out: "/nix/store/a", bin: "/nix/store/a-bin" } },
      { drvPath: "/nix/store/b.drv", outputs: { out: "/nix/store/b" } },
    ]);
    expect(orderedOutPaths(d)).toEqual(["/nix/store/a", "/nix/store/a-bin", "/nix/store/a-dev", "/nix/store/b"]);
  });
  it.each([[{}], [[{ drvPath: 1, outputs: {} }]], [[{ drvPath: "/x.drv", outputs: {} }]], [[{ drvPath: "/x.drv", outputs: { out: "rel" } }]]])(
    "rejects %j",
    (json) => {
      expect(() => parseBuildOutput(json)).toThrow(NixError);
    },
  );
});

describe("attribute info", () => {
  it("drops nulls and non-strings", () => {
    expect(parseAttributeInfo({ mainProgram: null, pname: "hello", name: "hello-1.0", version: 3, type: "derivation" })).toEqual({
      pname: "hello",
      name: "hello-1.0",
      type: "derivation",
    });
    expect(parseAttributeInfo("x")).toEqual({});
  });
  it("picks the default program like lib.getExe", () => {
    expect(defaultProgram({ mainProgram: "hi", pname: "hello" })).toBe("hi");
    expect(defaultProgram({ pname: "hello", name: "hello-2.12" })).toBe("hello");
    expect(defaultProgram({ name: "hello-2.12.1" })).toBe("hello");
    expect(defaultProgram({ name: "busybox-static" })).toBe("busybox-static");
    expect(defaultProgram({})).toBeUndefined();
  });
});

describe("GC root names and pruning", () => {
  it("parses generation names", () => {
    expect(parseRootName("7")).toEqual({ generation: 7, index: 0 });
    expect(parseRootName("7-2")).toEqual({ generation: 7, index: 2 });
    expect(parseRootName("x")).toBeUndefined();
    expect(parseRootName("7-")).toBeUndefined();
  });
  it("keeps the highest generations", () => {
    expect(generationsToRemove([1, 2, 3, 4, 5, 3], 2)).toEqual([1, 2, 3]);
    expect(generationsToRemove([10, 9], 5)).toEqual([]);
  });

  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "gc-root-test-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("lists and prunes an image's links, ignoring foreign files", async () => {
    const img = join(dir, "shop_web");
    await mkdir(img);
    for (const n of ["1", "2", "2-1", "3", "10"]) await symlink(`/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-${n}`, join(img, n));
    await writeFile(join(img, "README"), "not a root");
    await writeFile(join(img, "11"), "a file, not a link");
    expect((await listGcRoots(dir, "shop_web")).map((e) => [e.generation, e.index])).toEqual([
      [1, 0],
      [2, 0],
      [2, 1],
      [3, 0],
      [10, 0],
    ]);
    const removed = await pruneGcRoots(dir, "shop_web", 2);
    expect(removed.map((r) => r.slice(img.length + 1)).sort()).toEqual(["1", "2", "2-1"]);
    const left = await listGcRoots(dir, "shop_web");
    expect(left.map((e) => e.link.slice(img.length + 1))).toEqual(["3", "10"]);
    expect(await readlink(join(img, "10"))).toBe("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-10");
    expect(await listGcRoots(dir, "other")).toEqual([]);
  });

  it("refuses image keys that are paths", async () => {
    await expect(listGcRoots(dir, "../etc")).rejects.toThrow(NixError);
    await expect(listGcRoots(dir, "a/b")).rejects.toThrow(NixError);
  });
});
