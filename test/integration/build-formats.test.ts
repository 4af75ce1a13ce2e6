// `build` end to end for every input format, with real Nix, the test bed's git server and its
// registries (plain HTTP, and TLS + htpasswd auth), checked by independent clients: skopeo reads
// the image, skopeo copies it to an OCI layout, umoci unpacks it, and the program runs under
// chroot and prints what the fixture expects.
import { beforeAll, describe, expect, it } from "vitest";
import type { GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";
import {
  fixtureRepo,
  lastJson,
  messageLines,
  plainAccess,
  runCli,
  runImage,
  skopeoInspect,
  testbedConfig,
  tlsAccess,
  uniqueRepo,
} from "../support/builder-fixtures.ts";
import type { PushStepResult } from "../../src/builder/step-results.ts";

const bed = testbed();
const plain = bed.registry.plain;
const tls = bed.registry.tls;
let config = "";
const archiveDigests = new Set<string>();
const repos: Partial<Record<"hello" | "docker-archive" | "stream-layered" | "nix2container", GitRepo>> = {};

beforeAll(async () => {
  config = await testbedConfig(bed);
  const [hello, archive, stream, n2c] = await Promise.all([
    fixtureRepo("hello"),
    fixtureRepo("docker-archive"),
    fixtureRepo("stream-layered"),
    fixtureRepo("nix2container"),
  ]);
  Object.assign(repos, { hello, "docker-archive": archive, "stream-layered": stream, nix2container: n2c });
});

async function buildPlain(fixture: keyof typeof repos, attribute: string, extra: string[] = []): Promise<{ result: PushStepResult; repository: string }> {
  const repository = uniqueRepo(fixture);
  const r = await runCli(bed, [
    "build",
    `${repos[fixture]!.flakeUrl}#${attribute}`,
    "--image",
    `${plain.host}/${repository}`,
    "--plain-http",
    "--config",
    config,
    "--json",
    ...extra,
  ]);
  expect(r.code, r.stderr).toBe(0);
  return { result: lastJson<PushStepResult>(r.stdout), repository };
}

describe("build: each input format to the plain registry", () => {
  it("a plain package: image from its closure, entrypoint <out>/bin/<mainProgram>, runs under chroot", async () => {
    const { result, repository } = await buildPlain("hello", "default", ["--tag", "latest"]);
    expect(result.format).toBe("package");
    expect(result.image).toBe(`${plain.host}/${repository}@${result.digest}`);
    expect(result.revision.rev).toBe(repos.hello!.rev);
    expect(result.tags).toEqual([`rev-${repos.hello!.rev.slice(0, 12)}-${result.tags[0]!.slice(-8)}`, "latest"]);
    // Four store paths: busybox, hello-share, hello-lib as popular layers, the app last.
    expect(result.layers).toEqual({ total: 4, pushed: 4, skipped: 0, mounted: 0 });
    for (const phase of ["lock", "build", "closure", "layers", "manifest", "push", "total"]) expect(result.seconds[phase], phase).toBeTypeOf("number");

    const inspected = await skopeoInspect(`${plain.host}/${repository}:latest`, plainAccess());
    expect(inspected.Digest).toBe(result.digest);
    expect(inspected.Layers).toHaveLength(4);
    expect(inspected.RepoTags).toEqual(expect.arrayContaining(result.tags));
    const cfg = (await skopeoInspect(`${plain.host}/${repository}@${result.digest}`, plainAccess(), true)).config as { Entrypoint: string[]; Env: string[] };
    expect(cfg.Entrypoint).toEqual([expect.stringMatching(/^\/nix\/store\/[0-9a-z]{32}-hello-1\.0\/bin\/hello$/)]);
    expect(cfg.Env[0]).toMatch(/^PATH=\/nix\/store\/[0-9a-z]{32}-hello-1\.0\/bin:/);

    expect(await runImage(bed, `${plain.host}/${repository}@${result.digest}`, plainAccess(), ["one", "two"])).toBe(
      "Hello from nix-image-operator!\narguments: one two\n",
    );
  });

  it("image settings from flags: entrypoint, cmd, env, workdir, labels, ports, gzip layers", async () => {
    const { result, repository } = await buildPlain("hello", "hello", [
      "--entrypoint",
      "/bin/sh",
      "--entrypoint=-c",
      "--cmd",
      "echo $GREETING",
      "--env",
      "GREETING=hi there",
      "--workdir",
      "/tmp",
      "--label",
      "org.opencontainers.image.source=https://example.com/hello",
      "--expose",
      "8080",
      "--compression",
      "gzip",
      "--max-layers",
      "2",
    ]);
    expect(result.layers.total).toBe(2);
    const ref = `${plain.host}/${repository}@${result.digest}`;
    const manifest = await skopeoInspect(ref, plainAccess());
    expect(manifest.Labels).toEqual({ "org.opencontainers.image.source": "https://example.com/hello" });
    const raw = JSON.parse(
      (await import("node:child_process")).execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${ref}`], { encoding: "utf8" }),
    ) as { layers: Array<{ mediaType: string }> };
    expect(raw.layers.map((l) => l.mediaType)).toEqual(["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip"]);
    const cfg = (await skopeoInspect(ref, plainAccess(), true)).config as Record<string, unknown>;
    expect(cfg.Entrypoint).toEqual(["/bin/sh", "-c"]);
    expect(cfg.Cmd).toEqual(["echo $GREETING"]);
    expect(cfg.WorkingDir).toBe("/tmp");
    expect(cfg.ExposedPorts).toEqual({ "8080/tcp": {} });
    expect(cfg.Env).toEqual(expect.arrayContaining(["GREETING=hi there", expect.stringMatching(/^PATH=/)]));
  });

  it.each([
    ["default", "uncompressed, manifest.json last"],
    ["gzip", "gzip archive"],
    ["manifest-first", "manifest.json first"],
  ])("a docker-archive tarball (%s: %s): layers and config pushed as archived", async (attribute) => {
    const { result, repository } = await buildPlain("docker-archive", attribute);
    archiveDigests.add(result.digest);
    expect(result.format).toBe("docker-archive");
    expect(result.layers).toMatchObject({ total: 2, pushed: 2 });
    const ref = `${plain.host}/${repository}@${result.digest}`;
    const inspected = await skopeoInspect(ref, plainAccess());
    expect(inspected.Labels).toEqual({ "org.opencontainers.image.title": "docker-archive fixture" });
    expect((await runImage(bed, ref, plainAccess())).trim()).toBe("Hello from a docker-archive image!");
  });

  it("the three docker-archive variants are the same image (same digest)", () => {
    expect(archiveDigests.size).toBe(1);
  });

  it("a streamLayeredImage script: run, its output consumed while it runs", async () => {
    const { result, repository } = await buildPlain("stream-layered", "default");
    expect(result.format).toBe("stream-layered");
    expect(result.layers).toMatchObject({ total: 2, pushed: 2 });
    expect((await runImage(bed, `${plain.host}/${repository}@${result.digest}`, plainAccess())).trim()).toBe("Hello from a streamLayeredImage-style script!");
  });

  it("a failing streamLayeredImage script: one message with the script's own error", async () => {
    const r = await runCli(bed, [
      "build",
      `${repos["stream-layered"]!.flakeUrl}#failing`,
      "--image",
      `${plain.host}/${uniqueRepo("stream")}`,
      "--plain-http",
      "--config",
      config,
    ]);
    expect(r.code).toBe(1);
    const lines = messageLines(r.stderr);
    expect(lines[0]).toMatch(/^error: docker-archive .*stream.*: the image script failed \(exit code 3\)/);
    expect(r.stderr).toContain("cannot read store path /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-gone (intentional failure)");
    expect(r.stdout).toBe("");
  });

  it("a nix2container image JSON: its layers of store paths and its config", async () => {
    const { result, repository } = await buildPlain("nix2container", "default");
    expect(result.format).toBe("nix2container");
    expect(result.layers).toMatchObject({ total: 2, pushed: 2 });
    const ref = `${plain.host}/${repository}@${result.digest}`;
    const inspected = await skopeoInspect(ref, plainAccess());
    expect(inspected.Labels).toEqual({ "org.opencontainers.image.title": "nix2container fixture" });
    expect((await runImage(bed, ref, plainAccess())).trim()).toBe("Hello from a nix2container-style image!");
  });
});

