// Issue 12, item 2: builds never run as root on the shared store. With build-users-group = nixbld
// (as the default builder image sets it) real Nix runs a flake's builder as a nixbld user, and the
// builder's attempt to change another image's registered store path or the Nix database fails. The
// control case shows the same flake as root (single-user, build users off) could do it, and
// `--require-build-users` (what the builder Job passes) refuses that configuration outright.
// Needs the nixbld group and users that scripts/setup.sh creates.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/builder-fixtures.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";

const bed = testbed();
let work = "";
let victim = "";
const withBuildUsers = () => ({ NIX_CONFIG: `${bed.nix.env.NIX_CONFIG}build-users-group = nixbld\n` });

async function buildStep(flakeUrl: string, out: string, extra: string[] = [], env: Record<string, string> = {}) {
  const tm = `${out}.tm`;
  const r = await runCli(bed, ["build-step", "--flake", flakeUrl, "--attribute", "default", "--out", out, "--termination-message", tm, ...extra], { env });
  return { ...r, message: await readFile(tm, "utf8").catch(() => "") };
}

async function outPathOf(dir: string): Promise<string> {
  return (JSON.parse(await readFile(join(dir, "result.json"), "utf8")) as { outPath: string }).outPath;
}

beforeAll(async () => {
  const group = spawnSync("getent", ["group", "nixbld"], { encoding: "utf8" });
  if (group.status !== 0 || !/nixbld1/.test(group.stdout)) throw new Error("no nixbld group with build users on this machine: run scripts/setup.sh");
  work = join(bed.tmpDir, "build-users");
  await mkdir(work, { recursive: true });
  // Another NixImage's output on the same store.
  const marker = `victim-${randomBytes(4).toString("hex")}`;
  const repo = await createGitRepo(minimalFlake({ marker, script: `/bin/mkdir $out && echo ${marker} > $out/data` }), { prefix: "victim" });
  const b = await buildStep(repo.flakeUrl, join(work, "victim"));
  expect(b.code, b.stderr).toBe(0);
  victim = await outPathOf(join(work, "victim"));
});

describe("builds run as Nix build users (issue 12 item 2)", () => {
  it("a builder running as a nixbld user cannot change another image's store path or the Nix database", async () => {
    const before = await readFile(join(victim, "data"), "utf8");
    // The attack, for real: append to the other path's file, append to the database.
    const script = [
      "/usr/bin/id -u > $out",
      `if (echo poisoned >> ${victim}/data) 2>/dev/null; then echo victim=written >> $out; else echo victim=denied >> $out; fi`,
      "if (echo x >> /nix/var/nix/db/db.sqlite) 2>/dev/null; then echo db=written >> $out; else echo db=denied >> $out; fi",
    ].join("; ");
    const repo = await createGitRepo(minimalFlake({ marker: `attack-${randomBytes(4).toString("hex")}`, script }), { prefix: "attack" });
    const r = await buildStep(repo.flakeUrl, join(work, "attack"), ["--require-build-users"], withBuildUsers());
    expect(r.code, r.stderr).toBe(0);
    const report = (await readFile(await outPathOf(join(work, "attack")), "utf8")).trim().split("\n");
    expect(Number(report[0])).toBeGreaterThanOrEqual(30001);
    expect(report.slice(1)).toEqual(["victim=denied", "db=denied"]);
    expect(await readFile(join(victim, "data"), "utf8")).toBe(before);
  });

  it("control: as root without build users the builder could write both (checked with test -w, nothing written)", async () => {
    const script = [
      "/usr/bin/id -u > $out",
      `if [ -w ${victim}/data ]; then echo victim=writable >> $out; else echo victim=denied >> $out; fi`,
      "if [ -w /nix/var/nix/db/db.sqlite ]; then echo db=writable >> $out; else echo db=denied >> $out; fi",
    ].join("; ");
    const repo = await createGitRepo(minimalFlake({ marker: `control-${randomBytes(4).toString("hex")}`, script }), { prefix: "control" });
    const r = await buildStep(repo.flakeUrl, join(work, "control"));
    expect(r.code, r.stderr).toBe(0);
    expect((await readFile(await outPathOf(join(work, "control")), "utf8")).trim().split("\n")).toEqual(["0", "victim=writable", "db=writable"]);
  });

  it("--require-build-users refuses a root Nix without build users before any flake code runs", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: `refused-${randomBytes(4).toString("hex")}` }), { prefix: "refused" });
    const r = await buildStep(repo.flakeUrl, join(work, "refused"), ["--require-build-users"]);
    expect(r.code).toBe(1);
    expect(r.message).toMatch(/Nix runs as root with build-users-group empty, so flake builders would run as root on the shared store volume/);
    expect(r.stderr).not.toMatch(/building '/);
  });
});
