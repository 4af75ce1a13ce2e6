// The Nix side of the builder against real Nix (the machine's nix-bin with the test bed's config)
// and real flakes served over HTTP by the test bed's git server: lock, build, inspect, detect the
// image format, read archives and image JSON, register GC roots, and fail clearly.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile, readlink } from "node:fs/promises";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { detectFormat } from "../../src/image/formats/detect-format.ts";
import { indexDockerArchiveFile, openDockerArchive, type DockerArchiveImage, type DockerArchiveSource } from "../../src/image/formats/docker-archive.ts";
import { nix2ContainerFeatures, readNix2Container } from "../../src/image/formats/nix2container.ts";
import { closureNarSize, queryClosure } from "../../src/nix/closure.ts";
import { lockFlake } from "../../src/nix/flake-metadata.ts";
import { listGcRoots, registerGcRoots } from "../../src/nix/gc-root.ts";
import { buildFlakeAttribute, evalAttributeInfo } from "../../src/nix/nix-build.ts";
import { NixCommand, type NixSettings } from "../../src/nix/nix-command.ts";
import { NixError } from "../../src/nix/nix-error.ts";
import type { NixProgress } from "../../src/nix/nix-log.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";

const run = promisify(execFile);
const bed = testbed();
const fixturesDir = join(import.meta.dirname, "..", "fixtures", "flakes");

function nix(settings: NixSettings = {}): NixCommand {
  return new NixCommand({ extraEnv: bed.nix.env, settings });
}

/** The files of a fixture flake, with overrides (e.g. a smaller big.json or another message). */
async function fixtureFiles(name: string, overrides: Record<string, string> = {}): Promise<Record<string, string>> {
  const root = join(fixturesDir, name);
  const out: Record<string, string> = {};
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else out[relative(root, p)] = await readFile(p, "utf8");
    }
  };
  await walk(root);
  return { ...out, ...overrides };
}

async function fixtureRepo(name: string, overrides: Record<string, string> = {}): Promise<GitRepo> {
  return createGitRepo(await fixtureFiles(name, overrides), { prefix: `nix-${name}` });
}

async function lockAndBuild(repo: GitRepo, attribute = "default", n = nix()) {
  const locked = await lockFlake(n, repo.flakeUrl);
  const built = await buildFlakeAttribute(n, locked.url, attribute);
  return { locked, built, out: built.outPaths[0]! };
}

async function readWholeArchive(source: DockerArchiveSource): Promise<DockerArchiveImage> {
  const archive = openDockerArchive(source);
  for await (const layer of archive.layers()) {
    for await (const _chunk of layer.stream) {
      // the pusher would hash+upload here; the reader hashes too
    }
  }
  return archive.image();
}

beforeAll(() => {
  if (!existsSync("/bin/busybox")) {
    throw new Error("/bin/busybox is missing: the fixture flakes copy it into the store (apt-get install busybox-static, or run scripts/setup.sh)");
  }
});

