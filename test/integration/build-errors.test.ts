// Failures of `build` end with exit code 1 and ONE clear message on stderr (Nix's reason, the
// registry's error code and text, the policy's verdict), plus what to do; credentials never appear.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";
import { freePort } from "../support/process.ts";
import { fixtureRepo, messageLines, runCli, testbedConfig, uniqueRepo, type CliResult } from "../support/builder-fixtures.ts";

const bed = testbed();
const plain = bed.registry.plain;
const tls = bed.registry.tls;
let config = "";
let broken: GitRepo;
let hello: GitRepo;

beforeAll(async () => {
  config = await testbedConfig(bed);
  [broken, hello] = await Promise.all([fixtureRepo("broken"), fixtureRepo("hello")]);
});

/** Exit code 1, nothing on stdout, and exactly one `error:` message (which may span lines). */
function expectOneError(r: CliResult, pattern: RegExp): string {
  expect(r.code, r.stderr).toBe(1);
  expect(r.stdout).toBe("");
  const lines = messageLines(r.stderr);
  expect(lines[0]).toMatch(/^error: /);
  expect(lines.filter((l) => l.startsWith("error:"))).toHaveLength(1);
  const message = lines.join("\n");
  expect(message).toMatch(pattern);
  return message;
}

const buildTo = (ref: string, image: string, extra: string[] = []) => runCli(bed, ["build", ref, "--image", image, "--config", config, ...extra]);

describe("build failures: one clear message, exit code 1", () => {
  it("a missing attribute", async () => {
    const r = await buildTo(`${broken.flakeUrl}#default`, `${plain.host}/${uniqueRepo("err")}`, ["--plain-http"]);
    const message = expectOneError(r, /does not provide attribute 'packages\.x86_64-linux\.default', 'legacyPackages\.x86_64-linux\.default' or 'default'/);
    expect(message).toMatch(/What to do: Check spec\.attribute/);
  });

  it("a failing build, with the builder's last log lines", async () => {
    const r = await buildTo(`${broken.flakeUrl}#fails`, `${plain.host}/${uniqueRepo("err")}`, ["--plain-http"]);
    const message = expectOneError(r, /builder for '\/nix\/store\/[0-9a-z]{32}-broken-fails\.drv' failed with exit code 2/);
    expect(message).toContain("widget.c:42: error: 'frobnicate' undeclared (intentional fixture failure)");
  });

  it("a failing evaluation", async () => {
    const r = await buildTo(`${broken.flakeUrl}#throws`, `${plain.host}/${uniqueRepo("err")}`, ["--plain-http"]);
    expectOneError(r, /attribute `throws` fails during evaluation \(intentional\)/);
  });

  it("a ref the flake ref policy denies (no --config: git+http is not allowed by default)", async () => {
    const r = await runCli(bed, ["build", `${hello.flakeUrl}#default`, "--image", `${plain.host}/${uniqueRepo("err")}`, "--plain-http"]);
    expectOneError(r, /^error: flake ref denied by policy \(SchemeDenied\): 'git\+http:' flake refs are not allowed here/);
  });

  it("wrong credentials: the registry's code and text, before anything is built, no secret in the output", async () => {
    const wrong = "not-the-password-7f3a";
    const authFile = join(bed.tmpDir, "wrong-auth.json");
    const auth = Buffer.from(`${tls.username}:${wrong}`).toString("base64");
    await writeFile(authFile, JSON.stringify({ auths: { [tls.host]: { auth } } }), { mode: 0o600 });
    const r = await buildTo(`${broken.flakeUrl}#fails`, `${tls.host}/${uniqueRepo("err")}`, ["--auth-file", authFile, "--ca-file", tls.caFile]);
    expectOneError(
      r,
      /registry 127\.0\.0\.1:\d+: GET \/v2\/ failed: HTTP 401: UNAUTHORIZED: authentication required: the registry rejected the credentials\. What to do: Check the credentials/,
    );
    for (const secret of [wrong, auth, tls.password, Buffer.from(`${tls.username}:${tls.password}`).toString("base64")]) {
      expect(r.stdout + r.stderr).not.toContain(secret);
    }
    // The registry was asked first: the failing build never ran.
    expect(r.stderr).not.toContain("frobnicate");
  });

  it("no credentials for a registry that needs them", async () => {
    const r = await buildTo(`${hello.flakeUrl}#default`, `${tls.host}/${uniqueRepo("err")}`, ["--ca-file", tls.caFile]);
    expectOneError(r, /HTTP 401: UNAUTHORIZED: authentication required: the registry requires authentication and no credentials are configured for it/);
  });

  it("a TLS registry whose CA is not given", async () => {
    const r = await buildTo(`${hello.flakeUrl}#default`, `${tls.host}/${uniqueRepo("err")}`, ["--auth-file", tls.authFile]);
    const message = expectOneError(r, /GET \/v2\/ failed: .*(certificate|CERT)/i);
    expect(message).toMatch(/What to do: TLS failed: give the registry's CA with --ca-file/);
    expect(r.stdout + r.stderr).not.toContain(tls.password);
  });

  it("an unreachable registry (after retries)", async () => {
    const port = await freePort();
    const r = await buildTo(`${hello.flakeUrl}#default`, `127.0.0.1:${port}/${uniqueRepo("err")}`, ["--plain-http"]);
    expectOneError(r, new RegExp(`registry 127\\.0\\.0\\.1:${port}: GET /v2/ failed: ECONNREFUSED.*What to do: Is the registry running and reachable`));
    // Each retry was logged as a warning (JSON lines), the error printed once.
    expect(r.stderr.split("\n").filter((l) => l.includes("registry request failed, retrying")).length).toBeGreaterThanOrEqual(2);
  });

  it("usage errors exit with code 2 and point to --help", async () => {
    const r = await runCli(bed, ["build", `${hello.flakeUrl}#default`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: build: --image <registry>\/<repository> is required\nRun 'nix-image-operator build --help' for usage\.\n$/);
    const bad = await runCli(bed, ["build", `${hello.flakeUrl}#default`, "--image", `${plain.host}/x`, "--compression", "zstd"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--compression must be one of none, gzip/);
  });
});
