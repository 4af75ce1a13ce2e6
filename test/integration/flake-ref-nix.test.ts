// Cross-checks src/flake/flake-ref.ts against the real Nix (Debian nix-bin 2.8):
//
//   (a) local fixtures (a git repo and a plain directory, each with a flake.nix that needs no
//       nixpkgs): what `nix flake metadata --json REF` reports as `original`, `locked` and `url`
//       must be what our parse of REF predicts, and pinning with withRevision must lock the same
//       source;
//   (b) refs that cannot be fetched offline: Nix either refuses the ref (a parse error) or gets as
//       far as trying to fetch it. Our parser must accept exactly what Nix parses, except for the
//       documented differences in KNOWN_DIFFERENCES. For refs both accept, the attributes Nix
//       parsed (`nix registry add`, which parses without fetching) must be what our parse gives.
//
// Nix runs with a test-owned configuration and HOME, and with every http(s) proxy pointed at a
// closed loopback port and ssh replaced by `false`, so nothing leaves the machine and every fetch
// fails at once. The test needs no other part of the test bed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { FlakeRefError, formatFlakeRef, parseFlakeRef, withRevision, type FlakeRef } from "../../src/flake/flake-ref.ts";

const NIX_CALL_TIMEOUT_MS = 20_000;
const CONCURRENCY = 8;

let work = "";
let env: Record<string, string> = {};
let nixVersion = "";

interface NixResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

