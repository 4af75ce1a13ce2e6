// The images the e2e cluster's pods run, built on this machine without Docker and cached by
// content under ~/.cache/nix-image-operator/e2e/layers (only the first run pays):
//
//   pause     a static C program (pause.c, gcc -static): the pod sandbox
//   operator  Debian minbase (debootstrap from the machine's apt mirror) + Node + the operator
//             (dist/ from tsc, package.json, production node_modules); runs the controller and
//             the builder Job's push step
//   builder   Debian trixie minbase + nix-bin (Nix 2.26: the current end of the supported range;
//             the integration tier runs bookworm's 2.8, the old end), git, busybox-static, the
//             nixbld build users + a nix.conf for offline builds + Node + the operator: the Job's
//             prepare, build and stream steps
//
// Each layer is an uncompressed, name-sorted tar made by GNU tar from a directory; images are
// pushed with the project's own registry client (src/oci). Tags are content hashes, never latest.
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { chmod, copyFile, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import type { Readable } from "node:stream";
import { buildImageConfig, buildImageManifest, MEDIA_TYPE_OCI_LAYER, type ImageRuntimeConfig } from "../../../src/oci/image-manifest.ts";
import { RegistryClient } from "../../../src/oci/registry-client.ts";
import { bundleCli } from "../../../scripts/bundle-cli.ts";
import type { Digest } from "../../../src/oci/digest.ts";
import type { RegistryCredentials } from "../../../src/oci/docker-config.ts";
import { run } from "../../support/process.ts";
import { removeTree } from "./host.ts";

/** Bump to rebuild every cached layer (e.g. after changing how a layer is made). */
const RECIPE_VERSION = "1";

interface Layer {
  name: string;
  file: string;
  digest: Digest;
  size: number;
}

export interface ImageSpec {
  name: string;
  layers: Layer[];
  config: ImageRuntimeConfig;
}

export interface PushedImage {
  /** host/repository:tag (the tag is a content hash). */
  reference: string;
  /** host/repository@sha256:... */
  pinned: string;
  repository: string;
  tag: string;
  digest: Digest;
}

type Log = (message: string) => void;

export function e2eCacheDir(): string {
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(cache, "nix-image-operator", "e2e");
}

function sha256(...parts: (string | Buffer)[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p).update("\0");
  return h.digest("hex");
}

async function fileDigest(file: string): Promise<{ digest: Digest; size: number }> {
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${h.digest("hex")}`, size };
}

/** Directory entries to leave out of rootfs layers (runtime mounts and caches). */
const rootfsExcludes = ["dev/*", "proc/*", "sys/*", "run/*", "tmp/*", "var/tmp/*"];

/**
 * Tars `root` into `<layers>/<name>-<key>.tar` (sorted names, numeric owners, no atime/ctime)
 * unless that layer exists already. `prepare` fills `root` first when the layer is missing.
 */
async function cachedLayer(
  name: string,
  key: string,
  log: Log,
  prepare: (root: string) => Promise<void>,
  opts: { excludes?: string[]; keepRoot?: boolean } = {},
): Promise<Layer> {
  const dir = join(e2eCacheDir(), "layers");
  const id = `${name}-${key.slice(0, 16)}`;
  const file = join(dir, `${id}.tar`);
  const meta = join(dir, `${id}.json`);
  if (existsSync(meta) && existsSync(file)) {
    const m = JSON.parse(readFileSync(meta, "utf8")) as { digest: Digest; size: number };
    if (statSync(file).size === m.size) return { name, file, digest: m.digest, size: m.size };
  }
  await mkdir(dir, { recursive: true });
  const root = join(e2eCacheDir(), "work", id);
  removeTree(root);
  await mkdir(root, { recursive: true });
  const started = Date.now();
  log(`building layer ${id} (first time only)`);
  try {
    await prepare(root);
    const entries = readdirSync(root).sort();
    const tmp = `${file}.tmp`;
    await run(
      "tar",
      [
        "--create",
        `--file=${tmp}`,
        `--directory=${root}`,
        "--sort=name",
        "--numeric-owner",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        "--anchored",
        ...(opts.excludes ?? []).map((e) => `--exclude=${e}`),
        "--",
        ...entries,
      ],
      { timeoutMs: 10 * 60_000 },
    );
    const info = await fileDigest(tmp);
    await rename(tmp, file);
    await writeFile(meta, JSON.stringify({ ...info, name, key, created: new Date().toISOString() }, null, 2) + "\n");
    log(`layer ${id}: ${(info.size / 1e6).toFixed(1)} MB in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    return { name, file, ...info };
  } finally {
    if (!opts.keepRoot) removeTree(root);
  }
}