describe("hello: a plain package", () => {
  let repo: GitRepo;
  beforeAll(async () => {
    repo = await fixtureRepo("hello");
  });

  it("locks the ref to the pushed revision and builds from the locked URL", async () => {
    const { locked, built, out } = await lockAndBuild(repo);
    expect(locked.rev).toBe(repo.rev);
    expect(locked.url).toContain(`rev=${repo.rev}`);
    expect(locked.originalUrl).toBe(repo.flakeUrl);
    expect(locked.narHash).toMatch(/^sha256-/);
    expect(locked.lastModified).toBeGreaterThan(1_700_000_000);
    expect(built.derivations).toHaveLength(1);
    expect(out).toMatch(/^\/nix\/store\/[0-9a-z]{32}-hello-1\.0$/);
    const { stdout } = await run(join(out, "bin", "hello"), ["a", "b"], { env: {} });
    expect(stdout).toBe("Hello from nix-image-operator!\narguments: a b\n");
  });

  it("reads mainProgram, pname and name, tolerating their absence", async () => {
    const locked = await lockFlake(nix(), repo.flakeUrl);
    expect(await evalAttributeInfo(nix(), locked.url, "default")).toEqual({
      mainProgram: "hello",
      pname: "hello",
      name: "hello-1.0",
      version: "1.0",
      type: "derivation",
      description: "Prints a message from the flake",
    });
    expect(await evalAttributeInfo(nix(), locked.url, "busybox")).toEqual({ name: "busybox-static", type: "derivation" });
  });

  it("is detected as a package; its closure has references and sizes", async () => {
    const { out } = await lockAndBuild(repo);
    expect(await detectFormat(out)).toMatchObject({ format: "package", kind: "directory" });
    const closure = await queryClosure(nix(), [out]);
    const names = closure.map((p) => p.path.replace(/^\/nix\/store\/[0-9a-z]{32}-/, "")).sort();
    expect(names).toEqual(["busybox-static", "hello-1.0", "hello-lib", "hello-share"]);
    const byName = (n: string) => closure.find((p) => p.path.endsWith(`-${n}`))!;
    expect(
      byName("hello-1.0")
        .references.map((r) => r.replace(/^\/nix\/store\/[0-9a-z]{32}-/, ""))
        .sort(),
    ).toEqual(["busybox-static", "hello-lib"]);
    expect(byName("hello-lib").references).toContain(byName("hello-share").path);
    expect(byName("busybox-static").narSize).toBeGreaterThan(1_000_000);
    expect(closureNarSize(closure)).toBe(closure.reduce((a, p) => a + p.narSize, 0));
    expect(byName("hello-share").narHash).toMatch(/^sha256/);
  });

  it("a new commit gives a new revision and new paths, busybox unchanged", async () => {
    const before = await lockAndBuild(repo);
    const beforeClosure = await queryClosure(nix(), [before.out]);
    await repo.commit({ "message.txt": "Changed by a commit.\n" });
    const after = await lockAndBuild(repo);
    expect(after.locked.rev).toBe(repo.rev);
    expect(after.locked.rev).not.toBe(before.locked.rev);
    expect(after.out).not.toBe(before.out);
    const { stdout } = await run(join(after.out, "bin", "hello"), [], { env: {} });
    expect(stdout).toBe("Changed by a commit.\n");
    const afterClosure = await queryClosure(nix(), [after.out]);
    const common = afterClosure.filter((p) => beforeClosure.some((q) => q.path === p.path)).map((p) => p.path);
    expect(common).toHaveLength(1);
    expect(common[0]).toMatch(/-busybox-static$/);
  });

  it("registers GC roots per image and keeps the last N", async () => {
    const { out } = await lockAndBuild(repo);
    const rootsDir = join(bed.tmpDir, "gcroots");
    const image = `ns_${repo.name}`;
    for (const generation of [1, 2, 3]) {
      const r = await registerGcRoots(nix(), { rootsDir, image, generation, paths: [out], keep: 2 });
      expect(r.created).toEqual([join(rootsDir, image, String(generation))]);
    }
    const roots = await listGcRoots(rootsDir, image);
    expect(roots.map((r) => r.generation)).toEqual([2, 3]);
    expect(await readlink(roots[1]!.link)).toBe(out);
    // Nix itself sees the link as a root of the path.
    const { stdout } = await run("nix-store", ["--query", "--roots", out], { env: { ...process.env, ...bed.nix.env } });
    expect(stdout).toContain(join(rootsDir, image, "3"));
    expect(stdout).not.toContain(join(rootsDir, image, "1"));
  });
});

describe("docker-archive", () => {
  let repo: GitRepo;
  let url: string;
  beforeAll(async () => {
    repo = await fixtureRepo("docker-archive");
    url = (await lockFlake(nix(), repo.flakeUrl)).url;
  });

  it("detects and reads plain, gzip and manifest-first archives alike", async () => {
    const images: DockerArchiveImage[] = [];
    for (const [attribute, compression] of [
      ["default", "none"],
      ["gzip", "gzip"],
      ["manifest-first", "none"],
    ] as const) {
      const out = (await buildFlakeAttribute(nix(), url, attribute)).outPaths[0]!;
      expect(await detectFormat(out), attribute).toMatchObject({ format: "docker-archive", compression });
      const image = await readWholeArchive({ kind: "file", path: out });
      expect(image.archiveCompression).toBe(compression);
      expect(image.layers).toHaveLength(2);
      expect(image.repoTags).toEqual(["fixture/docker-archive:latest"]);
      expect((image.config.config as Record<string, unknown>).Entrypoint).toEqual(["/bin/hello"]);
      expect(image.layers.map((l) => l.digest)).toEqual(image.layers.map((l) => l.diffId));
      images.push(image);
    }
    expect(images[1]!.layers.map((l) => l.digest)).toEqual(images[0]!.layers.map((l) => l.digest));
    expect(images[2]!.layers.map((l) => l.digest)).toEqual(images[0]!.layers.map((l) => l.digest));
    expect(images[2]!.configDigest).toBe(images[0]!.configDigest);
  });

  it("indexes an uncompressed archive without reading its layers", async () => {
    const out = (await buildFlakeAttribute(nix(), url, "default")).outPaths[0]!;
    const streamed = await readWholeArchive({ kind: "file", path: out });
    const idx = await indexDockerArchiveFile(out);
    expect(idx!.configDigest).toBe(streamed.configDigest);
    expect(idx!.layers.map((l) => l.diffId)).toEqual(streamed.layers.map((l) => l.digest));
    const gz = (await buildFlakeAttribute(nix(), url, "gzip")).outPaths[0]!;
    expect(await indexDockerArchiveFile(gz)).toBeUndefined();
  });

  it("agrees with skopeo about the image", async () => {
    const out = (await buildFlakeAttribute(nix(), url, "default")).outPaths[0]!;
    const image = await readWholeArchive({ kind: "file", path: out });
    const { stdout } = await run("skopeo", ["inspect", `docker-archive:${out}`]);
    const inspected = JSON.parse(stdout) as { Layers: string[] };
    expect(inspected.Layers).toEqual(image.layers.map((l) => l.digest));
  });
});

