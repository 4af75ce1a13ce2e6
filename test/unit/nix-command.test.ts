// NixCommand against fake `nix` scripts (shell scripts printing what Nix 2.8 prints), so argv,
// environment, progress, errors, timeouts and cancellation are tested without a store.
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { displayArgv, NixCommand, nixEnvironment, safetyArgs } from "../../src/nix/nix-command.ts";
import { NixError } from "../../src/nix/nix-error.ts";
import type { NixProgress } from "../../src/nix/nix-log.ts";

let dir: string;

async function fakeNix(name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "nix-command-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("safetyArgs", () => {
  it("always sets the untrusted-flake options, IFD off by default", () => {
    const args = safetyArgs();
    const pairs = new Map<string, string>();
    for (let i = 0; i < args.length; i += 3) {
      expect(args[i]).toBe("--option");
      pairs.set(args[i + 1]!, args[i + 2]!);
    }
    expect(Object.fromEntries(pairs)).toEqual({
      "extra-experimental-features": "nix-command flakes",
      "accept-flake-config": "false",
      "flake-registry": "",
      "sandbox-fallback": "false",
      "allow-import-from-derivation": "false",
    });
  });

  it("enables IFD and adds only validated substituters and keys", () => {
    const args = safetyArgs({
      allowImportFromDerivation: true,
      extraSubstituters: ["https://cache.example.org", "https://c2.example.org:8443/prefix"],
      extraTrustedPublicKeys: ["cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="],
    });
    const text = args.join("|");
    expect(text).toContain("allow-import-from-derivation|true");
    expect(text).toContain("extra-substituters|https://cache.example.org https://c2.example.org:8443/prefix");
    expect(text).toContain("extra-trusted-public-keys|cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=");
  });

  it.each([
    ["http://plain.example.org"],
    ["https://a.example.org https://b.example.org"],
    ["https://user:pw@cache.example.org"],
    ["file:///nix/store"],
    ["https://cache.example.org\n--option"],
  ])("rejects substituter %j", (s) => {
    expect(() => safetyArgs({ extraSubstituters: [s] })).toThrow(NixError);
  });

  it("rejects malformed keys", () => {
    expect(() => safetyArgs({ extraTrustedPublicKeys: ["nokey"] })).toThrow(/name:base64key/);
    expect(() => safetyArgs({ extraTrustedPublicKeys: ["a:b c"] })).toThrow(NixError);
  });
});

describe("nixEnvironment", () => {
  it("passes only what Nix needs, never secrets", () => {
    const env = nixEnvironment(
      {
        PATH: "/bin",
        HOME: "/root",
        NIX_CONF_DIR: "/etc/nix",
        AWS_SECRET_ACCESS_KEY: "x",
        REGISTRY_PASSWORD: "y",
        KUBERNETES_SERVICE_HOST: "10.0.0.1",
        GITHUB_TOKEN: "z",
      },
      { XDG_CACHE_HOME: "/tmp/c" },
    );
    expect(env).toEqual({ PATH: "/bin", HOME: "/root", NIX_CONF_DIR: "/etc/nix", XDG_CACHE_HOME: "/tmp/c", NO_COLOR: "1", TERM: "dumb" });
  });
});

describe("displayArgv", () => {
  it("quotes what a shell would split", () => {
    expect(displayArgv(["nix", "--option", "flake-registry", "", "a b", "it's"])).toBe(`nix --option flake-registry '' 'a b' 'it'\\''s'`);
  });
});