function runNix(args: string[], cwd: string): Promise<NixResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn("nix", args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, NIX_CALL_TIMEOUT_MS);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr, timedOut });
    });
  });
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function git(cwd: string, ...args: string[]): string {
  const r = spawnSync("git", ["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main", ...args], {
    cwd,
    encoding: "utf8",
    env,
  });
  if (r.status !== 0) throw new Error(`git ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout.trim();
}

const FLAKE_NIX = (name: string) => `{
  description = "${name}";
  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "${name}";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo ${name} > $out" ];
    };
  };
}
`;

// Fixtures: <work>/fx/repo (git: main has two commits, `feature` stays at the first; flake.nix at
// the root and in sub/) and <work>/fx/plain (no git; flake.nix at the root and in sub/).
let FX = "";
let REV1 = "";
let REV2 = "";

/** Why Nix cannot be used, if it cannot: every test then fails with this message (never skips). */
let nixProblem: string | undefined;

function requireNix(): void {
  if (nixProblem) throw new Error(nixProblem);
}

beforeAll(() => {
  const probe = spawnSync("nix", ["--version"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    nixProblem =
      "`nix` is not installed or not runnable, so the flake ref parser cannot be cross-checked against Nix. " +
      "Install Debian's nix-bin (apt-get install nix-bin), see testbed.md. " +
      `(${probe.error?.message ?? probe.stderr})`;
    return;
  }
  nixVersion = probe.stdout.trim();

  work = mkdtempSync(join(tmpdir(), "flake-ref-nix-"));
  const conf =
    [
      "experimental-features = nix-command flakes",
      "sandbox = false",
      "substituters =",
      "flake-registry =",
      "accept-flake-config = false",
      "connect-timeout = 1",
      "download-attempts = 1",
      "tarball-ttl = 0",
      "warn-dirty = false",
    ].join("\n") + "\n";
  mkdirSync(join(work, "home"), { recursive: true });
  writeFileSync(join(work, "nix.conf"), conf);
  const closed = "http://127.0.0.1:9"; // the discard port: nothing listens, connections are refused
  env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: join(work, "home"),
    XDG_CONFIG_HOME: join(work, "home/.config"),
    XDG_CACHE_HOME: join(work, "home/.cache"),
    XDG_DATA_HOME: join(work, "home/.local/share"),
    NIX_CONF_DIR: work,
    NIX_USER_CONF_FILES: join(work, "nix.conf"),
    NIX_CONFIG: conf,
    http_proxy: closed,
    https_proxy: closed,
    all_proxy: closed,
    HTTP_PROXY: closed,
    HTTPS_PROXY: closed,
    ALL_PROXY: closed,
    no_proxy: "",
    NO_PROXY: "",
    GIT_SSH_COMMAND: "false",
    GIT_TERMINAL_PROMPT: "0",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
  };

  FX = join(work, "fx");
  for (const dir of ["repo/sub", "repo/deep/er", "plain/sub", "0rel"]) mkdirSync(join(FX, dir), { recursive: true });
  writeFileSync(join(FX, "repo/flake.nix"), FLAKE_NIX("root"));
  writeFileSync(join(FX, "repo/sub/flake.nix"), FLAKE_NIX("sub"));
  writeFileSync(join(FX, "repo/deep/er/flake.nix"), FLAKE_NIX("deeper"));
  writeFileSync(join(FX, "plain/flake.nix"), FLAKE_NIX("plain"));
  writeFileSync(join(FX, "plain/sub/flake.nix"), FLAKE_NIX("plain-sub"));
  writeFileSync(join(FX, "0rel/flake.nix"), FLAKE_NIX("0rel"));
  const repo = join(FX, "repo");
  git(repo, "init", "-q");
  git(repo, "add", "-A");
  git(repo, "commit", "-q", "-m", "first");
  REV1 = git(repo, "rev-parse", "HEAD");
  git(repo, "branch", "feature");
  writeFileSync(join(FX, "repo/flake.nix"), FLAKE_NIX("root-2"));
  git(repo, "commit", "-q", "-am", "second");
  REV2 = git(repo, "rev-parse", "HEAD");
}, 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// What Nix 2.8 records for a parsed ref (its `original` / registry attributes), predicted from
// our parse. Nix 2.8 keeps the query parameters it does not interpret inside the `url` of git,
// Mercurial and tarball inputs (sorted, percent-encoded), ignores them on github-like and registry
// refs, and normalises commit hashes of github-like and registry refs only.

function nixPercentEncode(s: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(s)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~!$&'()*+,;=:@]/.test(c) ? c : "%" + b.toString(16).padStart(2, "0");
  }
  return out;
}

function urlWithQuery(url: string, query: Record<string, string | undefined>): string {
  const entries = Object.entries(query)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return entries.length ? `${url}?${entries.map(([k, v]) => `${k}=${nixPercentEncode(v)}`).join("&")}` : url;
}

function compact(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

function predictedNixAttrs(ref: FlakeRef): Record<string, unknown> {
  switch (ref.type) {
    case "github":
    case "gitlab":
    case "sourcehut":
      return compact({ type: ref.type, owner: ref.owner, repo: ref.repo, ref: ref.ref, rev: ref.rev, host: ref.host, dir: ref.dir });
    case "git":
      return compact({
        type: "git",
        url: urlWithQuery(ref.url, { ...ref.params, dir: ref.dir }),
        ref: ref.ref,
        rev: ref.rev,
        shallow: ref.shallow,
        submodules: ref.submodules,
        dir: ref.dir,
      });
    case "mercurial":
      return compact({ type: "hg", url: urlWithQuery(ref.url, { ...ref.params, dir: ref.dir }), ref: ref.ref, rev: ref.rev, dir: ref.dir });
    case "tarball":
    case "file":
      return compact({
        type: ref.type,
        url: urlWithQuery(ref.url, { ...ref.params, dir: ref.dir, narHash: ref.narHash }),
        narHash: ref.narHash,
        dir: ref.dir,
      });
    case "path":
      return compact({
        type: "path",
        path: ref.path,
        rev: ref.rev,
        narHash: ref.narHash,
        revCount: ref.revCount,
        lastModified: ref.lastModified,
        dir: ref.dir,
      });
    case "indirect":
      return compact({ type: "indirect", id: ref.id, ref: ref.ref, rev: ref.rev, dir: ref.dir });
  }
}

/** Nix keeps a git/hg/path `rev` as written; we normalise it to lower-case hex. */
function normaliseNixAttrs(attrs: Record<string, unknown>): Record<string, unknown> {
  const out = { ...attrs };
  if (typeof out.rev === "string" && /^[0-9a-fA-F]{40}$/.test(out.rev)) out.rev = out.rev.toLowerCase();
  return out;
}

/** The git checkout containing `path`, as Nix looks for it (a parent with `.git`). */
function gitRootOf(path: string): string | undefined {
  for (let p = path; ; p = dirname(p)) {
    if (existsSync(join(p, ".git"))) return p;
    if (p === dirname(p)) return undefined;
  }
}

/**
 * What `nix flake metadata` (Nix 2.8, run in `cwd`) records as `original` for a bare path whose
 * directory holds a flake.nix: inside a git checkout a git+file input of the checkout with the
 * subdirectory as `dir` and the query's ref/rev; elsewhere a path input, where 2.8 drops `?dir=`.
 */
function predictedOriginalOfBarePath(ref: FlakeRef & { type: "path" }, cwd: string): Record<string, unknown> {
  const abs = resolve(cwd, ref.path);
  const root = gitRootOf(abs);
  if (!root) return { type: "path", path: abs };
  const sub = abs === root ? undefined : abs.slice(root.length + 1);
  const dir = sub ?? ref.dir;
  const rev = ref.params.rev;
  return compact({
    type: "git",
    url: urlWithQuery(`file://${root}`, { dir }),
    ref: ref.params.ref,
    rev: rev === undefined ? undefined : rev.toLowerCase(),
    dir,
  });
}

