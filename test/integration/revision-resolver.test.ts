// Revision polling against the test bed's real smart-HTTP git server (git http-backend): branches,
// HEAD, tags, a new commit, clear errors; and one HTTP request per resolve, counted by a reverse
// proxy between the resolver and the server. `git ls-remote` is the independent client that says
// what the right answer is.
import { createServer, request, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveRevision, RevisionResolveError, type ResolvedRevision } from "../../src/flake/revision-resolver.ts";
import { createGitRepo, minimalFlake, type GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";
import { run } from "../support/process.ts";

const bed = testbed();
/** The test git server is on loopback, which the poller refuses unless the policy allows it. */
const LOOPBACK = ["127.0.0.0/8"];

interface CountingProxy {
  baseUrl: string;
  requests: { method: string; url: string; headers: IncomingHttpHeaders; status: number }[];
  close(): Promise<void>;
}

/** An HTTP reverse proxy to the git server that records every request it forwards. */
async function startCountingProxy(target: string): Promise<CountingProxy> {
  const upstream = new URL(target);
  const requests: CountingProxy["requests"] = [];
  const server: Server = createServer((req, res) => {
    const entry = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, status: 0 };
    requests.push(entry);
    const up = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (upRes) => {
        entry.status = upRes.statusCode ?? 0;
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** What `git ls-remote` (the reference client, straight to the server) says `pattern` points to. */
async function lsRemote(url: string, pattern: string): Promise<Map<string, string>> {
  const { stdout } = await run("git", ["ls-remote", "--symref", url, pattern], {
    env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", GIT_TERMINAL_PROMPT: "0" },
  });
  const out = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const [oid, name] = line.split("\t");
    if (oid && name) out.set(name, oid);
  }
  return out;
}

let proxy: CountingProxy;
beforeAll(async () => {
  proxy = await startCountingProxy(bed.git.baseUrl);
});
afterAll(async () => {
  await proxy?.close();
});

/** Resolves through the proxy and checks that it took exactly one HTTP request. */
async function resolveOnce(repo: GitRepo, query = ""): Promise<ResolvedRevision> {
  const before = proxy.requests.length;
  const result = await resolveRevision(`git+${proxy.baseUrl}/${repo.name}.git${query}`, { timeoutMs: 10_000, allowedAddressRanges: LOOPBACK });
  const made = proxy.requests.slice(before);
  expect(made.map((r) => `${r.method} ${r.url} ${r.status}`)).toEqual([`GET /${repo.name}.git/info/refs?service=git-upload-pack 200`]);
  expect(made[0]!.headers["git-protocol"]).toBeUndefined();
  if ("unpollable" in result) throw new Error(`unexpected unpollable: ${result.reason}`);
  return result;
}

async function resolveError(url: string): Promise<RevisionResolveError> {
  try {
    await resolveRevision(url, { timeoutMs: 10_000, allowedAddressRanges: LOOPBACK });
  } catch (e) {
    expect(e).toBeInstanceOf(RevisionResolveError);
    return e as RevisionResolveError;
  }
  throw new Error(`expected resolving ${url} to fail`);
}

describe("resolveRevision against git http-backend", () => {
  it("resolves HEAD and the branch of a 'master' repository, and sees a new commit", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "one" }), { prefix: "resolve-master" });
    const first = repo.rev;
    const remote = await lsRemote(repo.httpUrl, "HEAD");
    expect(remote.get("HEAD")).toBe(first);

    expect(await resolveOnce(repo)).toEqual({ rev: first, refName: "refs/heads/master" });
    expect(await resolveOnce(repo, "?ref=master")).toEqual({ rev: first, refName: "refs/heads/master" });
    expect(await resolveOnce(repo, "?ref=refs/heads/master")).toEqual({ rev: first, refName: "refs/heads/master" });

    // Polling again without a change: same answer, still one request.
    expect((await resolveOnce(repo, "?ref=master")).rev).toBe(first);

    const second = await repo.commit(minimalFlake({ marker: "two" }), "second");
    expect(second).not.toBe(first);
    expect((await lsRemote(repo.httpUrl, "refs/heads/master")).get("refs/heads/master")).toBe(second);
    expect(await resolveOnce(repo)).toEqual({ rev: second, refName: "refs/heads/master" });
    expect(await resolveOnce(repo, "?ref=master")).toEqual({ rev: second, refName: "refs/heads/master" });
  });

  it("resolves HEAD of a 'main' repository to main, and other branches", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "main" }), { prefix: "resolve-main", branch: "main" });
    expect(await resolveOnce(repo)).toEqual({ rev: repo.rev, refName: "refs/heads/main" });
    expect(await resolveOnce(repo, "?ref=main")).toEqual({ rev: repo.rev, refName: "refs/heads/main" });

    await repo.git(["checkout", "--quiet", "-b", "feature"]);
    await repo.git(["commit", "--quiet", "--allow-empty", "--no-gpg-sign", "-m", "feature work"]);
    await repo.git(["push", "--quiet", "origin", "feature"]);
    const feature = (await repo.git(["rev-parse", "HEAD"])).trim();
    expect(feature).not.toBe(repo.rev);
    expect(await resolveOnce(repo, "?ref=feature")).toEqual({ rev: feature, refName: "refs/heads/feature" });
    // HEAD on the server still points to main.
    expect(await resolveOnce(repo)).toEqual({ rev: repo.rev, refName: "refs/heads/main" });
  });

  it("resolves lightweight and annotated tags to their commits", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "tags" }), { prefix: "resolve-tags" });
    const tagged = repo.rev;
    await repo.git(["tag", "v1.0"]);
    await repo.git(["tag", "--annotate", "--no-sign", "-m", "release 2", "v2.0"]);
    await repo.git(["push", "--quiet", "origin", "refs/tags/v1.0", "refs/tags/v2.0"]);
    await repo.commit({ "later.txt": "after the tags\n" });

    const remote = await lsRemote(repo.httpUrl, "refs/tags/*");
    const tagObject = remote.get("refs/tags/v2.0");
    expect(remote.get("refs/tags/v1.0")).toBe(tagged);
    expect(remote.get("refs/tags/v2.0^{}")).toBe(tagged);
    expect(tagObject).not.toBe(tagged); // an annotated tag is an object of its own

    expect(await resolveOnce(repo, "?ref=v1.0")).toEqual({ rev: tagged, refName: "refs/tags/v1.0" });
    expect(await resolveOnce(repo, "?ref=v2.0")).toEqual({ rev: tagged, refName: "refs/tags/v2.0" });
    expect(await resolveOnce(repo, "?ref=refs/tags/v2.0")).toEqual({ rev: tagged, refName: "refs/tags/v2.0" });
    expect((await resolveOnce(repo)).rev).toBe(repo.rev);
  });

  it("needs no request for a pinned revision", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "pinned" }), { prefix: "resolve-pinned" });
    const before = proxy.requests.length;
    const pinned = await resolveRevision(`git+${proxy.baseUrl}/${repo.name}.git?ref=master&rev=${repo.rev}`);
    expect(pinned).toEqual({ rev: repo.rev, refName: "refs/heads/master", pinned: true });
    expect(proxy.requests.length).toBe(before);
  });

  it("a missing ref names what the repository has", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "missing" }), { prefix: "resolve-missing" });
    await repo.git(["tag", "v1"]);
    await repo.git(["push", "--quiet", "origin", "refs/tags/v1"]);
    const before = proxy.requests.length;
    const e = await resolveError(`git+${proxy.baseUrl}/${repo.name}.git?ref=mian`);
    expect(proxy.requests.length - before).toBe(1);
    expect(e.kind).toBe("ref-not-found");
    expect(e.message).toBe(`ref "mian" not found in ${proxy.baseUrl}/${repo.name}.git; the repository has branches master and tags v1`);
    expect(e.transient).toBe(false);
  });

  it("a missing repository is a clear 404", async () => {
    const e = await resolveError(`git+${bed.git.baseUrl}/no-such-repo-${Date.now()}.git`);
    expect(e.kind).toBe("repository-not-found");
    expect(e.status).toBe(404);
    expect(e.message).toMatch(/^repository http:\/\/127\.0\.0\.1:\d+\/no-such-repo-\d+\.git not found \(HTTP 404/);
  });

  it("an unreachable server is a transient network error", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const e = await resolveError(`git+http://127.0.0.1:${port}/r.git`);
    expect(e.kind).toBe("network");
    expect(e.transient).toBe(true);
    expect(e.message).toMatch(/ECONNREFUSED/);
  });
});

