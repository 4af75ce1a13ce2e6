import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromOciConfig, fromSpecConfig, mergeImageConfig, packageDefaults } from "../../src/builder/image-config.ts";
import { ociPlatform } from "../../src/builder/push-step.ts";

describe("image config", () => {
  it("converts spec.image.config", () => {
    expect(
      fromSpecConfig({
        entrypoint: ["/bin/web"],
        env: [{ name: "PORT", value: "8080" }],
        exposedPorts: ["8080"],
        labels: { a: "b" },
        user: "65532:65532",
        workingDir: "/srv",
      }),
    ).toEqual({ entrypoint: ["/bin/web"], env: ["PORT=8080"], exposedPorts: ["8080"], labels: { a: "b" }, user: "65532:65532", workingDir: "/srv" });
    expect(fromSpecConfig(undefined)).toEqual({});
  });

  it("converts an OCI-style config and names what it drops", () => {
    const { config, ignored } = fromOciConfig({
      Entrypoint: ["/x"],
      Cmd: ["-v"],
      Env: ["A=1", "broken"],
      ExposedPorts: { "80/tcp": {} },
      Labels: { l: "v" },
      Volumes: { "/data": {} },
      WorkingDir: "/w",
    });
    expect(config).toEqual({ entrypoint: ["/x"], cmd: ["-v"], env: ["A=1"], exposedPorts: ["80/tcp"], labels: { l: "v" }, workingDir: "/w" });
    expect(ignored).toEqual(["Volumes"]);
  });

  it("merges user settings over defaults: env by name, labels by key, entrypoint drops the default cmd", () => {
    const merged = mergeImageConfig(
      { entrypoint: ["/a"], cmd: ["--serve"], env: ["PATH=/x/bin", "LANG=C"], labels: { a: "1", b: "2" } },
      { entrypoint: ["/b"], env: ["LANG=en_US.UTF-8", "NEW=1"], labels: { b: "3" } },
    );
    expect(merged).toEqual({ entrypoint: ["/b"], env: ["PATH=/x/bin", "LANG=en_US.UTF-8", "NEW=1"], labels: { a: "1", b: "3" } });
    expect(mergeImageConfig({ entrypoint: ["/a"], cmd: ["x"] }, { cmd: ["y"] })).toEqual({ entrypoint: ["/a"], cmd: ["y"] });
  });

  it("maps Nix systems to OCI platforms", () => {
    expect(ociPlatform("x86_64-linux")).toEqual({ architecture: "amd64" });
    expect(ociPlatform("aarch64-linux")).toEqual({ architecture: "arm64", variant: "v8" });
  });
});

describe("package defaults", () => {
  let root = "";
  const app = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-app-1.2.3";
  const dep = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-coreutils-9";
  const certs = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nss-cacert-3.9";

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "pkg-defaults-"));
    await mkdir(join(root, app, "bin"), { recursive: true });
    await writeFile(join(root, app, "bin", "app"), "#!/bin/sh\n");
    await chmod(join(root, app, "bin", "app"), 0o755);
    await writeFile(join(root, app, "bin", "helper"), "#!/bin/sh\n");
    await chmod(join(root, app, "bin", "helper"), 0o755);
    await mkdir(join(root, dep, "bin"), { recursive: true });
    await mkdir(join(root, certs, "etc/ssl/certs"), { recursive: true });
    await writeFile(join(root, certs, "etc/ssl/certs/ca-bundle.crt"), "pem");
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  const closure = [
    { path: app, narSize: 1, references: [dep, certs] },
    { path: dep, narSize: 1, references: [] },
    { path: certs, narSize: 1, references: [] },
  ];

  it("runs <out>/bin/<mainProgram or pname or name>, PATH and CA bundle set", async () => {
    const d = await packageDefaults({ outPath: app, info: { name: "app-1.2.3" }, closure, readRoot: root });
    expect(d.warning).toBeUndefined();
    expect(d.config.entrypoint).toEqual([`${app}/bin/app`]);
    expect(d.config.env).toEqual([
      `PATH=${app}/bin:${dep}/bin:/usr/local/bin:/usr/bin:/bin`,
      `SSL_CERT_FILE=${certs}/etc/ssl/certs/ca-bundle.crt`,
      `NIX_SSL_CERT_FILE=${certs}/etc/ssl/certs/ca-bundle.crt`,
    ]);
    expect((await packageDefaults({ outPath: app, info: { mainProgram: "helper", pname: "app" }, closure, readRoot: root })).config.entrypoint).toEqual([
      `${app}/bin/helper`,
    ]);
  });

  it("runs the out path itself when it is an executable file", async () => {
    const script = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-run.sh";
    await mkdir(join(root, "nix/store"), { recursive: true });
    await writeFile(join(root, script), "#!/bin/sh\n");
    await chmod(join(root, script), 0o555);
    const d = await packageDefaults({ outPath: script, info: { name: "run.sh" }, closure: [{ path: script, narSize: 1, references: [] }], readRoot: root });
    expect(d.config.entrypoint).toEqual([script]);
    expect(d.config.env).toEqual(["PATH=/usr/local/bin:/usr/bin:/bin"]);
  });

  it("warns instead of guessing when the program does not exist", async () => {
    const d = await packageDefaults({ outPath: app, info: { mainProgram: "nope" }, closure, readRoot: root });
    expect(d.config.entrypoint).toBeUndefined();
    expect(d.warning).toMatch(/bin\/nope does not exist .* 2 programs/);
  });
});