// ---------------------------------------------------------------------------------------------
// (a) local fixtures

interface Metadata {
  original: Record<string, unknown>;
  locked: Record<string, unknown>;
  url: string;
  description?: string;
}

async function metadata(ref: string, cwd: string): Promise<Metadata> {
  const r = await runNix(["flake", "metadata", "--json", "--no-write-lock-file", ref], cwd);
  if (r.code !== 0) throw new Error(`nix flake metadata ${ref} failed (${r.timedOut ? "timed out" : `exit ${r.code}`}):\n${r.stderr}`);
  return JSON.parse(r.stdout) as Metadata;
}

describe("flake refs to local fixtures, compared with `nix flake metadata`", () => {
  // [ref, cwd relative to the fixtures, flake description Nix must find]
  const cases: (() => [string, string, string])[] = [
    () => [`path:${FX}/repo`, ".", "root-2"],
    () => [`path:${FX}/repo/sub`, ".", "sub"],
    () => [`path:${FX}/plain`, ".", "plain"],
    () => [`path:repo/sub`, ".", "sub"],
    () => [`path:./plain`, ".", "plain"],
    () => [`git+file://${FX}/repo`, ".", "root-2"],
    () => [`git+file://${FX}/repo?dir=sub`, ".", "sub"],
    () => [`git+file://${FX}/repo?dir=deep/er`, ".", "deeper"],
    () => [`git+file://${FX}/repo?ref=feature`, ".", "root"],
    () => [`git+file://${FX}/repo?rev=${REV1}`, ".", "root"],
    () => [`git+file://${FX}/repo?rev=${REV1.toUpperCase()}`, ".", "root"],
    () => [`git+file://${FX}/repo?ref=main&rev=${REV2}&dir=sub`, ".", "sub"],
    () => [`git+file://${FX}/repo?ref=feature&dir=sub`, ".", "sub"],
    () => [`git+file:${FX}/repo`, ".", "root-2"],
    () => [`${FX}/repo`, ".", "root-2"],
    () => [`${FX}/repo/sub`, ".", "sub"],
    () => [`${FX}/repo?dir=sub`, ".", "sub"],
    () => [`${FX}/repo?ref=feature`, ".", "root"],
    () => [`${FX}/repo?rev=${REV1}`, ".", "root"],
    () => [`${FX}/plain`, ".", "plain"],
    () => [`${FX}/plain/sub`, ".", "plain-sub"],
    () => [`${FX}/plain?dir=sub`, ".", "plain"], // Nix 2.8 drops ?dir= of a bare non-git path
    () => [`./repo`, ".", "root-2"],
    () => [`./repo/deep/er`, ".", "deeper"],
    () => [`.`, "repo/sub", "sub"],
    () => [`..`, "repo/sub", "root-2"],
    () => [`./sub?ref=feature`, "repo", "sub"],
    () => [`0rel`, ".", "0rel"], // a relative path without ./ (not a registry name: ids start with a letter)
  ];

  it("agrees on original, locked and url for every form", async () => {
    requireNix();
    const resolved = cases.map((c) => c());
    const failures: string[] = [];
    await mapLimit(resolved, CONCURRENCY, async ([ref, cwdRel, description]) => {
      const cwd = resolve(FX, cwdRel);
      try {
        const ours = parseFlakeRef(ref);
        const nix = await metadata(ref, cwd);
        expect(nix.description, "Nix fetched a different flake").toBe(description);

        // original
        const predicted = ours.type === "path" && ours.form === "bare" ? predictedOriginalOfBarePath(ours, cwd) : predictedNixAttrs(ours);
        expect(normaliseNixAttrs(nix.original), "original").toStrictEqual(predicted);

        // Nix's locked `url` is a flake ref our parser must read, back to what Nix locked.
        const locked = parseFlakeRef(nix.url);
        expect(parseFlakeRef(formatFlakeRef(locked)), "round trip of Nix's url").toStrictEqual(locked);
        expect(locked.type).toBe(nix.locked.type);
        if (locked.type === "git") {
          // Nix 2.8 keeps a commit hash as written (even in upper case); we normalise it.
          expect(locked.rev).toBe(String(nix.locked.rev).toLowerCase());
          expect(locked.ref).toBe(nix.locked.ref);
          expect(locked.dir).toBe(nix.locked.dir);
          expect(urlWithQuery(locked.url, { dir: locked.dir })).toBe(nix.locked.url);
        } else if (locked.type === "path") {
          expect(locked.path).toBe(nix.locked.path);
          expect(locked.narHash).toBe(nix.locked.narHash);
          expect(locked.lastModified).toBe(nix.locked.lastModified);
        } else {
          throw new Error(`unexpected locked type ${locked.type}`);
        }

        // Pinning our parse to the locked commit makes Nix lock exactly the same source.
        if (ours.type === "git") {
          const pinned = formatFlakeRef(withRevision(ours, String(nix.locked.rev)));
          const again = await metadata(pinned, cwd);
          expect(again.locked.narHash, `pinned ${pinned}`).toBe(nix.locked.narHash);
          expect(again.locked.rev, `pinned ${pinned}`).toBe(String(nix.locked.rev).toLowerCase());
        }
      } catch (e) {
        failures.push(`${ref} (in ${cwdRel}): ${(e as Error).message}`);
      }
    });
    expect(failures, failures.join("\n\n")).toEqual([]);
    process.stderr.write(`flake ref local fixtures: ${resolved.length} refs, original/locked/url equal to nix flake metadata\n`);
  });

  it("agrees with Nix's refusals of local refs", async () => {
    requireNix();
    // Refused by Nix before fetching; our parser refuses them too.
    // (A fragment on a bare path is only reported once the path exists: Nix resolves it first.)
    const refused = [
      `path:${FX}/repo?dir=sub`,
      `path:${FX}/repo?ref=main`,
      `git+file://host${FX}/repo`,
      `path://host${FX}/repo`,
      `${FX}/plain#attr`,
      `./repo#packages.x86_64-linux.default`,
    ];
    const failures: string[] = [];
    await mapLimit(refused, CONCURRENCY, async (ref) => {
      const r = await runNix(["flake", "metadata", "--json", "--no-write-lock-file", ref], FX);
      if (classify(r).kind !== "parse-error") failures.push(`Nix did not refuse ${ref}: ${r.stderr}`);
      if (accepts(ref)) failures.push(`our parser accepts ${ref}`);
    });
    // An inconsistent ?dir= is only detectable on the file system, so Nix refuses what we accept.
    const r = await runNix(["flake", "metadata", "--json", `${FX}/repo/sub?dir=sub`], FX);
    expect(r.stderr).toMatch(/inconsistent 'dir' parameter/);
    expect(failures, failures.join("\n")).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// (b) refs that cannot be fetched offline

type Classification = { kind: "parse-error" | "fetch-attempt" | "unknown"; detail: string };

// Nix refused the reference itself.
const PARSE_ERRORS = [
  /is not a valid URL/,
  /input '.*' is unsupported/,
  /unexpected fragment/,
  /is not a commit hash/,
  /branch\/tag name/,
  /has wrong length for hash type/,
  /invalid base-(16|32|64) hash/,
  /should have type/,
  /is not SRI/,
  /invalid SRI hash/,
  /narHash must use SHA-256/,
  /contains multiple/,
  /contains both a commit hash/,
  /contains an invalid/,
  /URL '.*' is invalid/,
  /is not a valid flake ID/,
  /has unexpected authority/,
  /should not have an authority/,
  /has unsupported parameter/,
  /has invalid parameter/,
  /is not an absolute path/,
  /inconsistent 'dir' parameter/,
  /cannot parse/,
  /invalid flake reference/,
];
// Nix parsed the reference and then tried to fetch or resolve it.
const FETCH_ATTEMPTS = [
  /unable to download/,
  /program 'git' failed/,
  /hg failed/,
  /executing 'hg'/,
  /Couldn't connect/,
  /getting status of/,
  /cannot find flake/,
  /does not contain a 'flake\.nix'/,
  /is not a flake/,
];

function classify(r: NixResult): Classification {
  if (r.timedOut) return { kind: "fetch-attempt", detail: "timed out while fetching" };
  if (r.code === 0) return { kind: "fetch-attempt", detail: "succeeded" };
  // eslint-disable-next-line no-control-regex
  const text = r.stderr.replace(/\x1b\[[0-9;]*m/g, "");
  const last =
    text
      .split("\n")
      .filter((l) => l.startsWith("error:"))
      .pop() ?? text.trim();
  if (PARSE_ERRORS.some((re) => re.test(last))) return { kind: "parse-error", detail: last };
  if (FETCH_ATTEMPTS.some((re) => re.test(text))) return { kind: "fetch-attempt", detail: last };
  return { kind: "unknown", detail: text };
}

function accepts(ref: string): boolean {
  try {
    parseFlakeRef(ref);
    return true;
  } catch (e) {
    if (e instanceof FlakeRefError) return false;
    throw e;
  }
}

const R = "0123456789abcdef0123456789abcdef01234567";
const NAR = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
const H = "127.0.0.1:9";

const REMOTE_REFS: string[] = [
  // github / gitlab / sourcehut
  "github:acme/shop",
  "github:acme/shop/main",
  "github:acme/shop/feature/x",
  "github:acme/shop/v1.2.3",
  `github:acme/shop/${R}`,
  `github:acme/shop/${R.toUpperCase()}`,
  "github:acme/shop?ref=main&dir=nix/web",
  `github:acme/shop?rev=${R}`,
  "github:acme/shop?rev=0123456789abcdfghijklmnpqrsvwxyz",
  "github:acme/shop?rev=qqqqqqqqqqqqqqqqqqqqqqqqqqo=",
  `github:acme/shop?rev=sha1:${R}`,
  "github:acme/shop?rev=sha256:" + "a".repeat(64),
  "github:acme/shop?host=ghe.example.com",
  "github:acme/shop?host=my-ghe.example.com",
  "github:acme/shop?host=ghe.example.com:8443",
  `github:acme/shop?narHash=${NAR}&foo=1&dir=`,
  "github:acme/shop?ref=main&ref=dev",
  "github:acme//shop/",
  "github:/acme/shop",
  "github://acme/shop",
  "github:acme",
  "github:acme/shop/x@y",
  "github:acme/shop/-x",
  "github:acme/shop?ref=-x",
  "github:acme/shop?ref=a b",
  "github:acme/shop/main?ref=dev",
  `github:acme/shop/${R}?rev=${R}`,
  `github:acme/shop?rev=${R}&ref=main`,
  "github:acme/shop?rev=abc",
  "github:acme/shop#web",
  "github:acme/shop#",
  "github:acme/shop?dir=%zz",
  "github:acme/shop|x",
  "GITHUB:acme/shop",
  "bitbucket:acme/shop",
  "gitlab:acme/shop/main",
  "gitlab:group%2Fsub/shop",
  "gitlab:group/sub/shop",
  "gitlab:acme/shop?host=gitlab.example.com",
  "sourcehut:~acme/shop",
  "sourcehut:~acme/shop/main?host=git.example.org",
  `sourcehut:~acme/shop/${R}`,
  // git
  `git+https://${H}/shop.git`,
  `git+https://${H}/shop?ref=main&dir=web`,
  `git+https://${H}/shop?ref=refs/heads/main&rev=${R}`,
  `git+https://${H}/shop?rev=${R.toUpperCase()}`,
  `git+https://${H}/shop?shallow=1&submodules=1&allRefs=1&dir=a%20b`,
  `git+https://${H}/shop?narHash=bad&lastModified=x&host=y`,
  `git+https://${H}/shop?ref=x@y`,
  `git+https://${H}/shop?ref=-x`,
  `git+https://${H}/shop?ref=a..b`,
  `git+https://${H}/shop?ref=x.lock`,
  `git+https://${H}/shop?ref=`,
  `git+https://${H}/shop?rev=bad`,
  `git+https://${H}/shop?rev=${"g".repeat(40)}`,
  `git+https://${H}/shop#x`,
  `git+https://user:pw@${H}/shop`,
  `git+https:/${H}/shop`,
  `git+https://[::1]:9/shop`,
  `git+http://${H}/shop.git`,
  `git+ssh://git@${H}/shop`,
  `git+ssh://git@example.com/shop`,
  `git+ssh://git@example.com:shop`,
  `git://${H}/shop`,
  `git+git://${H}/shop`,
  `git+file:///nonexistent/shop`,
  `git+file://host/nonexistent/shop`,
  // mercurial
  `hg+https://${H}/shop?ref=default`,
  `hg+http://${H}/shop?rev=${R}`,
  `hg+https://${H}/shop?ref=`,
  `hg://${H}/shop`,
  // archives and files
  `https://${H}/shop.tar.gz`,
  `https://${H}/shop.zip?dir=web&token=x`,
  `https://${H}/shop.tgz?narHash=${NAR}`,
  `https://${H}/shop.tar.xz?narHash=sha256-short`,
  `https://${H}/shop.tar.bz2?narHash=sha512-${"A".repeat(43)}=`,
  `http://${H}/shop.tar.zst`,
  `https://${H}/shop.tar`,
  `https://${H}/shop.TAR.GZ`,
  `https://${H}/shop`,
  `https://${H}/shop.tar.gz/`,
  `tarball+https://${H}/archive/main`,
  `tarball+http://${H}/shop.tar.gz`,
  `file+https://${H}/shop.tar.gz`,
  `file:///nonexistent.tar.gz`,
  `file://host/nonexistent.tar.gz`,
  `tarball+file:///nonexistent.tar.gz`,
  `ftp://${H}/shop.tar.gz`,
  // path: URLs
  "path:/nonexistent/shop",
  "path:///nonexistent/shop",
  "path:nonexistent",
  `path:/nonexistent?rev=${R}&narHash=${NAR}&revCount=%2B5&lastModified=7`,
  "path:/nonexistent?dir=web",
  "path:/nonexistent?ref=main",
  "path:/nonexistent?revCount=-1",
  "path:/nonexistent?narHash=bad",
  "path://host/nonexistent",
  // bare paths (relative to an empty directory)
  "./nonexistent",
  "../nonexistent",
  "/nonexistent",
  "nixpkgs/-x",
  "1nixpkgs",
  "nixpkgs?dir=x",
  "/",
  "//nonexistent",
  "/a//b",
  // registry refs
  "nixpkgs",
  "nixpkgs/nixos-24.05",
  `nixpkgs/${R}`,
  `nixpkgs/main/${R}`,
  "nixpkgs/main/",
  "nixpkgs/a/b",
  "nixpkgs/a/b/c",
  "nixpkgs/a@b",
  "nixpkgs#hello",
  "flake:nixpkgs",
  "flake:nixpkgs/main?dir=lib&ref=ignored",
  "flake:1x",
  "flake://nixpkgs",
];

/**
 * Where our parser and Nix 2.8 deliberately disagree. `ours` says which side accepts the ref.
 * If Nix (or the parser) changes, the test names the entry to update.
 */
const KNOWN_DIFFERENCES: Record<string, { ours: "accepts" | "refuses"; why: string }> = {
  [`https://${H}/shop`]: { ours: "accepts", why: "newer Nix fetches a plain non-archive URL as a `file` input; 2.8 has no file fetcher" },
  [`https://${H}/shop.TAR.GZ`]: { ours: "accepts", why: "no archive extension (case-sensitive), so a `file` input as in newer Nix" },
  [`https://${H}/shop.tar.gz/`]: { ours: "accepts", why: "no archive extension, so a `file` input as in newer Nix" },
  [`tarball+https://${H}/archive/main`]: { ours: "accepts", why: "the tarball+ prefix comes from newer Nix; 2.8 does not know it" },
  [`tarball+http://${H}/shop.tar.gz`]: { ours: "accepts", why: "the tarball+ prefix comes from newer Nix" },
  [`file+https://${H}/shop.tar.gz`]: { ours: "accepts", why: "the file+ prefix comes from newer Nix" },
  [`tarball+file:///nonexistent.tar.gz`]: { ours: "accepts", why: "the tarball+ prefix comes from newer Nix" },
};

describe("refs that cannot be fetched offline, compared with Nix's parser", () => {
  it("accepts exactly what Nix parses (apart from KNOWN_DIFFERENCES)", async () => {
    requireNix();
    const empty = join(work, "empty-cwd");
    mkdirSync(empty, { recursive: true });
    const results = await mapLimit(REMOTE_REFS, CONCURRENCY, async (ref) => ({
      ref,
      nix: classify(await runNix(["flake", "metadata", "--json", "--no-write-lock-file", ref], empty)),
      ours: accepts(ref),
    }));
    const problems: string[] = [];
    for (const { ref, nix, ours } of results) {
      if (nix.kind === "unknown") {
        problems.push(`cannot tell whether Nix parsed ${JSON.stringify(ref)}; add its message to PARSE_ERRORS or FETCH_ATTEMPTS:\n${nix.detail}`);
        continue;
      }
      const nixParses = nix.kind === "fetch-attempt";
      const known = KNOWN_DIFFERENCES[ref];
      if (known) {
        const expectOurs = known.ours === "accepts";
        if (ours !== expectOurs || nixParses === expectOurs) {
          problems.push(`KNOWN_DIFFERENCES entry for ${JSON.stringify(ref)} no longer holds (ours accepts: ${ours}; Nix: ${nix.detail})`);
        }
        continue;
      }
      if (ours !== nixParses) {
        problems.push(
          `${JSON.stringify(ref)}: Nix ${nixParses ? "parses it" : "refuses it"} (${nix.detail}) but our parser ${ours ? "accepts" : "refuses"} it`,
        );
      }
    }
    expect(problems, `${nixVersion}:\n` + problems.join("\n")).toEqual([]);
    // Both outcomes must actually occur, or the classification is broken.
    expect(results.filter((r) => r.nix.kind === "parse-error").length).toBeGreaterThan(20);
    expect(results.filter((r) => r.nix.kind === "fetch-attempt").length).toBeGreaterThan(40);
    // The figure docs/reliability.md (row 20) records.
    process.stderr.write(
      `flake ref differential (${nixVersion}): ${results.length} refs; Nix parses ${results.filter((r) => r.nix.kind === "fetch-attempt").length}, ` +
        `refuses ${results.filter((r) => r.nix.kind === "parse-error").length}; known differences ${Object.keys(KNOWN_DIFFERENCES).length}; other disagreements ${problems.length}\n`,
    );
  });

  it("gives the attributes Nix parses (checked with `nix registry add`, which does not fetch)", async () => {
    requireNix();
    // Bare paths are left out: `nix registry add` resolves them without a base directory.
    const candidates = REMOTE_REFS.filter((ref) => {
      if (KNOWN_DIFFERENCES[ref] || !accepts(ref)) return false;
      const r = parseFlakeRef(ref);
      return !(r.type === "path" && r.form === "bare");
    });
    const problems: string[] = [];
    await mapLimit(candidates, CONCURRENCY, async (ref) => {
      const registry = join(work, `registry-${Math.random().toString(36).slice(2)}.json`);
      const r = await runNix(["registry", "add", "--registry", registry, "x", ref], work);
      if (r.code !== 0) {
        problems.push(`nix registry add refused ${JSON.stringify(ref)}: ${r.stderr.trim()}`);
        return;
      }
      const file = JSON.parse(readFileSync(registry, "utf8")) as { flakes: { to: Record<string, unknown> }[] };
      const nixAttrs = normaliseNixAttrs(file.flakes[0]!.to);
      const predicted = predictedNixAttrs(parseFlakeRef(ref));
      try {
        expect(nixAttrs).toStrictEqual(predicted);
      } catch {
        problems.push(`${JSON.stringify(ref)}: Nix parsed ${JSON.stringify(nixAttrs)}, we predict ${JSON.stringify(predicted)}`);
      }
    });
    expect(problems, problems.join("\n")).toEqual([]);
    expect(candidates.length).toBeGreaterThan(40);
    process.stderr.write(`flake ref attributes (nix registry add): ${candidates.length} refs, ${problems.length} differ\n`);
  });
});
