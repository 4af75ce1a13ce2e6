// The builder Job's steps as separate processes, as the Job runs them: build-step writes
// result.json + closure.json and GC roots; push-step reads only that directory and the store (no
// Nix on its PATH), pushes with credentials, and writes its JSON result (<= 4096 bytes, in the
// shape the controller parses) to the termination message file. Failures write a short message
// there instead.
import { chmod, lstat, mkdir, readFile, readlink, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { buildResultSchema, type BuildResult } from "../../src/builder/step-files.ts";
import { pushResultSchema } from "../../src/builder/step-results.ts";
import { testbed } from "../support/kube.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import {
  fixtureRepo,
  unpackImage,
  lastJson,
  messageLines,
  runCli,
  runImage,
  skopeoInspect,
  tlsAccess,
  uniqueRepo,
  plainAccess,
} from "../support/builder-fixtures.ts";

/**
 * A streamLayeredImage-shaped flake whose script, at push time, builds a one-layer docker-archive
 * holding /report (its uid/gid, whether it can read `probePath`, its environment) and prints it.
 */
function probeFlake(probePath: string): Record<string, string> {
  const script = [
    "set -e",
    "bb=$busybox/bin/busybox",
    "t=$($bb mktemp -d)",
    "cd $t",
    "$bb mkdir root",
    'echo "uid=$($bb id -u) gid=$($bb id -g)" > root/report',
    `if [ -r ${probePath} ]; then echo authfile=readable; else echo authfile=unreadable; fi >> root/report`,
    "$bb env >> root/report",
    "$bb tar -cf layer.tar -C root .",
    "d=$($bb sha256sum layer.tar | $bb cut -d' ' -f1)",
    "$bb mkdir $d && $bb mv layer.tar $d/layer.tar",
    '$bb printf \'{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}\' $d > config.json',
    "c=$($bb sha256sum config.json | $bb cut -d' ' -f1)",
    "$bb mv config.json $c.json",
    '$bb printf \'[{"Config":"%s.json","RepoTags":[],"Layers":["%s/layer.tar"]}]\' $c $d > manifest.json',
    "$bb tar -cf - $d/layer.tar $c.json manifest.json",
  ].join("\n");
  const flake = `{
  outputs = { self }: let
    system = "x86_64-linux";
    busybox = derivation {
      name = "busybox-static"; inherit system; builder = "/bin/sh";
      args = [ "-c" "/bin/mkdir -p $out/bin && /bin/cp /bin/busybox $out/bin/busybox && /bin/ln -s busybox $out/bin/sh" ];
    };
    stream = derivation {
      name = "stream"; inherit system busybox; builder = "/bin/sh";
      body = ${JSON.stringify(script)};
      passAsFile = [ "body" ];
      args = [ "-c" ''{ echo "#!$busybox/bin/sh"; echo "busybox=$busybox"; /bin/cat $bodyPath; } > $out && /bin/chmod 555 $out'' ];
    };
    wrapper = derivation {
      name = "stream-probe"; inherit system busybox stream; builder = "/bin/sh";
      args = [ "-c" ''{ echo "#!$busybox/bin/sh"; echo "exec $stream"; } > $out && /bin/chmod 555 $out'' ];
    };
  in { packages.\${system}.default = wrapper; };
}
`;
  return { "flake.nix": flake, "flake.lock": JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }) };
}

const bed = testbed();
const tls = bed.registry.tls;
const plain = bed.registry.plain;
let hello: GitRepo;
let broken: GitRepo;
let stream: GitRepo;
let work = "";

beforeAll(async () => {
  [hello, broken, stream] = await Promise.all([fixtureRepo("hello"), fixtureRepo("broken"), fixtureRepo("stream-layered")]);
  work = join(bed.tmpDir, "build-steps");
  await mkdir(work, { recursive: true });
});

const buildStep = (args: string[]) => runCli(bed, ["build-step", ...args]);
/** push-step with no Nix on PATH: it must need nothing but the directory and the store. */
const pushStep = (args: string[]) => runCli(bed, ["push-step", ...args], { env: { PATH: "/nonexistent" } });

