// Flake repositories the e2e cluster's builder pods can fetch: the test bed's smart-HTTP git
// server (git http-backend, on 127.0.0.1) plus a TCP forwarder on the node IP, the address pods
// reach the host at. Flake refs use the node-IP URL; the host pushes commits through the same URL.
import { cp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { startGitServer } from "../../support/git-server.ts";
import { run } from "../../support/process.ts";

export interface PodGitServer {
  /** http://<nodeIp>:<port>: reachable from pods and from the host. */
  baseUrl: string;
  root: string;
  stop(): Promise<void>;
}

export async function startPodGitServer(opts: {
  address: string;
  root: string;
  logFile: string;
  basicAuth?: { user: string; password: string };
}): Promise<PodGitServer> {
  const git = await startGitServer({ root: opts.root, logFile: opts.logFile, ...(opts.basicAuth ? { basicAuth: opts.basicAuth } : {}) });
  const target = new URL(git.baseUrl);
  const open = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
    open.add(client).add(upstream);
    const done = () => {
      open.delete(client);
      open.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on("error", done);
      s.on("close", done);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, opts.address, () => {
      const a = server.address();
      resolve(typeof a === "object" && a ? a.port : 0);
    });
  });
  return {
    baseUrl: `http://${opts.address}:${port}`,
    root: opts.root,
    stop: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await git.stop();
    },
  };
}

export interface FlakeRepo {
  name: string;
  /** git+http://<nodeIp>:<port>/<name>.git */
  flakeUrl: string;
  workDir: string;
  rev: string;
  /** Writes files (null deletes), commits and pushes; returns the new commit hash. */
  commit(files: Record<string, string | null>, message: string): Promise<string>;
  read(path: string): Promise<string>;
}

const baseEpoch = 1_704_067_200;

/** A bare repo on the server seeded with the files of `fixtureDir` (first commit pushed). */
export async function createFlakeRepo(server: PodGitServer, name: string, fixtureDir: string, workRoot: string): Promise<FlakeRepo> {
  const bare = join(server.root, `${name}.git`);
  const workDir = join(workRoot, name);
  let n = 0;
  const env = () => {
    const date = `@${baseEpoch + 60 * n} +0000`;
    return {
      ...process.env,
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_TERMINAL_PROMPT: "0",
      GIT_AUTHOR_NAME: "e2e",
      GIT_AUTHOR_EMAIL: "e2e@niximage.io",
      GIT_AUTHOR_DATE: date,
      GIT_COMMITTER_NAME: "e2e",
      GIT_COMMITTER_EMAIL: "e2e@niximage.io",
      GIT_COMMITTER_DATE: date,
    };
  };
  const git = async (args: string[], cwd = workDir) => (await run("git", args, { cwd, env: env() })).stdout;
  await rm(workDir, { recursive: true, force: true });
  await mkdir(workDir, { recursive: true });
  await git(["init", "--quiet", "--bare", "--initial-branch=master", bare], server.root);
  await cp(fixtureDir, workDir, { recursive: true });
  await git(["init", "--quiet", "--initial-branch=master"]);
  await git(["remote", "add", "origin", `${server.baseUrl}/${name}.git`]);
  const repo: FlakeRepo = {
    name,
    flakeUrl: `git+${server.baseUrl}/${name}.git`,
    workDir,
    rev: "",
    read: (path) => readFile(join(workDir, path), "utf8"),
    commit: async (files, message) => {
      for (const [path, content] of Object.entries(files)) {
        const file = join(workDir, path);
        if (content === null) await rm(file, { force: true });
        else {
          await mkdir(dirname(file), { recursive: true });
          await writeFile(file, content);
        }
      }
      await git(["add", "--all"]);
      await git(["commit", "--quiet", "--allow-empty", "--no-gpg-sign", "-m", message]);
      await git(["push", "--quiet", "origin", "HEAD:refs/heads/master"]);
      repo.rev = (await git(["rev-parse", "HEAD"])).trim();
      n++;
      return repo.rev;
    },
  };
  await repo.commit({}, "initial commit");
  return repo;
}
