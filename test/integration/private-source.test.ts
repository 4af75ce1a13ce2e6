// Private flake sources (issue 13 item 2): the fetch step alone holds the credential (a netrc for a
// git server that requires basic auth) and fetches the flake and its private input into the store;
// the build step then builds with no credential at all (its own HOME and fetcher cache, no netrc)
// from what the fetch step fetched. The credential appears in no output of either step, no step
// file, no termination message.
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildResultSchema, fetchResultSchema } from "../../src/builder/step-files.ts";
import { testbed } from "../support/kube.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import { startGitServer, type GitServer } from "../support/git-server.ts";
import { runCli } from "../support/builder-fixtures.ts";
import { run } from "../support/process.ts";
import { makeCa, makeLeaf } from "../support/pki.ts";
import { startSshGitServer, type SshGitServer } from "../support/ssh-git-server.ts";

const bed = testbed();
const user = "ci-bot";
const password = `pw-${randomBytes(12).toString("hex")}`;
let server: GitServer;
let dir = "";
let credentials = "";
let topUrl = "";
let dep: GitRepo;
let top: GitRepo;

const depFlake = `{ outputs = { self }: { message = "hello from a private input"; }; }\n`;
const topFlake = (depUrl: string) => `{
  inputs.dep.url = "${depUrl}";
  outputs = { self, dep }: {
    packages.x86_64-linux.default = derivation {
      name = "private-app"; system = "x86_64-linux"; builder = "/bin/sh";
      args = [ "-c" "echo '\${dep.message} at \${toString self.revCount}' > $out" ];
    };
  };
}
`;

/** Serves a copy of a test-bed repo on the private server (the open server keeps the original). */
async function publishPrivately(repo: GitRepo, on: GitServer = server): Promise<string> {
  const target = join(on.root, `${repo.name}.git`);
  await run("git", ["clone", "--quiet", "--mirror", repo.bareDir, target]).catch(async () => {
    await run("git", ["--git-dir", target, "fetch", "--quiet", repo.bareDir, "+refs/*:refs/*"]);
  });
  return `git+${on.baseUrl}/${repo.name}.git`;
}

/** A fresh HOME and fetcher cache: nothing one step leaves behind is seen by the next. */
async function stepEnv(name: string): Promise<Record<string, string>> {
  const home = join(dir, `${name}-home-${randomBytes(3).toString("hex")}`);
  await mkdir(join(home, "cache"), { recursive: true });
  return { HOME: home, XDG_CACHE_HOME: join(home, "cache"), GIT_TERMINAL_PROMPT: "0" };
}

beforeAll(async () => {
  dir = join(bed.tmpDir, `private-source-${randomBytes(3).toString("hex")}`);
  await mkdir(dir, { recursive: true });
  server = await startGitServer({ root: join(dir, "private-git"), logFile: join(dir, "private-git.log"), basicAuth: { user, password } });
  credentials = join(dir, "credentials");
  await mkdir(credentials, { recursive: true });
  await writeFile(join(credentials, "netrc"), `machine 127.0.0.1 login ${user} password ${password}\n`, { mode: 0o600 });

  dep = await createGitRepo({ "flake.nix": depFlake }, { prefix: "private-dep" });
  const depUrl = await publishPrivately(dep);
  top = await createGitRepo({ "flake.nix": topFlake(depUrl) }, { prefix: "private-top" });
  // The committed lock file pins the private input (written with the credential, as a developer would).
  const lockHome = await stepEnv("lock");
  await mkdir(lockHome.HOME!, { recursive: true });
  await writeFile(join(lockHome.HOME!, ".netrc"), await readFile(join(credentials, "netrc")), { mode: 0o600 });
  await run("nix", ["flake", "lock", top.workDir], { env: { ...process.env, ...bed.nix.env, ...lockHome } });
  await top.commit({ "flake.lock": await readFile(join(top.workDir, "flake.lock"), "utf8") }, "lock");
  topUrl = await publishPrivately(top);
});

afterAll(async () => {
  await server?.stop();
  await tlsServer?.stop();
  await sshServer?.stop();
});