describe("build-step", () => {
  const out = () => join(work, "hello-result");
  const roots = () => join(work, "gcroots", "ns", "hello");

  it("writes result.json and closure.json, registers GC roots, reports to the termination message", async () => {
    const tm = join(work, "build-tm");
    const r = await buildStep([
      "--flake",
      hello.flakeUrl,
      "--attribute",
      "default",
      "--out",
      out(),
      "--gc-root-dir",
      roots(),
      "--keep",
      "2",
      "--termination-message",
      tm,
    ]);
    expect(r.code, r.stderr).toBe(0);

    const result = buildResultSchema.parse(JSON.parse(await readFile(join(out(), "result.json"), "utf8")));
    expect(result).toMatchObject({
      version: 1,
      flake: hello.flakeUrl,
      attribute: "default",
      revision: { rev: hello.rev, lastModified: expect.any(Number), narHash: expect.stringMatching(/^sha256-/) },
      system: bed.nix.system,
      format: "package",
      mainProgram: "hello",
      pname: "hello",
      name: "hello-1.0",
      closure: { paths: 4, narSize: expect.any(Number) },
      gcRoots: [join(roots(), "0")],
    });
    expect(result.revision.url).toContain(`rev=${hello.rev}`);
    expect(result.outPath).toMatch(/^\/nix\/store\/[0-9a-z]{32}-hello-1\.0$/);
    expect(result.outPaths).toEqual([result.outPath]);
    for (const phase of ["lock", "build", "closure", "gcRoots"]) expect(result.seconds[phase], phase).toBeTypeOf("number");

    const closure = JSON.parse(await readFile(join(out(), "closure.json"), "utf8")) as Array<{
      path: string;
      narSize: number;
      narHash: string;
      references: string[];
    }>;
    expect(closure.map((p) => p.path.replace(/^\/nix\/store\/[0-9a-z]{32}-/, ""))).toEqual(
      expect.arrayContaining(["busybox-static", "hello-1.0", "hello-lib", "hello-share"]),
    );
    expect(closure).toHaveLength(4);
    const app = closure.find((p) => p.path === result.outPath)!;
    expect(app.narHash).toMatch(/^sha256[-:]/);
    expect(app.references.length).toBe(2);

    // The GC root is a symlink to the out path (nix-store --add-root --indirect).
    expect(await readlink(join(roots(), "0"))).toBe(result.outPath);
    expect(JSON.parse(await readFile(tm, "utf8"))).toMatchObject({ outPath: result.outPath, format: "package", revision: { rev: hello.rev } });
  });

  it("keeps the last --keep generations of GC roots", async () => {
    for (let i = 0; i < 2; i++) {
      const r = await buildStep(["--flake", hello.flakeUrl, "--attribute", "default", "--out", out(), "--gc-root-dir", roots(), "--keep", "2"]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await readdir(roots())).sort()).toEqual(["1", "2"]);
    expect((await lstat(join(roots(), "2"))).isSymbolicLink()).toBe(true);
  });

  it("a failed build: exit code 1, a short message with the builder's last lines in the termination message", async () => {
    const tm = join(work, "broken-tm");
    const dir = join(work, "broken-result");
    const r = await buildStep(["--flake", broken.flakeUrl, "--attribute", "fails", "--out", dir, "--termination-message", tm]);
    expect(r.code).toBe(1);
    expect(messageLines(r.stderr)[0]).toMatch(/^error: build .*#fails failed: builder for .* failed with exit code 2/);
    const message = await readFile(tm, "utf8");
    expect(Buffer.byteLength(message)).toBeLessThanOrEqual(4096);
    expect(message).toMatch(/failed \(build-failed\): builder for .*broken-fails\.drv' failed with exit code 2/);
    expect(message).toContain("> widget.c:42: error: 'frobnicate' undeclared (intentional fixture failure)");
    await expect(readFile(join(dir, "result.json"))).rejects.toThrow(/ENOENT/);
  });

  it("refuses an unsafe attribute before running Nix", async () => {
    const tm = join(work, "unsafe-tm");
    const r = await buildStep(["--flake", hello.flakeUrl, "--attribute", "default;rm -rf /", "--out", join(work, "unsafe"), "--termination-message", tm]);
    expect(r.code).toBe(1);
    expect(await readFile(tm, "utf8")).toMatch(/attribute "default;rm -rf \/": the attribute contains the character ';'/);
  });
});

describe("push-step", () => {
  it("pushes what the build step left (TLS + auth), writes the controller's result shape to the termination message", async () => {
    const dir = join(work, "push-hello");
    const b = await buildStep(["--flake", hello.flakeUrl, "--attribute", "default", "--out", dir]);
    expect(b.code, b.stderr).toBe(0);
    const repository = uniqueRepo("push-step");
    const tm = join(work, "push-tm");
    const imageConfig = JSON.stringify({ env: [{ name: "GREETING", value: "hi" }], labels: { team: "builders" }, user: "65532:65532" });
    const r = await pushStep([
      "--from",
      dir,
      "--image",
      `${tls.host}/${repository}`,
      "--tag",
      "latest",
      "--sortable-tag-time",
      "2026-12-03T18:30:05Z",
      "--auth-file",
      tls.authFile,
      "--ca-file",
      tls.caFile,
      "--image-config",
      imageConfig,
      "--max-layers",
      "3",
      "--layer-cache",
      join(work, "push-cache"),
      "--termination-message",
      tm,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const text = await readFile(tm, "utf8");
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(4096);
    const result = pushResultSchema.parse(JSON.parse(text));
    const built = JSON.parse(await readFile(join(dir, "result.json"), "utf8")) as BuildResult;
    expect(result).toMatchObject({
      image: `${tls.host}/${repository}@${result.digest}`,
      tags: [expect.stringMatching(new RegExp(`^rev-${hello.rev.slice(0, 12)}-[0-9a-z]{8}$`)), `20261203183005-${hello.rev.slice(0, 12)}`, "latest"],
      revision: built.revision,
      layers: { pushed: 3, skipped: 0, mounted: 0 },
    });
    expect(result.bytesPushed).toBeGreaterThan(1_000_000);
    // The build step's phases come along with the push's (status.lastBuild.durations).
    for (const phase of ["lock", "build", "closure", "layers", "push"]) expect(result.seconds?.[phase], phase).toBeTypeOf("number");
    expect(r.stdout.trim()).toBe(result.image);
    expect(r.stdout + r.stderr + text).not.toContain(tls.password);

    // The sortable tag (rollout.policy Disabled) names the same image.
    expect((await skopeoInspect(`${tls.host}/${repository}:20261203183005-${hello.rev.slice(0, 12)}`, tlsAccess(bed))).Digest).toBe(result.digest);
    const cfg = (await skopeoInspect(`${tls.host}/${repository}:latest`, tlsAccess(bed), true)).config as Record<string, unknown>;
    expect(cfg.User).toBe("65532:65532");
    expect(cfg.Labels).toEqual({ team: "builders" });
    expect(cfg.Env).toEqual(expect.arrayContaining(["GREETING=hi"]));
    expect((await runImage(bed, `${tls.host}/${repository}@${result.digest}`, tlsAccess(bed))).trim()).toBe("Hello from nix-image-operator!");
  });

  it("pushes a streamLayeredImage script's output", async () => {
    const dir = join(work, "push-stream");
    const b = await buildStep(["--flake", stream.flakeUrl, "--attribute", "default", "--out", dir]);
    expect(b.code, b.stderr).toBe(0);
    const repository = uniqueRepo("push-stream");
    const r = await pushStep(["--from", dir, "--image", `${plain.host}/${repository}`, "--plain-http", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const result = lastJson<{ digest: string; format: string }>(r.stdout);
    expect(result.format).toBe("stream-layered");
    expect((await runImage(bed, `${plain.host}/${repository}@${result.digest}`, plainAccess())).trim()).toBe("Hello from a streamLayeredImage-style script!");
  });

  it("runs a stream script (flake code) as nobody with a clean environment: it cannot read the push credentials", async () => {
    // A stream script that reports, inside the image it prints, who it ran as, whether it could
    // read the auth file the push step was given, and its environment.
    const repo = await createGitRepo(probeFlake(tls.authFile), { prefix: "stream-probe" });
    const dir = join(work, "push-probe");
    const b = await buildStep(["--flake", repo.flakeUrl, "--attribute", "default", "--out", dir]);
    expect(b.code, b.stderr).toBe(0);
    expect(JSON.parse(await readFile(join(dir, "result.json"), "utf8"))).toMatchObject({ format: "stream-layered" });
    const repository = uniqueRepo("push-probe");
    const r = await runCli(
      bed,
      ["push-step", "--from", dir, "--image", `${tls.host}/${repository}`, "--auth-file", tls.authFile, "--ca-file", tls.caFile, "--json"],
      {
        env: { PATH: "/nonexistent", REGISTRY_PASSWORD: tls.password },
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const result = lastJson<{ digest: string }>(r.stdout);
    const report = await readFile(join(await unpackImage(bed, `${tls.host}/${repository}@${result.digest}`, tlsAccess(bed)), "report"), "utf8");
    const lines = report.trim().split("\n");
    expect(lines[0]).toBe("uid=65534 gid=65534");
    expect(lines[1]).toBe("authfile=unreadable");
    expect(report).not.toContain(tls.password);
    expect(report).not.toContain("REGISTRY_PASSWORD");
    expect(report).toContain("PATH=/usr/bin:/bin");
  });

  it("refuses to run a stream script that could read the push credentials (a world-readable auth file)", async () => {
    const dir = join(work, "push-stream");
    const readable = join(work, "auth-0644.json");
    await writeFile(readable, await readFile(tls.authFile), { mode: 0o644 });
    await chmod(readable, 0o644);
    const tm = join(work, "readable-auth-tm");
    const r = await pushStep([
      "--from",
      dir,
      "--image",
      `${tls.host}/${uniqueRepo("refused")}`,
      "--auth-file",
      readable,
      "--ca-file",
      tls.caFile,
      "--termination-message",
      tm,
    ]);
    expect(r.code).toBe(1);
    expect(await readFile(tm, "utf8")).toMatch(
      /refusing to run the streamLayeredImage script .* could read the push credentials .*auth-0644\.json as uid 65534/,
    );
    expect(r.stdout + r.stderr).not.toContain(tls.password);
  });

  it("treats the directory as untrusted: a result.json naming a non-store path is refused", async () => {
    const dir = join(work, "push-tampered");
    const b = await buildStep(["--flake", hello.flakeUrl, "--attribute", "default", "--out", dir]);
    expect(b.code, b.stderr).toBe(0);
    const result = JSON.parse(await readFile(join(dir, "result.json"), "utf8")) as BuildResult;
    await writeFile(
      join(dir, "result.json"),
      JSON.stringify({ ...result, outPath: "/var/run/niximage/push/config.json", outPaths: ["/var/run/niximage/push/config.json"] }),
    );
    const tm = join(work, "tampered-tm");
    const r = await pushStep(["--from", dir, "--image", `${plain.host}/${uniqueRepo("tampered")}`, "--plain-http", "--termination-message", tm]);
    expect(r.code).toBe(1);
    expect(await readFile(tm, "utf8")).toMatch(/result\.json is not a build result: outPaths\.0: must be a store path/);
  });

  it("a missing build result: a short message saying so", async () => {
    const tm = join(work, "missing-tm");
    const r = await pushStep([
      "--from",
      join(work, "nothing-here"),
      "--image",
      `${plain.host}/${uniqueRepo("missing")}`,
      "--plain-http",
      "--termination-message",
      tm,
    ]);
    expect(r.code).toBe(1);
    expect(await readFile(tm, "utf8")).toMatch(/cannot read .*nothing-here\/result\.json \(ENOENT\): did the build step finish successfully\?/);
  });
});
