// Git repositories served by the test bed's smart-HTTP git server: a bare repo under the server
// root and a working clone; files are committed with a fixed author, committer and dates (so the
// same content sequence gives the same commit hashes) and pushed over HTTP.
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { run } from "./process.ts";
import type { TestBed } from "./testbed-types.ts";

export interface GitRepo {
  name: string;
  /** `git+http://127.0.0.1:PORT/<name>.git`: a flake ref (add `?ref=`/`?rev=` as needed; a branch other than master needs `?ref=`). */
  flakeUrl: string;
  /** `http://127.0.0.1:PORT/<name>.git`: for git clone. */
  httpUrl: string;
  /** The bare repository on disk (under the server root). */
  bareDir: string;
  /** The working clone the commits are made in. */
  workDir: string;
  branch: string;
  /** Hash of the last pushed commit. */
  rev: string;
  /** Writes files (null deletes), commits everything, pushes; returns the new commit hash. */
  commit(files: Record<string, string | null>, message?: string): Promise<string>;
  /** Runs git in the working clone with the fixture's deterministic environment. */
  git(args: string[]): Promise<string>;
}

/** 2024-01-01T00:00:00Z; commit n of a repo is dated n minutes later. */
const baseEpoch = 1_704_067_200;

function gitEnv(n: number): NodeJS.ProcessEnv {
  const date = `@${baseEpoch + 60 * n} +0000`;
  return {
    ...process.env,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_TERMINAL_PROMPT: "0",
    GIT_AUTHOR_NAME: "Test Bed",
    GIT_AUTHOR_EMAIL: "testbed@niximage.io",
    GIT_AUTHOR_DATE: date,
    GIT_COMMITTER_NAME: "Test Bed",
    GIT_COMMITTER_EMAIL: "testbed@niximage.io",
    GIT_COMMITTER_DATE: date,
  };
}

async function testbedFromVitest(): Promise<TestBed> {
  const { testbed } = await import("./kube.ts");
  return testbed();
}

/**
 * Creates `<name>.git` (unique name from `prefix`) on the git server, commits `files` as the
 * first commit and pushes it. Pass `bed` outside vitest workers (e.g. benches).
 */
export async function createGitRepo(
  files: Record<string, string | null>,
  opts: { prefix?: string; name?: string; branch?: string; message?: string; bed?: TestBed } = {},
): Promise<GitRepo> {
  const bed = opts.bed ?? (await testbedFromVitest());
  const name = opts.name ?? `${opts.prefix ?? "repo"}-${randomBytes(4).toString("hex")}`;
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`invalid repository name ${JSON.stringify(name)}`);
  // Nix 2.8 fetches `master` from a remote git repo when the ref has no `?ref=` (it does not ask
  // the server for HEAD); newer Nix follows HEAD. "master" works with both.
  const branch = opts.branch ?? "master";
  const bareDir = join(bed.git.root, `${name}.git`);
  const workDir = join(bed.tmpDir, "git-work", name);
  const httpUrl = `${bed.git.baseUrl}/${name}.git`;
  let n = 0;
  const git = async (args: string[], cwd = workDir) => (await run("git", args, { cwd, env: gitEnv(n) })).stdout;

  await mkdir(workDir, { recursive: true });
  await git(["init", "--quiet", "--bare", `--initial-branch=${branch}`, bareDir], bed.git.root);
  await git(["init", "--quiet", `--initial-branch=${branch}`]);
  await git(["remote", "add", "origin", httpUrl]);

  const repo: GitRepo = {
    name,
    flakeUrl: `git+${httpUrl}`,
    httpUrl,
    bareDir,
    workDir,
    branch,
    rev: "",
    git: (args) => git(args),
    commit: async (changes, message) => {
      for (const [path, content] of Object.entries(changes)) {
        const file = join(workDir, path);
        if (content === null) await rm(file, { force: true });
        else {
          await mkdir(dirname(file), { recursive: true });
          await writeFile(file, content);
        }
      }
      await git(["add", "--all"]);
      await git(["commit", "--quiet", "--allow-empty", "--no-gpg-sign", "-m", message ?? `commit ${n}`]);
      await git(["push", "--quiet", "origin", `HEAD:refs/heads/${branch}`]);
      repo.rev = (await git(["rev-parse", "HEAD"])).trim();
      n++;
      return repo.rev;
    },
  };
  await repo.commit(files, opts.message ?? "initial commit");
  return repo;
}

/**
 * A flake that needs no nixpkgs: `packages.<system>.<attribute>` is a derivation built by
 * /bin/sh (works offline with `sandbox = false`). `marker` changes the output (and its hash).
 * Includes an empty flake.lock so Nix never tries to write one.
 */
export function minimalFlake(opts: { marker?: string; system?: string; attribute?: string; script?: string } = {}): Record<string, string> {
  const system = opts.system ?? "x86_64-linux";
  const attribute = opts.attribute ?? "default";
  const marker = opts.marker ?? "hello";
  const script = opts.script ?? `echo ${marker} > $out`;
  const flake = `{
  description = "test-bed flake ${marker}";
  outputs = { self }: {
    packages.${system}.${attribute} = derivation {
      name = "testbed-${attribute}";
      system = "${system}";
      builder = "/bin/sh";
      args = [ "-c" ${JSON.stringify(script)} ];
    };
  };
}
`;
  return {
    "flake.nix": flake,
    "flake.lock": JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }, null, 2) + "\n",
  };
}