let sshServer: SshGitServer | undefined;

let tlsServer: GitServer | undefined;

describe("private flake source over HTTP with basic auth (netrc)", () => {
  it("needs the credential: a fetch without it fails with the server's refusal", async () => {
    const out = join(dir, "no-credential");
    const r = await runCli(bed, ["fetch-step", "--flake", topUrl, "--out", out, "--termination-message", join(dir, "no-credential-tm")], {
      env: await stepEnv("nocred"),
    });
    expect(r.code).toBe(1);
    expect(await readFile(join(dir, "no-credential-tm"), "utf8")).toMatch(/fetch|git|auth|401|terminal prompts/i);
    expect(await readFile(join(dir, "private-git.log"), "utf8")).toMatch(/401 \(no credentials\)/);
  });

  it("fetch step with the credential, then build step with none: builds the flake and its private input", async () => {
    const stepDir = join(dir, "work");
    const fetchTm = join(dir, "fetch-tm");
    const fetchEnv = await stepEnv("fetch");
    const fetched = await runCli(
      bed,
      [
        "fetch-step",
        "--flake",
        topUrl,
        "--out",
        join(stepDir, "fetch"),
        "--credentials-dir",
        credentials,
        "--home",
        fetchEnv.HOME!,
        "--termination-message",
        fetchTm,
      ],
      { env: fetchEnv },
    );
    expect(fetched.code, fetched.stderr).toBe(0);
    const fetch = fetchResultSchema.parse(JSON.parse(await readFile(join(stepDir, "fetch", "fetch.json"), "utf8")));
    expect(fetch.revision.rev).toBe(top.rev);
    expect(fetch.inputPaths).toHaveLength(1);
    expect(fetch.seconds.fetch).toBeTypeOf("number");

    // The build step: its own HOME and cache, no netrc anywhere, nothing but the step dir.
    const buildEnv = await stepEnv("build");
    const buildTm = join(dir, "build-tm");
    const before = (await readFile(join(dir, "private-git.log"), "utf8")).length;
    const built = await runCli(
      bed,
      [
        "build-step",
        "--flake",
        topUrl,
        "--attribute",
        "default",
        "--fetched",
        join(stepDir, "fetch", "fetch.json"),
        "--out",
        join(stepDir, "result"),
        "--termination-message",
        buildTm,
      ],
      { env: buildEnv },
    );
    expect(built.code, built.stderr).toBe(0);
    const result = buildResultSchema.parse(JSON.parse(await readFile(join(stepDir, "result", "result.json"), "utf8")));
    expect(result.revision).toEqual(fetch.revision);
    expect(result.revision.url).toContain(server.baseUrl);
    expect(await readFile(result.outPath, "utf8")).toBe("hello from a private input at 2\n");
    // Per-phase timings (status.lastBuild.durations) include the fetch step's.
    for (const phase of ["fetch", "fetchLock", "fetchInputs", "lock", "build"]) expect(result.seconds[phase], phase).toBeTypeOf("number");
    // The build step never asked the private server for anything.
    expect((await readFile(join(dir, "private-git.log"), "utf8")).slice(before)).toBe("");

    // The credential is in no output, no step file, no termination message, and not in the build
    // step's HOME (the fetch step's HOME only links to the mounted netrc).
    const seen: Record<string, string> = {
      "fetch stdout": fetched.stdout,
      "fetch stderr": fetched.stderr,
      "build stdout": built.stdout,
      "build stderr": built.stderr,
      "fetch termination message": await readFile(fetchTm, "utf8"),
      "build termination message": await readFile(buildTm, "utf8"),
    };
    for (const sub of ["fetch", "result"]) {
      for (const f of await readdir(join(stepDir, sub))) seen[`${sub}/${f}`] = await readFile(join(stepDir, sub, f), "utf8");
    }
    for (const [what, text] of Object.entries(seen)) expect(text.includes(password), what).toBe(false);
    expect(await readdir(buildEnv.HOME!)).not.toContain(".netrc");
  });

  it("the build step alone cannot fetch the private source", async () => {
    const r = await runCli(bed, ["build-step", "--flake", topUrl, "--attribute", "default", "--out", join(dir, "alone")], { env: await stepEnv("alone") });
    expect(r.code).toBe(1);
  });
});

