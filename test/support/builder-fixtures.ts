// Helpers for the builder's integration tests (test/integration/build-*.test.ts): fixture flakes
// as git repositories on the test bed's git server, the CLI run as a subprocess with the test
// bed's Nix configuration, and independent checks of what was pushed: skopeo reads it, skopeo
// copies it to an OCI layout, umoci unpacks a rootfs, and the program runs in it under chroot.
import { randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createGitRepo, type GitRepo } from "./git-fixtures.ts";
import type { TestBed } from "./testbed-types.ts";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const cliPath = join(repoRoot, "src/cli/main.ts");

export type FixtureName = "hello" | "docker-archive" | "stream-layered" | "nix2container" | "big" | "broken";

/** Every file of test/fixtures/flakes/<name>, for createGitRepo. */
export async function fixtureFiles(name: FixtureName): Promise<Record<string, string>> {
  const dir = join(repoRoot, "test/fixtures/flakes", name);
  const out: Record<string, string> = {};
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out[relative(dir, p)] = await readFile(p, "utf8");
    }
  };
  await walk(dir);
  return out;
}

/** A fixture flake pushed to the test bed's git server. */
export async function fixtureRepo(name: FixtureName, bed?: TestBed): Promise<GitRepo> {
  return createGitRepo(await fixtureFiles(name), { prefix: name, ...(bed ? { bed } : {}) });
}

/** An operator config whose flake ref policy allows the test bed's `git+http` server. */
export async function testbedConfig(bed: TestBed): Promise<string> {
  const dir = join(bed.tmpDir, "builder-config");
  await mkdir(dir, { recursive: true });
  const file = join(dir, "operator-config.yaml");
  if (!existsSync(file)) await writeFile(file, "flakeRefPolicy:\n  allowedSchemes: [git+http, git+https, github]\n  allowedAddressRanges: [127.0.0.0/8]\n");
  return file;
}

/** A unique repository name on a registry. */
export function uniqueRepo(prefix: string): string {
  return `builder/${prefix}-${randomBytes(4).toString("hex")}`;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node src/cli/main.ts <args>` with the test bed's Nix environment. */
export function runCli(bed: TestBed, args: string[], opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      cwd: opts.cwd ?? repoRoot,
      // A layer cache of its own per run unless the test shares one: no test sees another's cache.
      env: {
        ...process.env,
        ...bed.nix.env,
        LOG_LEVEL: "info",
        NIX_IMAGE_OPERATOR_CACHE: join(bed.tmpDir, "layer-caches", randomBytes(6).toString("hex")),
        ...opts.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 90_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a command; rejects with its stderr on a non-zero exit. */
export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}: ${stderr.slice(-2000)}`))));
  });
}

/** The CLI's non-log stderr lines (pino JSON lines removed). */
export function messageLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("{"));
}

/** Last JSON object printed on stdout. */
export function lastJson<T = Record<string, unknown>>(stdout: string): T {
  const start = stdout.indexOf("{");
  if (start < 0) throw new Error(`no JSON on stdout: ${stdout.slice(0, 500)}`);
  return JSON.parse(stdout.slice(start)) as T;
}

export interface RegistryAccess {
  /** skopeo flags to read from the registry. */
  skopeo: string[];
}

export function plainAccess(): RegistryAccess {
  return { skopeo: ["--tls-verify=false"] };
}

export function tlsAccess(bed: TestBed): RegistryAccess {
  return { skopeo: ["--cert-dir", bed.registry.tls.certsDir, "--authfile", bed.registry.tls.authFile] };
}

export async function skopeoInspect(ref: string, access: RegistryAccess, config = false): Promise<Record<string, unknown>> {
  const out = await run("skopeo", ["inspect", ...(config ? ["--config"] : []), ...access.skopeo, `docker://${ref}`]);
  return JSON.parse(out) as Record<string, unknown>;
}

/**
 * Copies the image to an OCI layout with skopeo, unpacks its rootfs with umoci and runs the
 * image's entrypoint + cmd (+ `args`) in it under chroot; returns what it printed.
 */
export async function runImage(bed: TestBed, ref: string, access: RegistryAccess, args: string[] = []): Promise<string> {
  const rootfs = await unpackImage(bed, ref, access);
  const config = (await skopeoInspect(ref, access, true)).config as { Entrypoint?: string[]; Cmd?: string[] };
  const argv = [...(config.Entrypoint ?? []), ...(config.Cmd ?? []), ...args];
  if (argv.length === 0) throw new Error(`image ${ref} has no entrypoint or cmd`);
  return run("chroot", [rootfs, ...argv], { env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
}

/** skopeo copy to an OCI layout, then umoci's rootfs of it; returns the rootfs directory. */
export async function unpackImage(bed: TestBed, ref: string, access: RegistryAccess): Promise<string> {
  const dir = join(bed.tmpDir, "builder-images", randomBytes(6).toString("hex"));
  await mkdir(dir, { recursive: true });
  const srcFlags = access.skopeo.map((f) =>
    f
      .replace(/^--tls-verify/, "--src-tls-verify")
      .replace(/^--cert-dir/, "--src-cert-dir")
      .replace(/^--authfile/, "--src-authfile"),
  );
  await run("skopeo", ["copy", "-q", ...srcFlags, `docker://${ref}`, `oci:${join(dir, "oci")}:image`]);
  const rootfs = join(dir, "rootfs");
  await run("umoci", ["raw", "unpack", "--rootless", "--image", `${join(dir, "oci")}:image`, rootfs]);
  return rootfs;
}

/** Digests (hex) of every blob in a distribution registry's filesystem storage. */
export function storedBlobs(rootDir: string): Set<string> {
  const base = join(rootDir, "docker/registry/v2/blobs/sha256");
  const out = new Set<string>();
  if (!existsSync(base)) return out;
  for (const prefix of readdirSync(base)) {
    for (const hex of readdirSync(join(base, prefix))) {
      if (existsSync(join(base, prefix, hex, "data"))) out.add(hex);
    }
  }
  return out;
}

/** Blob uploads the registry completed for `repository`, counted from its own request log. */
export function completedUploads(logFile: string, repository: string): number {
  if (!existsSync(logFile) || statSync(logFile).size === 0) return 0;
  const lines = readFileSync(logFile, "utf8").split("\n");
  const path = `/v2/${repository}/blobs/uploads/`;
  return lines.filter(
    (l) => l.includes('msg="response completed"') && l.includes("http.request.method=PUT") && l.includes(path) && /http\.response\.status=201/.test(l),
  ).length;
}

export interface RawManifest {
  mediaType: string;
  config: { digest: string; size: number };
  layers: Array<{ mediaType: string; digest: string; size: number }>;
}

/** The manifest exactly as the registry serves it (skopeo inspect --raw). */
export async function rawManifest(ref: string, access: RegistryAccess): Promise<RawManifest> {
  return JSON.parse(await run("skopeo", ["inspect", "--raw", ...access.skopeo, `docker://${ref}`])) as RawManifest;
}

/** Waits until `read()` returns `expected` (the registry logs a request just after answering it). */
export async function settle<T>(read: () => T, expected: T, timeoutMs = 3000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let value = read();
  while (value !== expected && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    value = read();
  }
  return value;
}