describe("resolveRevision refuses denied addresses (SSRF, issue 12 item 6)", () => {
  /** A server on 127.0.0.2 that redirects every request to `target` + the path. */
  async function startRedirector(target: string): Promise<{ baseUrl: string; hits: number; close(): Promise<void> }> {
    const state = { hits: 0 };
    const server = createServer((req, res) => {
      state.hits++;
      res.writeHead(302, { location: `${target}${req.url ?? "/"}` }).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.2", resolve));
    const { port } = server.address() as AddressInfo;
    return {
      baseUrl: `http://127.0.0.2:${port}`,
      get hits() {
        return state.hits;
      },
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }

  async function denial(ref: string, allowedAddressRanges?: string[]): Promise<RevisionResolveError> {
    try {
      await resolveRevision(ref, { timeoutMs: 10_000, ...(allowedAddressRanges ? { allowedAddressRanges } : {}) });
    } catch (e) {
      expect(e).toBeInstanceOf(RevisionResolveError);
      return e as RevisionResolveError;
    }
    throw new Error(`expected resolving ${ref} to be refused`);
  }

  it("never connects to a loopback git server by default, by address, by another spelling or by name", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "ssrf" }), { prefix: "resolve-ssrf" });
    const port = new URL(proxy.baseUrl).port;
    const before = proxy.requests.length;
    for (const host of ["127.0.0.1", "2130706433", "0x7f.1", "localhost"]) {
      const e = await denial(`git+http://${host}:${port}/${repo.name}.git`);
      expect(e.kind, host).toBe("address-denied");
      expect(e.transient).toBe(false);
      expect(e.message).toMatch(/loopback range \((?:127\.0\.0\.0\/8|::1\/128)\).*flakeRefPolicy\.allowedAddressRanges/);
    }
    expect(proxy.requests.length - before).toBe(0);
    // The same repository, allowed by the operator config: one request, the right commit.
    expect(await resolveOnce(repo)).toMatchObject({ rev: repo.rev });
  });

  it("never follows a redirect from an allowed host to a denied one", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "ssrf-redirect" }), { prefix: "resolve-ssrf-redirect" });
    const port = new URL(proxy.baseUrl).port;
    for (const target of [`http://127.0.0.1:${port}`, `http://localhost:${port}`, `http://2130706433:${port}`]) {
      const redirector = await startRedirector(target);
      try {
        const before = proxy.requests.length;
        // Only the redirector's own address is allowed.
        const e = await denial(`git+${redirector.baseUrl}/${repo.name}.git`, ["127.0.0.2/32"]);
        expect(redirector.hits).toBe(1);
        expect(proxy.requests.length - before, target).toBe(0);
        expect(e.kind).toBe("address-denied");
        expect(e.message).toContain(`(redirected from ${redirector.baseUrl}/${repo.name}.git/info/refs?service=git-upload-pack)`);
        expect(e.message).toMatch(/loopback range/);
      } finally {
        await redirector.close();
      }
    }
  });
});