/** Keeps the `keep` newest layers named `<name>-*` (the source changes often; each is ~100 MB). */
function pruneLayers(name: string, keep: number, current: string): void {
  const dir = join(e2eCacheDir(), "layers");
  const re = new RegExp(`^${name}-[0-9a-f]{16}\\.tar$`);
  const files = readdirSync(dir)
    .filter((f) => re.test(f))
    .map((f) => join(dir, f))
    .filter((f) => f !== current)
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  for (const f of files.slice(Math.max(0, keep - 1))) {
    rmSync(f, { force: true });
    rmSync(f.replace(/\.tar$/, ".json"), { force: true });
  }
}

// ---- Debian ------------------------------------------------------------------------------------

interface DebianSource {
  mirror: string;
  suite: string;
}

/** The Debian mirror and suite this machine's apt uses (NIO_E2E_DEBIAN_MIRROR/_SUITE override). */
function debianSource(): DebianSource {
  let suite = process.env.NIO_E2E_DEBIAN_SUITE ?? "";
  if (!suite) {
    try {
      suite = /^VERSION_CODENAME=(\S+)$/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "";
    } catch {
      // below
    }
  }
  suite ||= "bookworm";
  let mirror = process.env.NIO_E2E_DEBIAN_MIRROR ?? "";
  if (!mirror) {
    const candidates: string[] = [];
    for (const file of ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]) {
      let text = "";
      try {
        text = readFileSync(file, "utf8");
      } catch {
        continue;
      }
      // deb822 stanzas: URIs + Suites; one-line format: deb URI suite components.
      for (const stanza of text.split(/\n\s*\n/)) {
        const uris = /^URIs:\s*(.+)$/m.exec(stanza)?.[1]?.split(/\s+/) ?? [];
        const suites = /^Suites:\s*(.+)$/m.exec(stanza)?.[1]?.split(/\s+/) ?? [];
        if (suites.includes(suite)) candidates.push(...uris);
      }
      for (const m of text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s/gm)) if (m[2] === suite) candidates.push(m[1]!);
    }
    mirror = candidates.find((u) => /^https?:\/\//.test(u) && !/security/.test(u)) ?? "http://deb.debian.org/debian";
  }
  return { mirror, suite };
}

/**
 * Where the builder image's Debian comes from: trixie, for its nix-bin 2.26 (bookworm has 2.8),
 * from the same mirror as the machine's (NIO_BUILDER_DEBIAN_SUITE overrides the suite).
 */
function builderDebianSource(): DebianSource {
  return { mirror: debianSource().mirror, suite: process.env.NIO_BUILDER_DEBIAN_SUITE ?? "trixie" };
}

const baseIncludes = ["ca-certificates"];
// openssh-client: git+ssh flake sources (the fetch step's git runs ssh; git only recommends it).
const builderPackages = ["nix-bin", "git", "openssh-client", "busybox-static"];

/**
 * Nix settings baked into the builder image: Nix runs as root in the build container and runs
 * builders as the nixbld build users (issue 12 item 2: never root on the shared store), with the
 * chart's default build capabilities; no sandbox (an unprivileged container cannot make one, and
 * the fixture flakes use host tools by absolute path), no binary cache (these machines reach none).
 */
const builderNixConf = [
  "# nix-image-operator e2e builder image: offline, unsandboxed builds as nixbld build users",
  "experimental-features = nix-command flakes",
  "build-users-group = nixbld",
  "sandbox = false",
  "substituters =",
  "",
].join("\n");

/**
 * The build users, as Nix's multi-user installer makes them (and scripts/setup.sh on the test
 * bed): group nixbld (gid 30000) with members nixbld1..8 (uid 30001..30008), no home, no shell.
 * The store directory is root:nixbld 1775 (what Nix itself sets as root with build users), so Nix
 * in a step without CAP_CHOWN (fetch, cache) finds it right and has nothing to change.
 */