describe("build: TLS registry with htpasswd auth", () => {
  it("pushes with --auth-file and --ca-file; skopeo reads it with the same credentials; it runs", async () => {
    const repository = uniqueRepo("hello-tls");
    const r = await runCli(bed, [
      "build",
      `${repos.hello!.flakeUrl}#hello`,
      "--image",
      `${tls.host}/${repository}:v1`,
      "--auth-file",
      tls.authFile,
      "--ca-file",
      tls.caFile,
      "--config",
      config,
      "--json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const result = lastJson<PushStepResult>(r.stdout);
    expect(result.tags).toContain("v1");
    expect(r.stdout + r.stderr).not.toContain(tls.password);
    const inspected = await skopeoInspect(`${tls.host}/${repository}:v1`, tlsAccess(bed));
    expect(inspected.Digest).toBe(result.digest);
    // Without credentials the registry refuses to serve it.
    await expect(skopeoInspect(`${tls.host}/${repository}:v1`, { skopeo: ["--cert-dir", tls.certsDir, "--no-creds"] })).rejects.toThrow(
      /unauthorized|authentication required/i,
    );
    expect((await runImage(bed, `${tls.host}/${repository}@${result.digest}`, tlsAccess(bed))).trim()).toBe("Hello from nix-image-operator!");
  });
});
