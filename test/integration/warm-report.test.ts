// Warm builds with real Nix: `build-step --update-inputs --extra-attribute ...` builds a fixture
// flake (test/fixtures/flakes/updatable) both from its committed flake.lock and against its
// updated input, then `warm-report` turns the result directory into the termination message the
// controller reads. The dependency is a second git repo on the test bed's git server whose new
// commit changes, adds and removes packages.
import { execFileSync } from "node:child_process";
import { mkdir, readFile, readdir } from "node:fs/promises";
import { join, relative } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readLockedClosure, readStepFiles } from "../../src/builder/step-files.ts";
import { warmResultSchema } from "../../src/builder/step-results.ts";
import { fixtureRepo, repoRoot, runCli } from "../support/builder-fixtures.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";
import { run } from "../support/process.ts";

async function files(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out[relative(dir, join(e.parentPath, e.name))] = await readFile(join(e.parentPath, e.name), "utf8");
  }
  return out;
}

const fixture = join(repoRoot, "test/fixtures/flakes/updatable");
const names = (paths: readonly { path: string }[]) => paths.map((p) => p.path.replace(/^\/nix\/store\/[a-z0-9]{32}-/, "")).sort();

describe("warm build with updated inputs (real Nix)", () => {
  let dep: GitRepo;
  let app: GitRepo;
  let lockedRev: string;

  beforeAll(async () => {
    const bed = testbed();
    dep = await createGitRepo(await files(join(fixture, "dep")), { prefix: "warm-dep" });
    lockedRev = dep.rev;
    const appFiles = await files(join(fixture, "app"));
    appFiles["flake.nix"] = appFiles["flake.nix"]!.replaceAll("@DEP_URL@", dep.flakeUrl);
    app = await createGitRepo(appFiles, { prefix: "warm-app" });
    // Lock the input at dep's first commit and commit the lock file, as a flake's owner would.
    await run("nix", ["flake", "lock"], { cwd: app.workDir, env: { ...process.env, ...bed.nix.env } });
    await app.commit({}, "lock dep");
    expect(JSON.parse(await readFile(join(app.workDir, "flake.lock"), "utf8")).nodes.dep.locked.rev).toBe(lockedRev);
    // The dependency moves on: libdep 1.1, shared-tool 3.0.2, new-tool instead of old-tool.
    await dep.commit(
      {
        "dep.json": JSON.stringify({
          version: "1.1",
          tools: [
            { name: "new-tool", version: "1.2" },
            { name: "shared-tool", version: "3.0.2" },
          ],
        }),
      },
      "dep 1.1",
    );
  });

  it("builds from the committed lock file and against the updated input, and reports the closure diff", async () => {
    const bed = testbed();
    const out = join(bed.tmpDir, `warm-${app.name}`);
    await mkdir(out, { recursive: true });
    const build = await runCli(bed, [
      "build-step",
      "--flake",
      app.flakeUrl,
      "--attribute",
      "default",
      "--out",
      out,
      "--update-inputs",
      "--extra-attribute",
      "devShells.x86_64-linux.default",
    ]);
    expect(build.code, build.stderr).toBe(0);

    const { result, closure } = await readStepFiles(out);
    const locked = await readLockedClosure(out);
    expect(names(locked!)).toEqual(["app-1.0", "libdep-1.0", "old-tool-0.9", "shared-tool-3.0.1"]);
    expect(names(closure)).toEqual(["app-1.0", "libdep-1.1", "new-tool-1.2", "shared-tool-3.0.2"]);
    expect(result.revision.rev).toBe(app.rev);
    expect(result.extraAttributes).toEqual([{ attribute: "devShells.x86_64-linux.default", outPaths: [expect.stringMatching(/-app-shell$/)] }]);
    expect(result.seconds.lockedBuild).toBeGreaterThan(0);
    // The source was not written: its lock file still pins dep's first commit.
    const committedLock = execFileSync("git", ["-C", app.bareDir, "show", `${app.branch}:flake.lock`], { encoding: "utf8" });
    expect(JSON.parse(committedLock).nodes.dep.locked.rev).toBe(lockedRev);

    const messageFile = join(out, "termination-log");
    const report = await runCli(bed, ["warm-report", "--from", out, "--termination-message", messageFile]);
    expect(report.code, report.stderr).toBe(0);
    const text = await readFile(messageFile, "utf8");
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(4096);
    const message = warmResultSchema.parse(JSON.parse(text));
    expect(message).toEqual({
      revision: result.revision,
      seconds: result.seconds,
      closureDiff: {
        added: [{ name: "new-tool", to: "1.2" }],
        removed: [{ name: "old-tool", from: "0.9" }],
        changed: [
          { name: "libdep", from: "1.0", to: "1.1" },
          { name: "shared-tool", from: "3.0.1", to: "3.0.2" },
        ],
        totals: { added: 1, removed: 1, changed: 2 },
      },
    });
    // The log has the whole diff: app-1.0 itself was only rebuilt.
    expect(JSON.parse(report.stdout)).toMatchObject({ closureDiff: { rebuilt: 1, truncated: false } });
  });

  it("without --update-inputs (the hello fixture): only the committed lock, no closure diff", async () => {
    const bed = testbed();
    const hello = await fixtureRepo("hello");
    const out = join(bed.tmpDir, `warm-${hello.name}`);
    await mkdir(out, { recursive: true });
    const build = await runCli(bed, ["build-step", "--flake", hello.flakeUrl, "--attribute", "default", "--out", out, "--extra-attribute", "busybox"]);
    expect(build.code, build.stderr).toBe(0);
    expect(await readLockedClosure(out)).toBeUndefined();

    const messageFile = join(out, "termination-log");
    const report = await runCli(bed, ["warm-report", "--from", out, "--termination-message", messageFile]);
    expect(report.code, report.stderr).toBe(0);
    const message = warmResultSchema.parse(JSON.parse(await readFile(messageFile, "utf8")));
    expect(message.revision?.rev).toBe(hello.rev);
    expect(message.closureDiff).toBeUndefined();
    expect(Object.keys(message.seconds ?? {})).toEqual(expect.arrayContaining(["lock", "build", "closure"]));
  });
});