describe("stream-layered", () => {
  let repo: GitRepo;
  let url: string;
  beforeAll(async () => {
    repo = await fixtureRepo("stream-layered");
    url = (await lockFlake(nix(), repo.flakeUrl)).url;
  });

  it("detects the script and reads its stdout as the archive, the same twice", async () => {
    const out = (await buildFlakeAttribute(nix(), url, "default")).outPaths[0]!;
    expect(await detectFormat(out)).toMatchObject({ format: "stream-layered", executable: true });
    const a = await readWholeArchive({ kind: "command", argv: [out] });
    const b = await readWholeArchive({ kind: "command", argv: [out] });
    expect(a.layers).toHaveLength(2);
    expect(a.repoTags).toEqual(["fixture/stream-layered:latest"]);
    expect(b.layers.map((l) => l.digest)).toEqual(a.layers.map((l) => l.digest));
    expect(b.configDigest).toBe(a.configDigest);
  });

  it("shares the busybox layer digest with the docker-archive fixture (same deterministic tar)", async () => {
    const streamOut = (await buildFlakeAttribute(nix(), url, "default")).outPaths[0]!;
    const da = await fixtureRepo("docker-archive");
    const daOut = (await lockAndBuild(da)).out;
    const s = await readWholeArchive({ kind: "command", argv: [streamOut] });
    const d = await readWholeArchive({ kind: "file", path: daOut });
    expect(s.layers[0]!.digest).toBe(d.layers[0]!.digest);
    expect(s.layers[1]!.digest).not.toBe(d.layers[1]!.digest);
  });

  it("a failing script fails with its own message and exit code", async () => {
    const out = (await buildFlakeAttribute(nix(), url, "failing")).outPaths[0]!;
    await expect(readWholeArchive({ kind: "command", argv: [out] })).rejects.toThrow(/image script failed \(exit code 3\)[\s\S]*intentional failure/);
  });
});

describe("nix2container", () => {
  it("detects the JSON; its layers' paths are in the JSON's closure", async () => {
    const repo = await fixtureRepo("nix2container");
    const { out } = await lockAndBuild(repo);
    expect(await detectFormat(out)).toMatchObject({ format: "nix2container", kind: "file" });
    const image = await readNix2Container(out);
    expect(image.layers.map((l) => l.paths.length)).toEqual([1, 2]);
    expect(image.config.Entrypoint).toEqual([expect.stringMatching(/-n2c-hello\/bin\/hello$/)]);
    expect(nix2ContainerFeatures(image)).toEqual([]);
    const closure = new Set((await queryClosure(nix(), [out])).map((p) => p.path));
    for (const p of image.layers.flatMap((l) => l.paths)) expect(closure.has(p)).toBe(true);
  });
});

describe("big", () => {
  it("builds a configurable closure, reporting build progress", async () => {
    const seed = `it-${bed.runId}-${Math.random().toString(36).slice(2)}`;
    const repo = await fixtureRepo("big", { "big.json": JSON.stringify({ paths: 12, totalMiB: 6, seed, appVersion: 1 }) });
    const n = nix();
    const locked = await lockFlake(n, repo.flakeUrl);
    const progress: NixProgress[] = [];
    const built = await buildFlakeAttribute(n, locked.url, "default", { onProgress: (p) => progress.push(p) });
    expect(progress.some((p) => p.phase === "building")).toBe(true);
    expect(built.progress.builds).toMatchObject({ done: 13, expected: 13, failed: 0 });
    const closure = await queryClosure(n, built.outPaths);
    expect(closure).toHaveLength(13);
    const total = closureNarSize(closure);
    expect(total).toBeGreaterThan(5.5 * 1024 * 1024);
    expect(total).toBeLessThan(7 * 1024 * 1024);
    const part0 = closure.find((p) => p.path.endsWith("-big-part-0"))!;
    expect(
      closure
        .filter((p) => p.references.includes(part0.path))
        .map((p) => p.path.replace(/^.*-big-/, ""))
        .sort(),
    ).toEqual(["app", "part-1", "part-2"]);

    // appVersion changes only the root path.
    await repo.commit({ "big.json": JSON.stringify({ paths: 12, totalMiB: 6, seed, appVersion: 2 }) });
    const rebuilt = await buildFlakeAttribute(n, (await lockFlake(n, repo.flakeUrl)).url, "default");
    expect(rebuilt.progress.builds.expected).toBe(1);
    const closure2 = await queryClosure(n, rebuilt.outPaths);
    expect(closure2.filter((p) => !closure.some((q) => q.path === p.path)).map((p) => p.path)).toEqual(rebuilt.outPaths);
  });
});

