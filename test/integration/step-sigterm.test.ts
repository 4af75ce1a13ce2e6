// SIGTERM to a builder step (the kubelet stopping a pod: deletion, eviction, a draining node) in the
// middle of real work: the push step, pushing a real Nix closure through a fault proxy that holds
// its blob upload. The step runner aborts the upload through the step's signal and the process
// exits by itself with the transient code (75) and a termination message saying what happened,
// instead of hanging until the kubelet's SIGKILL. No image is left; the retry pushes it.
import { join } from "node:path";
import { readFile } from "node:fs/promises";
import { spawn } from "node:child_process";
import { beforeAll, describe, expect, it } from "vitest";
import { cliPath, fixtureRepo, lastJson, plainAccess, runCli, skopeoInspect, uniqueRepo } from "../support/builder-fixtures.ts";
import { testbed, waitFor } from "../support/kube.ts";
import { startRegistryFaultProxy } from "../support/registry-fault-proxy.ts";
import { TRANSIENT_EXIT_CODE } from "../../src/builder/step-results.ts";

const bed = testbed();
let built = "";

beforeAll(async () => {
  const hello = await fixtureRepo("hello");
  built = join(bed.tmpDir, `step-sigterm-${process.pid}`);
  const r = await runCli(bed, ["build-step", "--flake", hello.flakeUrl, "--attribute", "default", "--out", built]);
  if (r.code !== 0) throw new Error(`build-step failed: ${r.stderr}`);
});

describe("SIGTERM to a builder step", () => {
  it("push step with its blob upload stalled: exits by itself with 75 and says so; no image; the retry pushes it", async () => {
    const proxy = await startRegistryFaultProxy({ host: bed.registry.plain.host });
    try {
      const repository = uniqueRepo("step-sigterm");
      const tm = join(bed.tmpDir, `tm-step-sigterm-${process.pid}`);
      const stall = proxy.stallBlobUploads();
      const args = ["push-step", "--from", built, "--image", `${proxy.host}/${repository}`, "--plain-http", "--json"];
      const child = spawn(process.execPath, [cliPath, ...args, "--termination-message", tm], {
        env: { ...process.env, ...bed.nix.env, PATH: "/nonexistent", LOG_LEVEL: "info" },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      let exit: { code: number | null; signal: string | null } | undefined;
      child.once("exit", (code, signal) => (exit = { code, signal }));
      await waitFor("a blob upload in flight", () => stall.stalled() > 0, { timeoutMs: 60_000 });
      const termAt = Date.now();
      child.kill("SIGTERM");
      // Only the process's own exit counts: no SIGKILL is ever sent (the bound is the test's, not a grace period).
      await waitFor("the push step to exit after SIGTERM", () => exit !== undefined, { timeoutMs: 60_000 });
      const exitMs = Date.now() - termAt;
      expect(exit, stderr).toEqual({ code: TRANSIENT_EXIT_CODE, signal: null });
      const message = await readFile(tm, "utf8");
      expect(message).toContain("push-step was stopped by SIGTERM before it finished");
      expect(message).toContain("the build is retried");
      expect(stderr).not.toMatch(/MaxListenersExceeded/);
      stall.release();
      const tags = await fetch(`${bed.registry.plain.url}/v2/${repository}/tags/list`);
      expect(tags.status === 404 || ((await tags.json()) as { tags?: string[] | null }).tags == null).toBe(true);
      const retry = await runCli(bed, [...args, "--termination-message", join(bed.tmpDir, `tm-step-sigterm-retry-${process.pid}`)], {
        env: { PATH: "/nonexistent" },
        timeoutMs: 120_000,
      });
      expect(retry.code, retry.stderr).toBe(0);
      const { digest } = lastJson<{ digest: string }>(retry.stdout);
      expect((await skopeoInspect(`${bed.registry.plain.host}/${repository}@${digest}`, plainAccess())).Digest).toBe(digest);
      console.log(`[figure] push step exit after SIGTERM with its upload stalled: ${exitMs} ms (code ${exit?.code})`);
    } finally {
      await proxy.close();
    }
  });
});
