// flake.nix cannot be built here: nixpkgs cannot be fetched (no network, no flake.lock). What is
// checked instead, with the test bed's real Nix:
//   1. it parses (`nix-instantiate --parse`);
//   2. its outputs evaluate against a stand-in for nixpkgs whose builders return their arguments,
//      so the flake's own logic is checked: systems, package and shell names, the buildNpmPackage
//      arguments (Node 24, importNpmLock), the lock file fix-up that gives every npm package a
//      registry URL, and the OCI image's config (uid 65532, entrypoint, PATH for the push step);
//   3. `nix flake show` gets as far as locking inputs and fails only because nixpkgs cannot be
//      downloaded (or, on a machine with network access, succeeds and lists the same outputs).
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { testbed } from "../support/kube.ts";
import { run } from "../support/process.ts";

const repo = fileURLToPath(new URL("../../", import.meta.url));

function nixEnv(): NodeJS.ProcessEnv {
  return { ...process.env, ...testbed().nix.env };
}

/** The flake's outputs with a stand-in nixpkgs, as JSON (only the fields the test reads). */
const stubEval = `
let
  flake = import ${JSON.stringify(join(repo, "flake.nix"))};
  stubPkgs = system: rec {
    lib = { licenses.asl20 = "asl20"; platforms.linux = [ "x86_64-linux" "aarch64-linux" ]; };
    nodejs_24 = "nodejs_24";
    nix = "nix"; skopeo = "skopeo"; kubectl = "kubectl"; kubernetes-helm = "kubernetes-helm";
    git = "git"; jq = "jq"; openssl = "openssl"; cacert = "cacert";
    buildNpmPackage = args: args // { stub = "buildNpmPackage"; };
    importNpmLock = { __functor = _: args: args // { stub = "importNpmLock"; }; npmConfigHook = "importNpmLock.npmConfigHook"; };
    dockerTools.streamLayeredImage = args: args // { stub = "streamLayeredImage"; };
    mkShell = args: args // { stub = "mkShell"; };
  };
  systems = [ "x86_64-linux" "aarch64-linux" ];
  nixpkgs.legacyPackages = builtins.listToAttrs (map (s: { name = s; value = stubPkgs s; }) systems);
  outputs = flake.outputs { self = { }; inherit nixpkgs; };
  p = outputs.packages.x86_64-linux;
  operator = p.nix-image-operator;
in {
  description = flake.description;
  inputs = flake.inputs;
  packageSystems = builtins.attrNames outputs.packages;
  shellSystems = builtins.attrNames outputs.devShells;
  packages = builtins.attrNames p;
  defaultIsOperator = p.default.pname == operator.pname;
  operator = {
    inherit (operator) pname version nodejs npmFlags npmConfigHook stub;
    meta = operator.meta;
    npmDeps = { inherit (operator.npmDeps) stub package; packages = operator.npmDeps.packageLock.packages; };
  };
  image = {
    inherit (p.image) name tag config extraCommands stub;
    contents = map (c: if builtins.isAttrs c then c.pname else c) p.image.contents;
  };
  shell = { inherit (outputs.devShells.x86_64-linux.default) packages stub; };
  src = {
    top = builtins.attrNames (builtins.readDir operator.src);
    cli = builtins.readDir (operator.src + "/src/cli") ? "main.ts";
  };
}`;

interface StubOutputs {
  description: string;
  inputs: { nixpkgs: { url: string } };
  packageSystems: string[];
  shellSystems: string[];
  packages: string[];
  defaultIsOperator: boolean;
  operator: {
    pname: string;
    version: string;
    nodejs: string;
    npmFlags: string[];
    npmConfigHook: string;
    stub: string;
    meta: { mainProgram: string; license: string };
    npmDeps: {
      stub: string;
      package: { name: string; version: string };
      packages: Record<string, { version?: string; resolved?: string; integrity?: string; link?: boolean }>;
    };
  };
  image: {
    name: string;
    tag: string;
    stub: string;
    extraCommands: string;
    contents: string[];
    config: { Entrypoint: string[]; Cmd: string[]; User: string; Env: string[]; ExposedPorts: Record<string, object>; Labels: Record<string, string> };
  };
  shell: { stub: string; packages: string[] };
  src: { top: string[]; cli: boolean };
}