describe("NixCommand.run", () => {
  it("runs argv without a shell, with the safety options first, and returns stdout", async () => {
    const argsFile = join(dir, "args.txt");
    const bin = await fakeNix(
      "nix-ok",
      `for a in "$@"; do printf '%s\\n' "$a"; done > ${argsFile}\necho '[{"drvPath":"/nix/store/x.drv","outputs":{"out":"/nix/store/y"}}]'`,
    );
    const nix = new NixCommand({ nixBin: bin, baseEnv: { PATH: "/usr/bin:/bin" } });
    const r = await nix.run(["build", "--json", "--", "git+http://h/x.git#a;rm -rf /"], { what: "build x" });
    expect(JSON.parse(r.stdout)).toEqual([{ drvPath: "/nix/store/x.drv", outputs: { out: "/nix/store/y" } }]);
    const argv = (await readFile(argsFile, "utf8")).split("\n").slice(0, -1);
    expect(argv.slice(0, 2)).toEqual(["--log-format", "internal-json"]);
    expect(argv.slice(2, 2 + safetyArgs().length)).toEqual(safetyArgs());
    expect(argv.slice(-4)).toEqual(["build", "--json", "--", "git+http://h/x.git#a;rm -rf /"]);
  });

  it("gives the child the filtered environment", async () => {
    const envFile = join(dir, "env.txt");
    const bin = await fakeNix("nix-env", `/usr/bin/env > ${envFile}`);
    const nix = new NixCommand({ nixBin: bin, baseEnv: { PATH: "/usr/bin:/bin", SECRET_TOKEN: "hunter2" }, extraEnv: { NIX_CONFIG: "sandbox = false" } });
    await nix.run(["--version"], { what: "version" });
    const env = await readFile(envFile, "utf8");
    expect(env).not.toContain("hunter2");
    expect(env).toContain("NIX_CONFIG=sandbox = false");
  });

  it("reports progress with phase changes and a final snapshot", async () => {
    const bin = await fakeNix(
      "nix-progress",
      [
        `echo '@nix {"action":"start","id":1,"type":102,"text":""}' >&2`,
        `echo '@nix {"action":"start","id":2,"type":104,"text":""}' >&2`,
        `echo '@nix {"action":"start","fields":["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-app.drv","",1,1],"id":3,"type":105,"text":"building"}' >&2`,
        `echo '@nix {"action":"result","fields":[0,1,1,0],"id":2,"type":105}' >&2`,
        `echo '@nix {"action":"result","fields":["compiling"],"id":3,"type":101}' >&2`,
        `echo '@nix {"action":"result","fields":[1,1,0,0],"id":2,"type":105}' >&2`,
        `echo '@nix {"action":"stop","id":3}' >&2`,
        `echo '[]'`,
      ].join("\n"),
    );
    const seen: NixProgress[] = [];
    const logs: string[] = [];
    const nix = new NixCommand({ nixBin: bin, progressIntervalMs: 60_000 });
    const r = await nix.run(["build"], { what: "build", onProgress: (p) => seen.push(p), onBuildLog: (l) => logs.push(l) });
    expect(seen.map((p) => p.phase)).toEqual(["realising", "building", "realising", "realising"]);
    expect(seen.find((p) => p.phase === "building")?.runningBuilds).toEqual(["app"]);
    expect(r.progress.builds).toEqual({ done: 1, expected: 1, running: 0, failed: 0 });
    expect(logs).toEqual(["compiling"]);
  });

  it("turns a failed build into a NixError with the builder's last lines", async () => {
    const drv = "/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-broken-fails.drv";
    const bin = await fakeNix(
      "nix-fail",
      [
        `echo '@nix {"action":"start","id":1,"type":102,"text":""}' >&2`,
        `echo '@nix {"action":"start","fields":["${drv}","",1,1],"id":3,"type":105,"text":"building"}' >&2`,
        `echo '@nix {"action":"result","fields":["compiling widget.c"],"id":3,"type":101}' >&2`,
        `echo '@nix {"action":"result","fields":["widget.c:42: error: frobnicate undeclared"],"id":3,"type":101}' >&2`,
        `echo '@nix {"action":"stop","id":3}' >&2`,
        `echo '@nix {"action":"msg","level":0,"msg":"\\u001b[31;1merror:\\u001b[0m builder for '"'"'${drv}'"'"' failed with exit code 2"}' >&2`,
        "exit 1",
      ].join("\n"),
    );
    const nix = new NixCommand({ nixBin: bin });
    const err = await nix.run(["build"], { what: "build git+http://h/b.git#fails" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NixError);
    const e = err as NixError;
    expect(e.kind).toBe("build-failed");
    expect(e.exitCode).toBe(1);
    expect(e.drvPath).toBe(drv);
    expect(e.logTail).toEqual(["compiling widget.c", "widget.c:42: error: frobnicate undeclared"]);
    expect(e.message).toMatch(/^build git\+http:\/\/h\/b\.git#fails failed: builder for '.*' failed with exit code 2\n/);
    expect(e.message).toContain("  > widget.c:42: error: frobnicate undeclared");
    expect(e.message).toContain("What to do:");
    expect(e.command).toContain("--log-format internal-json");
  });

  it("uses git's plain stderr for fetch failures", async () => {
    const bin = await fakeNix(
      "nix-fetch",
      [
        `echo "fatal: repository 'http://127.0.0.1:9/nope.git/' not found" >&2`,
        `echo '@nix {"action":"msg","level":0,"msg":"error: program '"'"'git'"'"' failed with exit code 128"}' >&2`,
        "exit 1",
      ].join("\n"),
    );
    const e = (await new NixCommand({ nixBin: bin }).run(["flake", "metadata"], { what: "lock flake x" }).catch((x: unknown) => x)) as NixError;
    expect(e.kind).toBe("fetch-failed");
    expect(e.reason).toContain("not found");
  });

  it("kills a command that runs past its timeout", async () => {
    const bin = await fakeNix("nix-slow", `echo '@nix {"action":"start","id":1,"type":102,"text":""}' >&2\nexec sleep 30`);
    const started = Date.now();
    const e = (await new NixCommand({ nixBin: bin, killGraceMs: 500 })
      .run(["build"], { what: "build slow", timeoutMs: 200 })
      .catch((x: unknown) => x)) as NixError;
    expect(e).toBeInstanceOf(NixError);
    expect(e.kind).toBe("timeout");
    expect(e.reason).toMatch(/no result within 0 s \(while realising\)/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("stops on abort", async () => {
    const bin = await fakeNix("nix-abort", "exec sleep 30");
    const ac = new AbortController();
    const p = new NixCommand({ nixBin: bin }).run(["build"], { what: "build", signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    const e = (await p.catch((x: unknown) => x)) as NixError;
    expect(e.kind).toBe("aborted");
    const pre = (await new NixCommand({ nixBin: bin }).run(["build"], { what: "build", signal: AbortSignal.abort() }).catch((x: unknown) => x)) as NixError;
    expect(pre.kind).toBe("aborted");
  });

  it("limits stdout", async () => {
    const bin = await fakeNix("nix-chatty", "exec /usr/bin/yes");
    const e = (await new NixCommand({ nixBin: bin, maxStdoutBytes: 100_000, killGraceMs: 500 })
      .run(["eval"], { what: "eval" })
      .catch((x: unknown) => x)) as NixError;
    expect(e.kind).toBe("invalid-output");
  });

  it("says when nix is missing", async () => {
    const e = (await new NixCommand({ nixBin: join(dir, "does-not-exist") }).run(["build"], { what: "build" }).catch((x: unknown) => x)) as NixError;
    expect(e.kind).toBe("nix-not-found");
    expect(e.message).toMatch(/not found/);
  });

  it("refuses invalid settings at construction", () => {
    expect(() => new NixCommand({ settings: { extraSubstituters: ["http://x"] } })).toThrow(NixError);
  });
});