const buildUsersScript = [
  "groupadd --system --gid 30000 nixbld",
  'for i in 1 2 3 4 5 6 7 8; do useradd --system --uid "$((30000 + i))" --gid nixbld --groups nixbld --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin --comment "Nix build user $i" "nixbld$i"; done',
  "chown root:nixbld /nix/store && chmod 1775 /nix/store",
].join("\n");

const trimPaths = ["var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/log", "root/.cache"];

async function trimRootfs(root: string): Promise<void> {
  for (const p of trimPaths) {
    await rm(join(root, p), { recursive: true, force: true });
    await mkdir(join(root, p), { recursive: true });
  }
}

/** Runs `script` with `sh -c` in a private mount namespace: its mounts vanish when it exits. */
async function inPrivateMounts(script: string, args: string[], timeoutMs: number): Promise<void> {
  await run("unshare", ["--mount", "--propagation", "private", "sh", "-ec", script, "sh", ...args], { timeoutMs });
}

async function debootstrapBase(root: string, source: DebianSource, log: Log): Promise<void> {
  log(`debootstrap --variant=minbase ${source.suite} from ${source.mirror}`);
  // debootstrap mounts proc/sys in the target; the private namespace drops them whatever happens.
  await inPrivateMounts(
    'debootstrap --variant=minbase --include="$1" "$2" "$3" "$4" >"$3.debootstrap.log" 2>&1 || { tail -n 30 "$3.debootstrap.log" >&2; tail -n 30 "$3/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }',
    [baseIncludes.join(","), source.suite, root, source.mirror],
    30 * 60_000,
  ).catch((e: unknown) => {
    throw new Error(
      `debootstrap of Debian ${source.suite} from ${source.mirror} failed (mirror reachable? NIO_E2E_DEBIAN_MIRROR overrides it): ${(e as Error).message}`,
    );
  });
  await rm(`${root}.debootstrap.log`, { force: true });
}

async function installBuilderPackages(root: string, log: Log): Promise<void> {
  log(`apt-get install ${builderPackages.join(" ")} in the builder rootfs`);
  // No service may start in the chroot (nix-bin ships an init script for nix-daemon).
  await writeFile(join(root, "usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  await copyFile("/etc/resolv.conf", join(root, "etc/resolv.conf")).catch(() => undefined);
  // debootstrap leaves the package lists of its run; update them only when they fail.
  const install = (update: boolean) =>
    inPrivateMounts(
      'root=$1; shift; mount -t proc proc "$root/proc"; ' +
        (update ? 'chroot "$root" apt-get update -q >"$root.apt.log" 2>&1 || { tail -n 20 "$root.apt.log" >&2; exit 1; }; ' : "") +
        'chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$root.apt.log" 2>&1 || { tail -n 30 "$root.apt.log" >&2; exit 1; }',
      [root, ...builderPackages],
      30 * 60_000,
    );
  await install(false).catch((e: unknown) => {
    log(`apt-get install failed (${(e as Error).message.split("\n")[0]}); apt-get update and retry`);
    return install(true);
  });
  await rm(`${root}.apt.log`, { force: true });
  await rm(join(root, "usr/sbin/policy-rc.d"), { force: true });
  await mkdir(join(root, "etc/nix"), { recursive: true });
  await writeFile(join(root, "etc/nix/nix.conf"), builderNixConf);
  // An initialised store (database with its schema file): the prepare step seeds volumes from it.
  await inPrivateMounts('mount -t proc proc "$1/proc"; chroot "$1" nix-store --init; chroot "$1" nix --version', [root], 60_000);
  await inPrivateMounts('chroot "$1" sh -ec "$2"', [root, buildUsersScript], 60_000);
  const store = statSync(join(root, "nix/store"));
  if (store.uid !== 0 || store.gid !== 30000 || (store.mode & 0o7777) !== 0o1775) throw new Error("the builder rootfs's /nix/store is not root:nixbld 1775");
  if (!existsSync(join(root, "nix/var/nix/db/schema"))) throw new Error("nix-store --init made no nix/var/nix/db/schema in the builder rootfs");
}

// ---- layers ------------------------------------------------------------------------------------

export interface BuildImagesOptions {
  repoRoot: string;
  log: Log;
}

function filesUnder(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, base));
    else if (e.isFile()) out.push(relative(base, p));
  }
  return out.sort();
}

function nodeBinary(): string {
  // The Node running this process is the one the project targets (>= 22; setup.sh brings 24).
  return process.execPath;
}