describe("failures are clear NixErrors", () => {
  let repo: GitRepo;
  let url: string;
  beforeAll(async () => {
    repo = await fixtureRepo("broken");
    url = (await lockFlake(nix(), repo.flakeUrl)).url;
  });

  async function failure(p: Promise<unknown>): Promise<NixError> {
    const e = await p.then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(NixError);
    return e as NixError;
  }

  it("a missing attribute", async () => {
    const e = await failure(buildFlakeAttribute(nix(), url, "default"));
    expect(e.kind).toBe("attribute-missing");
    expect(e.message).toContain(`build ${url}#default failed: flake '`);
    expect(e.message).toContain("does not provide attribute 'packages.x86_64-linux.default'");
    expect(e.message).toContain("What to do: Check spec.attribute");
  });

  it("a failing build, with the builder's last lines", async () => {
    const e = await failure(buildFlakeAttribute(nix(), url, "fails"));
    expect(e.kind).toBe("build-failed");
    expect(e.drvPath).toMatch(/-broken-fails\.drv$/);
    expect(e.reason).toMatch(/builder for '.*-broken-fails\.drv' failed with exit code 2/);
    expect(e.logTail).toEqual([
      "compiling widget.c",
      "widget.c:42: error: 'frobnicate' undeclared (intentional fixture failure)",
      "make: *** [widget] Error 1",
    ]);
    expect(e.message).toContain("  > widget.c:42: error: 'frobnicate' undeclared (intentional fixture failure)");
  });

  it("an evaluation error", async () => {
    const e = await failure(buildFlakeAttribute(nix(), url, "throws"));
    expect(e.kind).toBe("eval-failed");
    expect(e.reason).toContain("broken fixture: attribute `throws` fails during evaluation (intentional)");
    const e2 = await failure(evalAttributeInfo(nix(), url, "throws"));
    expect(e2.kind).toBe("eval-failed");
  });

  it("a repository that does not exist, and one without flake.nix", async () => {
    const e = await failure(lockFlake(nix(), `git+${bed.git.baseUrl}/does-not-exist.git`));
    expect(e.kind).toBe("fetch-failed");
    expect(e.what).toBe(`lock flake git+${bed.git.baseUrl}/does-not-exist.git`);
    const plain = await createGitRepo({ "README.md": "no flake here\n" }, { prefix: "nix-noflake" });
    const e2 = await failure(lockFlake(nix(), plain.flakeUrl));
    expect(e2.kind).toBe("not-a-flake");
  });

  it("an input that needs the flake registry", async () => {
    const indirect = await createGitRepo(
      { "flake.nix": `{ inputs.nixpkgs.url = "nixpkgs"; outputs = { self, nixpkgs }: { }; }\n` },
      { prefix: "nix-indirect" },
    );
    const e = await failure(lockFlake(nix(), indirect.flakeUrl));
    expect(e.kind).toBe("indirect-ref");
    expect(e.message).toMatch(/Registry names .* are not resolved/);
  });
});

describe("safety settings", () => {
  const ifdFlake = {
    "flake.nix": `{
  nixConfig.allow-import-from-derivation = true;
  outputs = { self }: let
    system = "x86_64-linux";
    gen = derivation { name = "gen"; inherit system; builder = "/bin/sh"; args = [ "-c" "echo '\\"from-ifd\\"' > $out" ]; };
  in {
    packages.\${system}.default = derivation {
      name = "ifd-" + (import gen);
      inherit system;
      builder = "/bin/sh";
      args = [ "-c" "echo ok > $out" ];
    };
  };
}
`,
    "flake.lock": `{"nodes":{"root":{}},"root":"root","version":7}\n`,
  };

  it("refuses import-from-derivation (and the flake's nixConfig cannot turn it on) unless enabled", async () => {
    const repo = await createGitRepo(ifdFlake, { prefix: "nix-ifd" });
    const url = (await lockFlake(nix(), repo.flakeUrl)).url;
    const e = await buildFlakeAttribute(nix(), url, "default").catch((x: unknown) => x as NixError);
    expect(e).toBeInstanceOf(NixError);
    expect((e as NixError).kind).toBe("ifd-disabled");
    expect((e as NixError).message).toContain("allowImportFromDerivation");
    const ok = await buildFlakeAttribute(nix({ allowImportFromDerivation: true }), url, "default");
    expect(ok.outPaths[0]).toMatch(/-ifd-from-ifd$/);
  });
});