describe("private flake source over HTTPS with a private CA (issue 13 item 3)", () => {
  it("the fetch step trusts the CA bundle given with --ca-file (Nix ssl-cert-file, git); without it the source is refused", async () => {
    const pki = join(dir, "corp-pki");
    await mkdir(pki, { recursive: true });
    const ca = await makeCa(pki, "corp-ca", "Corp Root CA");
    const leaf = await makeLeaf(pki, ca, { name: "git", commonName: "git.corp", altNames: ["IP:127.0.0.1"], usage: "server" });
    tlsServer = await startGitServer({ root: join(dir, "tls-git"), logFile: join(dir, "tls-git.log"), basicAuth: { user, password }, tls: leaf });
    const depTls = await createGitRepo({ "flake.nix": depFlake }, { prefix: "private-tls-dep" });
    const topTls = await createGitRepo({ "flake.nix": topFlake(await publishPrivately(depTls, tlsServer)) }, { prefix: "private-tls-top" });
    const lockEnv = await stepEnv("tls-lock");
    await writeFile(join(lockEnv.HOME!, ".netrc"), await readFile(join(credentials, "netrc")), { mode: 0o600 });
    const caEnv = { GIT_SSL_CAINFO: ca.certFile, NIX_SSL_CERT_FILE: ca.certFile };
    await run("nix", ["flake", "lock", topTls.workDir], { env: { ...process.env, ...bed.nix.env, ...lockEnv, ...caEnv } });
    await topTls.commit({ "flake.lock": await readFile(join(topTls.workDir, "flake.lock"), "utf8") }, "lock");
    const url = await publishPrivately(topTls, tlsServer);
    expect(url).toMatch(/^git\+https:/);

    const fetchWith = async (extra: string[], name: string) => {
      const env = await stepEnv(name);
      return runCli(bed, ["fetch-step", "--flake", url, "--out", join(dir, name), "--credentials-dir", credentials, "--home", env.HOME!, ...extra], { env });
    };
    const refused = await fetchWith([], "tls-no-ca");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/certificate|SSL/i);
    const fetched = await fetchWith(["--ca-file", ca.certFile], "tls-ca");
    expect(fetched.code, fetched.stderr).toBe(0);
    const fetch = fetchResultSchema.parse(JSON.parse(await readFile(join(dir, "tls-ca", "fetch.json"), "utf8")));
    expect(fetch.revision.rev).toBe(topTls.rev);
    expect(fetch.inputPaths).toHaveLength(1);

    const built = await runCli(
      bed,
      [
        "build-step",
        "--flake",
        url,
        "--attribute",
        "default",
        "--fetched",
        join(dir, "tls-ca", "fetch.json"),
        "--ca-file",
        ca.certFile,
        "--out",
        join(dir, "tls-result"),
      ],
      { env: await stepEnv("tls-build") },
    );
    expect(built.code, built.stderr).toBe(0);
    const result = buildResultSchema.parse(JSON.parse(await readFile(join(dir, "tls-result", "result.json"), "utf8")));
    expect(await readFile(result.outPath, "utf8")).toBe("hello from a private input at 2\n");
  });
});