/** Production packages of the lock file (top-level directories under node_modules). */
function productionPackages(repoRoot: string): string[] {
  const lock = JSON.parse(readFileSync(join(repoRoot, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
  return Object.entries(lock.packages)
    .filter(([path, info]) => path.startsWith("node_modules/") && !info.dev && path.split("node_modules/").length === 2)
    .map(([path]) => path)
    .filter((path) => existsSync(join(repoRoot, path)))
    .sort();
}

function appKey(repoRoot: string): string {
  const h = createHash("sha256").update(RECIPE_VERSION);
  for (const f of ["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "scripts/bundle-cli.ts"])
    h.update(f).update(readFileSync(join(repoRoot, f)));
  for (const f of filesUnder(join(repoRoot, "src"))) h.update(f).update(readFileSync(join(repoRoot, "src", f)));
  return h.digest("hex");
}

const appDir = "opt/nix-image-operator";
const wrapper = `#!/bin/sh\nexec /usr/local/bin/node /${appDir}/dist/cli/main.js "$@"\n`;

async function buildApp(root: string, repoRoot: string, log: Log): Promise<void> {
  const dest = join(root, appDir);
  await mkdir(dest, { recursive: true });
  log("tsc -p tsconfig.build.json (operator dist/ for the images)");
  const tsc = join(repoRoot, "node_modules/.bin/tsc");
  await run(tsc, ["-p", join(repoRoot, "tsconfig.build.json"), "--outDir", join(dest, "dist"), "--sourceMap", "false"], {
    cwd: repoRoot,
    timeoutMs: 5 * 60_000,
  }).catch((e: unknown) => {
    // Type errors still emit JavaScript (noEmitOnError is off); only a missing output is fatal.
    if (!existsSync(join(dest, "dist/cli/main.js"))) throw e;
    log(`warning: tsc reported errors; using the emitted JavaScript anyway: ${(e as Error).message.split("\n").slice(0, 4).join(" | ")}`);
  });
  await copyFile(join(repoRoot, "package.json"), join(dest, "package.json"));
  const packages = productionPackages(repoRoot);
  await mkdir(join(dest, "node_modules"), { recursive: true });
  for (const p of packages) {
    await mkdir(dirname(join(dest, p)), { recursive: true });
    await run("cp", ["-a", join(repoRoot, p), join(dest, p)]);
  }
  // As `npm run build` does: the CLI bundled in place (what the Dockerfiles ship), from the
  // package.json and dependencies copied above.
  await bundleCli(join(dest, "dist"));
  await mkdir(join(root, "usr/local/bin"), { recursive: true });
  await writeFile(join(root, "usr/local/bin/nix-image-operator"), wrapper, { mode: 0o755 });
  await chmod(join(root, "usr/local/bin/nix-image-operator"), 0o755);
}

export interface BuiltImages {
  pause: ImageSpec;
  operator: ImageSpec;
  builder: ImageSpec;
}

const systemPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Builds (or finds in the cache) every layer of the three images. */
export async function buildImages(opts: BuildImagesOptions): Promise<BuiltImages> {
  const { repoRoot, log } = opts;
  const source = debianSource();
  const pauseSource = readFileSync(new URL("./pause.c", import.meta.url));
  const gccVersion = (await run("gcc", ["--version"]).catch(() => ({ stdout: "no gcc" }))).stdout.split("\n")[0] ?? "";
  const pause = cachedLayer("pause", sha256(RECIPE_VERSION, pauseSource, gccVersion), log, async (root) => {
    const src = join(root, "..", "pause.c");
    await writeFile(src, pauseSource);
    await run("gcc", ["-static", "-Os", "-s", "-o", join(root, "pause"), src]).catch((e: unknown) => {
      throw new Error(`cannot build the pause image: gcc -static failed (apt-get install gcc libc6-dev): ${(e as Error).message}`);
    });
    await rm(src, { force: true });
  });

  const builderSource = builderDebianSource();
  const baseKeyOf = (s: DebianSource) => sha256(RECIPE_VERSION, s.mirror, s.suite, "minbase", baseIncludes.join(","), trimPaths.join(","));
  const baseKey = baseKeyOf(source);
  const builderKey = sha256(baseKeyOf(builderSource), builderPackages.join(","), builderNixConf, buildUsersScript);
  const baseRoot = join(e2eCacheDir(), "work", "debian-base");
  const builderBaseRoot = join(e2eCacheDir(), "work", "debian-builder-base");
  const ensured = new Set<string>();
  const ensureBase = async (root: string, from: DebianSource) => {
    if (ensured.has(root)) return;
    removeTree(root);
    await mkdir(dirname(root), { recursive: true });
    await debootstrapBase(root, from, log);
    ensured.add(root);
  };
  try {
    const base = await cachedLayer(
      "debian",
      baseKey,
      log,
      async (root) => {
        await ensureBase(baseRoot, source);
        await run("cp", ["-a", `${baseRoot}/.`, root]);
        await trimRootfs(root);
      },
      { excludes: rootfsExcludes },
    );
    const builderOs = await cachedLayer(
      "debian-nix",
      builderKey,
      log,
      async (root) => {
        await ensureBase(builderBaseRoot, builderSource);
        await run("cp", ["-a", `${builderBaseRoot}/.`, root]);
        await installBuilderPackages(root, log);
        await trimRootfs(root);
      },
      { excludes: rootfsExcludes },
    );

    const nodeFile = nodeBinary();
    const nodeKey = sha256(RECIPE_VERSION, (await fileDigest(nodeFile)).digest);
    const node = await cachedLayer("node", nodeKey, log, async (root) => {
      await mkdir(join(root, "usr/local/bin"), { recursive: true });
      await copyFile(nodeFile, join(root, "usr/local/bin/node"));
      await chmod(join(root, "usr/local/bin/node"), 0o755);
    });
    const app = await cachedLayer("operator-app", appKey(repoRoot), log, (root) => buildApp(root, repoRoot, log));
    pruneLayers("operator-app", 3, app.file);
    const pauseLayer = await pause;
    return {
      pause: { name: "pause", layers: [pauseLayer], config: { entrypoint: ["/pause"] } },
      operator: {
        name: "nix-image-operator",
        layers: [base, node, app],
        // Like the project's own operator image (flake.nix): non-root uid 65532. The push step of
        // builder pods runs as this user.
        config: { entrypoint: ["/usr/local/bin/nix-image-operator"], env: [systemPath, "NODE_ENV=production"], user: "65532:65532" },
      },
      builder: {
        name: "nix-builder",
        layers: [builderOs, node, app],
        config: { entrypoint: ["/usr/local/bin/nix-image-operator"], env: [systemPath, "NODE_ENV=production"] },
      },
    };
  } finally {
    removeTree(baseRoot);
    removeTree(builderBaseRoot);
  }
}

/** Pushes an image (layers that the registry lacks, config, manifest) under a content-hash tag. */
export async function pushImage(
  host: string,
  repository: string,
  image: ImageSpec,
  opts: { plainHttp?: boolean; credentials?: RegistryCredentials; caFile?: string; tagPrefix?: string } = {},
): Promise<PushedImage> {
  const client = new RegistryClient({
    host,
    plainHttp: opts.plainHttp ?? true,
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
    ...(opts.caFile ? { caFile: opts.caFile } : {}),
  });
  try {
    for (const layer of image.layers) {
      if (await client.hasBlob(repository, layer.digest)) continue;
      await client.uploadBlobStream(repository, {
        open: () => {
          const stream: Readable = createReadStream(layer.file, { highWaterMark: 1 << 20 });
          return { stream, result: Promise.resolve({ digest: layer.digest, size: layer.size }) };
        },
      });
    }
    const config = buildImageConfig({
      diffIds: image.layers.map((l) => l.digest),
      config: image.config,
      historyCreatedBy: `nix-image-operator e2e: ${image.name}`,
    });
    if (!(await client.hasBlob(repository, config.digest))) await client.uploadBlob(repository, config.bytes);
    const manifest = buildImageManifest({
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: image.layers.map((l) => ({ mediaType: MEDIA_TYPE_OCI_LAYER, digest: l.digest, size: l.size })),
    });
    const tag = `${opts.tagPrefix ?? "e2e-"}${manifest.digest.slice("sha256:".length, "sha256:".length + 16)}`;
    await client.putManifest(repository, tag, manifest);
    return { reference: `${host}/${repository}:${tag}`, pinned: `${host}/${repository}@${manifest.digest}`, repository, tag, digest: manifest.digest };
  } finally {
    client.close();
  }
}
