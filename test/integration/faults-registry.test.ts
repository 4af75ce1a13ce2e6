// Fault suite (docs/reliability.md), cases 10 and 11 at the push: the real push step (the builder
// Job's last container, `push-step`) pushing a real Nix closure through a fault proxy in front of
// docker-registry. A short 503 window and a connection reset mid-blob are ridden out inside the
// step; a registry that keeps failing makes the step fail with a message saying so; a push cut
// before its manifest leaves no image, and the retry sends only what is missing (the manifest).
// Then the controller half of case 11: a build whose push failed like that leaves no digest in
// status and no rollout.
import { join } from "node:path";
import { readFile } from "node:fs/promises";
import { beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { cliPath, fixtureRepo, lastJson, messageLines, plainAccess, runCli, skopeoInspect, uniqueRepo } from "../support/builder-fixtures.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { kubeClients, testbed, waitFor } from "../support/kube.ts";
import { sleep } from "../support/process.ts";
import { startRegistryFaultProxy, type RegistryFaultProxy } from "../support/registry-fault-proxy.ts";

const bed = testbed();
let built = "";

beforeAll(async () => {
  const hello = await fixtureRepo("hello");
  built = join(bed.tmpDir, `faults-registry-${process.pid}`);
  const r = await runCli(bed, ["build-step", "--flake", hello.flakeUrl, "--attribute", "default", "--out", built]);
  if (r.code !== 0) throw new Error(`build-step failed: ${r.stderr}`);
});

/** The push step; `cache` is its layer cache (on the store volume in a Job: a retry on the same volume shares it). */
async function push(proxy: RegistryFaultProxy, repository: string, tm: string, cache?: string) {
  const started = Date.now();
  const r = await runCli(
    bed,
    [
      "push-step",
      "--from",
      built,
      "--image",
      `${proxy.host}/${repository}`,
      "--plain-http",
      "--json",
      "--termination-message",
      tm,
      ...(cache ? ["--layer-cache", cache] : []),
    ],
    {
      env: { PATH: "/nonexistent" },
      timeoutMs: 120_000,
    },
  );
  return { ...r, ms: Date.now() - started };
}

async function withProxy<T>(fn: (proxy: RegistryFaultProxy) => Promise<T>): Promise<T> {
  const proxy = await startRegistryFaultProxy({ host: bed.registry.plain.host });
  try {
    return await fn(proxy);
  } finally {
    await proxy.close();
  }
}

describe("faults: registry", () => {
  it("case 10: registry answers 503 for 2.5 s -> the push step retries with backoff and pushes a complete image", async () => {
    await withProxy(async (proxy) => {
      const repository = uniqueRepo("faults-503");
      proxy.failFor(503, 2500);
      const r = await push(proxy, repository, join(bed.tmpDir, `tm-503-${process.pid}`));
      expect(r.code, r.stderr).toBe(0);
      const { digest } = lastJson<{ digest: string }>(r.stdout);
      // Read back past the proxy, by an independent client.
      const inspected = await skopeoInspect(`${bed.registry.plain.host}/${repository}@${digest}`, plainAccess());
      expect(inspected.Digest).toBe(digest);
      const injected = proxy.requests.filter((q) => q.injected).length;
      expect(injected).toBeGreaterThan(0);
      await recordFigures("10-503-window", { windowMs: 2500, injected503: injected, pushMs: r.ms });
    });
  });

  it("case 10: registry answers 503 for good -> the push step fails, its message names the registry's 503", async () => {
    await withProxy(async (proxy) => {
      proxy.failAlways(503);
      const tm = join(bed.tmpDir, `tm-503-always-${process.pid}`);
      const r = await push(proxy, uniqueRepo("faults-503-always"), tm);
      expect(r.code).not.toBe(0);
      const message = await readFile(tm, "utf8");
      expect(message).toMatch(/503/);
      await recordFigures("10-503-always", {
        exitCode: r.code,
        attempts: proxy.requests.length,
        pushMs: r.ms,
        message: messageLines(r.stderr)[0] ?? message.slice(0, 200),
      });
    });
  });

  it("connection reset in the middle of a blob upload -> that upload is retried, the image is complete", async () => {
    await withProxy(async (proxy) => {
      const repository = uniqueRepo("faults-reset");
      proxy.resetBlobUploads(16 * 1024, 1);
      const r = await push(proxy, repository, join(bed.tmpDir, `tm-reset-${process.pid}`));
      expect(r.code, r.stderr).toBe(0);
      expect(proxy.requests.some((q) => q.injected?.startsWith("reset after"))).toBe(true);
      const { digest } = lastJson<{ digest: string }>(r.stdout);
      const inspected = await skopeoInspect(`${bed.registry.plain.host}/${repository}@${digest}`, plainAccess());
      expect(inspected.Digest).toBe(digest);
      // skopeo copy reads and verifies every blob against its digest.
      const { run } = await import("../support/process.ts");
      await run("skopeo", [
        "copy",
        "--src-tls-verify=false",
        `docker://${bed.registry.plain.host}/${repository}@${digest}`,
        `oci:${join(bed.tmpDir, `oci-reset-${process.pid}`)}:x`,
      ]);
      await recordFigures("10-reset-mid-blob", { pushMs: r.ms });
    });
  });

  it("case 11: push cut before the manifest PUT -> no image in the registry; the retry uploads no blob again, only what is missing", async () => {
    await withProxy(async (proxy) => {
      const repository = uniqueRepo("faults-partial");
      proxy.cutManifestPuts();
      const tm = join(bed.tmpDir, `tm-partial-${process.pid}`);
      const cache = join(bed.tmpDir, `layer-cache-partial-${process.pid}`);
      const first = await push(proxy, repository, tm, cache);
      expect(first.code).not.toBe(0);
      const uploadsFirst = proxy.count("blob-upload-start");
      expect(uploadsFirst).toBeGreaterThan(0);
      // Nothing is tagged: no manifest reached the registry.
      const tags = await fetch(`${bed.registry.plain.url}/v2/${repository}/tags/list`);
      expect(tags.status === 404 || ((await tags.json()) as { tags?: string[] | null }).tags == null).toBe(true);

      proxy.restore();
      const firstRun = proxy.requests.length;
      const before = { uploads: proxy.count("blob-upload-start"), manifests: proxy.count("manifest-put") };
      const retry = await push(proxy, repository, join(bed.tmpDir, `tm-partial-retry-${process.pid}`), cache);
      expect(retry.code, retry.stderr).toBe(0);
      // Blobs whose upload completed (PUT ...&digest=D answered 201), per run: the retry sends none
      // of the first run's again (same store volume, so the same layer cache; the registry has them).
      // It does send what the cut run never got to: the image's SBOM and provenance after the manifest.
      const completed = (requests: typeof proxy.requests) =>
        requests.filter((q) => q.method === "PUT" && q.code === 201 && /\/blobs\/uploads\//.test(q.path)).map((q) => /[?&]digest=([^&]+)/.exec(q.path)?.[1]);
      const sentFirst = new Set(completed(proxy.requests.slice(0, firstRun)));
      const sentAgain = completed(proxy.requests.slice(firstRun)).filter((d) => sentFirst.has(d));
      expect(sentAgain, "blobs of the first run uploaded again").toEqual([]);
      const resent = proxy.count("blob-upload-start") - before.uploads;
      expect(proxy.count("manifest-put") - before.manifests).toBeGreaterThanOrEqual(1);
      const { digest } = lastJson<{ digest: string }>(retry.stdout);
      expect((await skopeoInspect(`${bed.registry.plain.host}/${repository}@${digest}`, plainAccess())).Digest).toBe(digest);
      await recordFigures("11-push", {
        blobUploadsFirstRun: uploadsFirst,
        blobUploadsOnRetry: resent,
        firstRunBlobsSentAgain: sentAgain.length,
        failedMessage: (await readFile(tm, "utf8")).slice(0, 300),
      });
    });
  });

  it("case 11: a build whose push was cut before the manifest -> no digest, no rollout until the automatic retry pushed it; then one rollout", async () => {
    // The push step's own failure (exit code and message) from a real push cut before its manifest.
    const tm = join(bed.tmpDir, `tm-partial-ctl-${process.pid}`);
    const cut = await withProxy(async (proxy) => {
      proxy.cutManifestPuts();
      return push(proxy, uniqueRepo("faults-partial-ctl"), tm);
    });
    expect(cut.code).not.toBe(0);
    const message = await readFile(tm, "utf8");
    const s = await faultScenario({
      prefix: "partial",
      config: { build: { retry: { limit: 3, baseDelay: "2s", maxDelay: "4s" } } },
      kubelet: { outcome: (_pod, earlier) => (earlier === 0 ? { fail: { exitCode: cut.code ?? 1, message } } : "succeed") },
    });
    await s.startController("one");
    await s.createImages(["p1"]);
    const failed = await waitFor("the first build's failure in status", async () => {
      const image = await s.readImage("p1");
      return image.status?.lastBuild?.result === "Failed" ? image : undefined;
    });
    expect(failed.status?.latestImage).toBeUndefined();
    expect(failed.status?.conditions?.find((c) => c.type === "Ready")?.status).not.toBe("True");
    await s.waitConverged(["p1"]);
    expect((await s.readImage("p1")).status?.lastBuild).toMatchObject({ result: "Succeeded", number: 2 });
    // The audit log: the one rollout patch came after the retry's Job, never after the cut push.
    const writes = await s.operatorWrites((w) => w.code < 300 && ((w.resource === "jobs" && w.verb === "create") || w.resource === "deployments"));
    expect(writes.map((w) => `${w.verb} ${w.resource}`)).toEqual(["create jobs", "create jobs", "patch deployments"]);
    await recordFigures("11-controller", { pushExitCode: cut.code, builds: 2, deploymentPatches: 1 });
  });

  it("case 10: a build failed by a registry outage and one by an evicted pod are retried without a human; an evaluation error is not", async () => {
    // The push step's own failure from a registry that keeps answering 503 (exit 75: try again later).
    const tm = join(bed.tmpDir, `tm-outage-ctl-${process.pid}`);
    const failed = await withProxy(async (proxy) => {
      proxy.failAlways(503);
      return push(proxy, uniqueRepo("faults-outage-ctl"), tm);
    });
    expect(failed.code).toBe(75);
    const outage = await readFile(tm, "utf8");
    const evalError = "error: build .#default failed (eval-failed): undefined variable 'pkgs' at /flake/flake.nix:3:5";
    const s = await faultScenario({
      prefix: "taxonomy",
      config: { build: { retry: { limit: 3, baseDelay: "1s", maxDelay: "4s" } } },
      kubelet: {
        outcome: (pod, earlier) => {
          const image = pod.metadata?.labels?.["niximage.io/image"];
          if (image === "outage" && earlier === 0) return { fail: { exitCode: 75, message: outage } };
          if (image === "evicted" && earlier === 0) return { evict: "The node was low on resource: memory." };
          if (image === "broken") return { fail: { step: "build", exitCode: 1, message: evalError } };
          return "succeed";
        },
      },
    });
    await s.startController("one");
    const startedAt = Date.now();
    await s.createImages(["outage", "evicted", "broken"]);
    await s.waitConverged(["outage", "evicted"], 90_000);
    const recoveryMs = Date.now() - startedAt;
    for (const name of ["outage", "evicted"]) {
      const image = await s.readImage(name);
      expect(image.status?.lastBuild, name).toMatchObject({ result: "Succeeded", number: 2 });
      expect(s.kubelet.buildsOf(s.namespace, name), name).toHaveLength(2);
    }
    // The transient ones were retried after >= 1 s (baseDelay); the evaluation error had as long and was not.
    const broken = await s.readImage("broken");
    expect(broken.status?.lastBuild).toMatchObject({ result: "Failed", number: 1 });
    expect(broken.status?.latestImage).toBeUndefined();
    expect(s.kubelet.buildsOf(s.namespace, "broken")).toHaveLength(1);
    expect((await kubeClients().batch.listNamespacedJob({ namespace: s.namespace, labelSelector: "niximage.io/image=broken" })).items).toHaveLength(1);
    await recordFigures("10-controller", {
      retryBaseDelay: "1s",
      transientRetried: { outage: 1, evicted: 1 },
      deterministicRetried: 0,
      convergedMs: recoveryMs,
      brokenReason: broken.status?.conditions?.find((c) => c.type === "Ready")?.reason,
    });
  });
  it("case 8: SIGTERM (then SIGKILL after the grace period) to the push step in the middle of a blob upload -> no image; the retry completes it", async () => {
    await withProxy(async (proxy) => {
      const repository = uniqueRepo("faults-sigterm-push");
      const cache = join(bed.tmpDir, `layer-cache-sigterm-${process.pid}`);
      const tm = join(bed.tmpDir, `tm-sigterm-${process.pid}`);
      const stall = proxy.stallBlobUploads();
      const child = spawn(
        process.execPath,
        [
          cliPath,
          "push-step",
          "--from",
          built,
          "--image",
          `${proxy.host}/${repository}`,
          "--plain-http",
          "--json",
          "--termination-message",
          tm,
          "--layer-cache",
          cache,
        ],
        { env: { ...process.env, ...bed.nix.env, PATH: "/nonexistent", LOG_LEVEL: "info" }, stdio: "ignore" },
      );
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
      await waitFor("a blob upload in flight", () => stall.stalled() > 0, { timeoutMs: 60_000 });
      const termAt = Date.now();
      child.kill("SIGTERM");
      // The kubelet's part: SIGKILL once the grace period is over (5 s here; Kubernetes' default is 30 s).
      const graceful = await Promise.race([exited, sleep(5_000).then(() => undefined)]);
      if (!graceful) child.kill("SIGKILL");
      const how = graceful ?? (await exited);
      const exitMs = Date.now() - termAt;
      expect(how.code === 0).toBe(false);
      stall.release();
      const tags = await fetch(`${bed.registry.plain.url}/v2/${repository}/tags/list`);
      expect(tags.status === 404 || ((await tags.json()) as { tags?: string[] | null }).tags == null).toBe(true);
      const retry = await push(proxy, repository, join(bed.tmpDir, `tm-sigterm-retry-${process.pid}`), cache);
      expect(retry.code, retry.stderr).toBe(0);
      const { digest } = lastJson<{ digest: string }>(retry.stdout);
      expect((await skopeoInspect(`${bed.registry.plain.host}/${repository}@${digest}`, plainAccess())).Digest).toBe(digest);
      await recordFigures("8-push", {
        exit: how,
        endedBy: graceful ? "SIGTERM" : "SIGKILL after the grace period",
        exitAfterSigtermMs: exitMs,
        retryMs: retry.ms,
      });
    });
  });
});