describe("private flake source over git+ssh with a key and known_hosts", () => {
  it("fetches with the key when the host key matches known_hosts, refuses an unknown host key; the build needs no key", async () => {
    sshServer = await startSshGitServer({ dir: join(dir, "sshd"), logFile: join(dir, "sshd.log") });
    const root = join(dir, "ssh-git");
    await mkdir(root, { recursive: true });
    const mirror = async (repo: GitRepo) => {
      await run("git", ["clone", "--quiet", "--mirror", repo.bareDir, join(root, `${repo.name}.git`)]).catch(async () => {
        await run("git", ["--git-dir", join(root, `${repo.name}.git`), "fetch", "--quiet", repo.bareDir, "+refs/*:refs/*"]);
      });
      return `git+${sshServer!.baseUrl}${root}/${repo.name}.git`;
    };
    const keyDir = join(dir, "ssh-credentials");
    await mkdir(keyDir, { recursive: true });
    await writeFile(join(keyDir, "ssh-privatekey"), await readFile(sshServer.clientKeyFile), { mode: 0o400 });
    await writeFile(join(keyDir, "known_hosts"), sshServer.knownHosts);
    const sshCommand = `ssh -F /dev/null -i ${join(keyDir, "ssh-privatekey")} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${join(keyDir, "known_hosts")} -o BatchMode=yes`;

    const depSsh = await createGitRepo({ "flake.nix": depFlake }, { prefix: "private-ssh-dep" });
    const topSsh = await createGitRepo({ "flake.nix": topFlake(await mirror(depSsh)) }, { prefix: "private-ssh-top" });
    const lockEnv = await stepEnv("ssh-lock");
    await run("nix", ["flake", "lock", topSsh.workDir], { env: { ...process.env, ...bed.nix.env, ...lockEnv, GIT_SSH_COMMAND: sshCommand } });
    await topSsh.commit({ "flake.lock": await readFile(join(topSsh.workDir, "flake.lock"), "utf8") }, "lock");
    const url = await mirror(topSsh);
    expect(url).toMatch(/^git\+ssh:/);

    // A known_hosts naming another key for this host: ssh must refuse before authenticating.
    const wrongDir = join(dir, "ssh-wrong-host");
    await mkdir(wrongDir, { recursive: true });
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(wrongDir, "other")]);
    const other = (await readFile(join(wrongDir, "other.pub"), "utf8")).trim().split(/\s+/).slice(0, 2).join(" ");
    await writeFile(join(wrongDir, "ssh-privatekey"), await readFile(sshServer.clientKeyFile), { mode: 0o400 });
    await writeFile(join(wrongDir, "known_hosts"), sshServer.knownHosts.replace(/ssh-ed25519 \S+/, other));
    const fetchWith = async (credentialsDir: string, name: string) => {
      const env = await stepEnv(name);
      return runCli(bed, ["fetch-step", "--flake", url, "--out", join(dir, name), "--credentials-dir", credentialsDir, "--home", env.HOME!], { env });
    };
    // sshd's own log is the oracle: the client gave up before authenticating (Nix shows only git's last line).
    const accepted = async () => ((await readFile(join(dir, "sshd.log"), "utf8")).match(/Accepted publickey/g) ?? []).length;
    const acceptedBefore = await accepted();
    const refused = await fetchWith(wrongDir, "ssh-wrong");
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("Could not read from remote repository");
    expect(await accepted()).toBe(acceptedBefore);

    const fetched = await fetchWith(keyDir, "ssh-ok");
    expect(fetched.code, fetched.stderr).toBe(0);
    expect(await accepted()).toBeGreaterThan(acceptedBefore);
    const fetch = fetchResultSchema.parse(JSON.parse(await readFile(join(dir, "ssh-ok", "fetch.json"), "utf8")));
    expect(fetch.revision.rev).toBe(topSsh.rev);
    expect(fetch.inputPaths).toHaveLength(1);
    const built = await runCli(
      bed,
      ["build-step", "--flake", url, "--attribute", "default", "--fetched", join(dir, "ssh-ok", "fetch.json"), "--out", join(dir, "ssh-result")],
      { env: await stepEnv("ssh-build") },
    );
    expect(built.code, built.stderr).toBe(0);
    const result = buildResultSchema.parse(JSON.parse(await readFile(join(dir, "ssh-result", "result.json"), "utf8")));
    expect(await readFile(result.outPath, "utf8")).toBe("hello from a private input at 2\n");
    const key = await readFile(sshServer.clientKeyFile, "utf8");
    const keyBody = key.split("\n")[1]!;
    for (const text of [fetched.stdout, fetched.stderr, built.stdout, built.stderr, await readFile(join(dir, "ssh-ok", "fetch.json"), "utf8")]) {
      expect(text.includes(keyBody)).toBe(false);
    }
  });
});
