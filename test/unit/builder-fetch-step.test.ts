import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { archivedPaths, credentialEnvironment, isTransientFetchFailure, readCredentialDirs, storeBuildRef } from "../../src/builder/fetch-step.ts";

const src = "/nix/store/2kfqyk8d0xqs4i1j0h5bh3lsbrx7n6my-source";
const dep = "/nix/store/ra8zy56zwci6gijag7x9cr5wh7i9a60m-source";

describe("fetch step", () => {
  it("reads the store paths of nix flake archive --json, inputs of inputs too", () => {
    expect(archivedPaths({ path: src, inputs: { a: { path: dep, inputs: { b: { path: dep, inputs: {} } } } } })).toEqual({ path: src, inputs: [dep] });
    expect(() => archivedPaths({ path: "/etc/passwd" })).toThrow(/no source store path/);
  });

  it("builds from the fetched store path with the revision's attributes", () => {
    const ref = storeBuildRef({
      version: 1,
      flake: "git+https://git.example.com/a.git",
      revision: {
        url: "git+https://git.example.com/a.git?rev=b76e4dc5a8d42388a3865ddd66fb6e1f999c7ccd",
        rev: "b76e4dc5a8d42388a3865ddd66fb6e1f999c7ccd",
        lastModified: 7,
        narHash: "sha256-qa+/=",
      },
      revCount: 2,
      sourcePath: src,
      inputPaths: [],
      seconds: {},
    });
    expect(ref).toBe(`path:${src}?narHash=sha256-qa%2B%2F%3D&lastModified=7&rev=b76e4dc5a8d42388a3865ddd66fb6e1f999c7ccd&revCount=2`);
  });

  it("refuses an ssh key without known_hosts and a malformed access-tokens word without echoing it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fetch-cred-"));
    await writeFile(join(dir, "ssh-privatekey"), "KEY");
    await expect(readCredentialDirs([dir])).rejects.toThrow(/known_hosts/);
    const dir2 = await mkdtemp(join(tmpdir(), "fetch-cred-"));
    await writeFile(join(dir2, "access-tokens"), "github.com=ok secret-without-host");
    await expect(readCredentialDirs([dir2])).rejects.toThrow(/word 2 is not host=token/);
    await expect(readCredentialDirs([dir2])).rejects.not.toThrow(/secret-without-host/);
  });

  it("hands the credential to Nix and git only through this step's environment", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fetch-cred-"));
    for (const f of ["netrc", "ssh-privatekey", "known_hosts"]) await writeFile(join(dir, f), "x");
    await writeFile(join(dir, "access-tokens"), "github.com=T1 gitlab.example.com=PAT:T2");
    const env = await credentialEnvironment(await readCredentialDirs([dir]), join(dir, "home"), "sandbox = true");
    expect(env.NIX_CONFIG).toBe(`sandbox = true\nnetrc-file = ${dir}/netrc\naccess-tokens = github.com=T1 gitlab.example.com=PAT:T2\n`);
    expect(env.GIT_SSH_COMMAND).toContain("StrictHostKeyChecking=yes");
    expect(env.GIT_SSH_COMMAND).toContain(`UserKnownHostsFile='${dir}/known_hosts'`);
    expect(env).toMatchObject({ HOME: join(dir, "home"), GIT_TERMINAL_PROMPT: "0" });
  });

  it("collects the secret words (netrc passwords, tokens) for redaction", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fetch-cred-"));
    await writeFile(join(dir, "netrc"), "machine a.example login bot password pw1\nmachine b.example\n  login x\n  password pw2\n");
    await writeFile(join(dir, "access-tokens"), "github.com=T1");
    expect((await readCredentialDirs([dir])).secrets).toEqual(["pw1", "pw2", "T1"]);
  });

  it("network and server failures may pass; refusals do not", () => {
    expect(isTransientFetchFailure("fatal: unable to access 'https://git.example.com/a.git/': Could not resolve host: git.example.com")).toBe(true);
    expect(isTransientFetchFailure("The requested URL returned error: 503")).toBe(true);
    expect(isTransientFetchFailure("fatal: could not read Username for 'https://git.example.com': terminal prompts disabled")).toBe(false);
    expect(isTransientFetchFailure("The requested URL returned error: 401")).toBe(false);
  });
});