describe("flake.nix", () => {
  it("parses (nix-instantiate --parse)", async () => {
    const { stdout } = await run("nix-instantiate", ["--parse", join(repo, "flake.nix")], { env: nixEnv() });
    expect(stdout).toContain("outputs");
  });

  it("evaluates against a stand-in nixpkgs: package, image and dev shell as intended", async () => {
    const { stdout } = await run("nix-instantiate", ["--eval", "--read-write-mode", "--strict", "--json", "--expr", stubEval], {
      env: nixEnv(),
      timeoutMs: 120_000,
    });
    const out = JSON.parse(stdout) as StubOutputs;
    const packageJson = JSON.parse(await readFile(join(repo, "package.json"), "utf8")) as { name: string; version: string; description: string };
    const lock = JSON.parse(await readFile(join(repo, "package-lock.json"), "utf8")) as {
      packages: Record<string, { version?: string; resolved?: string; integrity?: string; link?: boolean }>;
    };

    expect(out.inputs.nixpkgs.url).toMatch(/^github:NixOS\/nixpkgs\/nixos-\d\d\.\d\d$/);
    expect(out.packageSystems).toEqual(["aarch64-linux", "x86_64-linux"]);
    expect(out.shellSystems).toEqual(["aarch64-linux", "x86_64-linux"]);
    expect(out.packages.sort()).toEqual(["default", "image", "nix-image-operator"]);
    expect(out.defaultIsOperator).toBe(true);

    // The operator: buildNpmPackage on Node 24 with importNpmLock (no npmDepsHash to maintain).
    expect(out.operator).toMatchObject({
      stub: "buildNpmPackage",
      pname: "nix-image-operator",
      version: packageJson.version,
      nodejs: "nodejs_24",
      npmFlags: ["--ignore-scripts"],
      npmConfigHook: "importNpmLock.npmConfigHook",
      meta: { mainProgram: "nix-image-operator", license: "asl20" },
    });
    expect(out.operator.npmDeps.stub).toBe("importNpmLock");
    expect(out.operator.npmDeps.package).toMatchObject({ name: packageJson.name, version: packageJson.version });

    // The build's source: only what `npm ci && npm run build` and the package's files need.
    expect(out.src.top.sort()).toEqual(["crds", "package-lock.json", "package.json", "src", "tsconfig.build.json", "tsconfig.json"]);
    expect(out.src.cli).toBe(true);

    // Every registry package of the lock file gets its registry URL; integrity stays as it was.
    const entries = Object.entries(lock.packages).filter(([path, e]) => path !== "" && !e.link);
    expect(entries.length).toBeGreaterThan(100);
    for (const [path, entry] of entries) {
      const fixed = out.operator.npmDeps.packages[path]!;
      const name = path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length);
      expect(fixed.integrity, path).toBe(entry.integrity);
      expect(fixed.resolved, path).toBe(entry.resolved ?? `https://registry.npmjs.org/${name}/-/${name.split("/").at(-1)}-${entry.version}.tgz`);
    }
    const zod = lock.packages["node_modules/zod"]!;
    expect(out.operator.npmDeps.packages["node_modules/zod"]!.resolved).toBe(`https://registry.npmjs.org/zod/-/zod-${zod.version}.tgz`);
    const client = lock.packages["node_modules/@kubernetes/client-node"]!;
    expect(out.operator.npmDeps.packages["node_modules/@kubernetes/client-node"]!.resolved).toBe(
      `https://registry.npmjs.org/@kubernetes/client-node/-/client-node-${client.version}.tgz`,
    );

    // The image: same contract as the Dockerfile's (non-root, /tmp only, CLI on PATH for the push step).
    expect(out.image).toMatchObject({ stub: "streamLayeredImage", name: "nix-image-operator", tag: packageJson.version, extraCommands: "mkdir -m 1777 tmp" });
    expect(out.image.contents).toEqual(["nix-image-operator", "cacert"]);
    expect(out.image.config.User).toBe("65532:65532");
    expect(out.image.config.Entrypoint).toEqual(["/bin/nix-image-operator"]);
    expect(out.image.config.Env).toEqual(expect.arrayContaining(["PATH=/bin", "HOME=/tmp", "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"]));
    expect(Object.keys(out.image.config.ExposedPorts)).toEqual(["8080/tcp"]);

    // The dev shell: what working on this repository needs.
    expect(out.shell.stub).toBe("mkShell");
    expect(out.shell.packages).toEqual(expect.arrayContaining(["nodejs_24", "nix", "skopeo", "kubectl", "kubernetes-helm"]));
  });

  it("nix flake show gets to locking its inputs and fails only for want of network (or lists the outputs)", async () => {
    // A copy with just the files the flake reads at evaluation time, so nothing else of the
    // working tree is copied into the store.
    const dir = await mkdtemp(join(testbed().tmpDir, "flake-show-"));
    for (const file of ["flake.nix", "package.json", "package-lock.json"]) await copyFile(join(repo, file), join(dir, file));
    const cache = join(dir, ".cache");
    await mkdir(cache);
    const env = { ...nixEnv(), XDG_CACHE_HOME: cache, NIX_CONFIG: `${nixEnv().NIX_CONFIG ?? ""}\ndownload-attempts = 1\nconnect-timeout = 5\n` };
    const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        "nix",
        ["flake", "show", "--json", "--no-write-lock-file", `path:${dir}`],
        { env, timeout: 120_000, maxBuffer: 16 << 20 },
        (error, stdout, stderr) => {
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
        },
      );
    });
    if (result.code === 0) {
      // A machine with network access: the outputs are there.
      const shown = JSON.parse(result.stdout) as { packages: Record<string, Record<string, unknown>>; devShells: Record<string, Record<string, unknown>> };
      expect(Object.keys(shown.packages["x86_64-linux"]!).sort()).toEqual(["default", "image", "nix-image-operator"]);
      expect(Object.keys(shown.devShells["x86_64-linux"]!)).toEqual(["default"]);
      return;
    }
    const errors = result.stderr.split("\n").filter((l) => l.startsWith("error:"));
    expect(errors, result.stderr).toHaveLength(1);
    expect(errors[0]).toMatch(
      /^error: unable to download 'https:\/\/api\.github\.com\/repos\/NixOS\/nixpkgs\/commits\/nixos-\d\d\.\d\d': (Couldn't resolve host name|Could not resolve host|Couldn't connect to server|Timeout was reached)/,
    );
  });
});
