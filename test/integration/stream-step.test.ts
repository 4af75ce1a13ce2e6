// Issue 12, item 4: a streamLayeredImage script runs in the stream step (its own process/container,
// an unprivileged uid, no Secret, no layer cache) and streams into the push step, which holds the
// push credentials and the cache, through a Unix socket in a shared directory. Here the two steps
// run as the builder pod runs them, as two processes: push-step as root with a TLS registry's
// credentials (0600) and a layer cache, stream-step as uid 65534 (setpriv). The probe image the
// script prints reports what the script could see. The e2e test shows the same in a real pod.
import { spawn } from "node:child_process";
import { chmod, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { testbed } from "../support/kube.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import { cliPath, fixtureRepo, lastJson, repoRoot, runCli, tlsAccess, unpackImage, uniqueRepo, type CliResult } from "../support/builder-fixtures.ts";
import { streamProbeFlake } from "../support/stream-probe-flake.ts";

const bed = testbed();
const tls = bed.registry.tls;
let work = "";

beforeAll(async () => {
  work = join(bed.tmpDir, "stream-step");
  await mkdir(work, { recursive: true });
  await chmod(work, 0o755);
});

/** stream-step as uid/gid 65534, like the stream container. */
function streamStepAsNobody(from: string, socket: string, tm: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "setpriv",
      [
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        process.execPath,
        cliPath,
        "stream-step",
        "--from",
        from,
        "--socket",
        socket,
        "--termination-message",
        tm,
      ],
      { cwd: repoRoot, env: { PATH: "/usr/bin:/bin" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

async function handoffDir(name: string): Promise<{ socket: string; tm: string }> {
  const dir = join(work, name);
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o777); // an emptyDir
  const tm = join(dir, "stream.tm");
  return { socket: join(dir, "archive.sock"), tm };
}

async function buildStep(repo: GitRepo, out: string): Promise<void> {
  const b = await runCli(bed, ["build-step", "--flake", repo.flakeUrl, "--attribute", "default", "--out", out]);
  expect(b.code, b.stderr).toBe(0);
}

const pushArgs = (from: string, repository: string, socket: string, cache: string) => [
  "push-step",
  "--from",
  from,
  "--image",
  `${tls.host}/${repository}`,
  "--auth-file",
  tls.authFile,
  "--ca-file",
  tls.caFile,
  "--layer-cache",
  cache,
  "--stream-socket",
  socket,
  "--json",
];

describe("streamLayeredImage in its own step (issue 12 item 4)", () => {
  it("the script runs as 65534 in the stream step, cannot read the push credentials or the cache key, and the push step pushes its image", async () => {
    const cache = join(work, "cache");
    const repo = await createGitRepo(streamProbeFlake([tls.authFile, join(cache, "entry-key")]), { prefix: "stream-probe" });
    const from = join(work, "probe");
    await buildStep(repo, from);
    const { socket, tm } = await handoffDir("probe-handoff");
    const repository = uniqueRepo("stream-step");
    const [push, stream] = await Promise.all([
      runCli(bed, pushArgs(from, repository, socket, cache), { env: { PATH: "/nonexistent" } }),
      streamStepAsNobody(from, socket, tm),
    ]);
    expect(stream.code, stream.stderr).toBe(0);
    expect(push.code, push.stderr).toBe(0);
    expect(await readFile(tm, "utf8")).toMatch(/^streamed \d+ bytes to the push step$/);
    const result = lastJson<{ digest: string; format: string }>(push.stdout);
    expect(result.format).toBe("stream-layered");
    const report = (await readFile(join(await unpackImage(bed, `${tls.host}/${repository}@${result.digest}`, tlsAccess(bed)), "report"), "utf8"))
      .trim()
      .split("\n");
    expect(report.slice(0, 3)).toEqual(["uid=65534 gid=65534", `${tls.authFile}=unreadable`, `${join(cache, "entry-key")}=unreadable`]);
    expect(report.join("\n")).not.toContain(tls.password);
  });

  it("for other formats the stream step has nothing to do and the push step pushes as usual", async () => {
    const hello = await fixtureRepo("hello");
    const from = join(work, "hello");
    await buildStep(hello, from);
    const { socket, tm } = await handoffDir("hello-handoff");
    const [push, stream] = await Promise.all([
      runCli(bed, pushArgs(from, uniqueRepo("stream-step-hello"), socket, join(work, "cache-hello")), { env: { PATH: "/nonexistent" } }),
      streamStepAsNobody(from, socket, tm),
    ]);
    expect(stream.code, stream.stderr).toBe(0);
    expect(await readFile(tm, "utf8")).toMatch(/nothing to stream: the build made a package/);
    expect(push.code, push.stderr).toBe(0);
  });

  it("a failing script fails both steps with the script's own message, and neither waits for the other", async () => {
    const repo = await createGitRepo(streamProbeFlake([], "echo the script broke >&2; exit 3"), { prefix: "stream-fail" });
    const from = join(work, "fail");
    await buildStep(repo, from);
    const { socket, tm } = await handoffDir("fail-handoff");
    const pushTm = join(work, "fail-push.tm");
    const [push, stream] = await Promise.all([
      runCli(bed, [...pushArgs(from, uniqueRepo("stream-step-fail"), socket, join(work, "cache-fail")), "--termination-message", pushTm], {
        env: { PATH: "/nonexistent" },
      }),
      streamStepAsNobody(from, socket, tm),
    ]);
    expect(stream.code).toBe(1);
    expect(await readFile(tm, "utf8")).toMatch(/streamLayeredImage script .* failed \(exit code 3\); its last output: the script broke/);
    expect(push.code).toBe(1);
    expect(await readFile(pushTm, "utf8")).toMatch(/stream|archive/);
  });
});
