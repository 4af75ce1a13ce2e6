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
import { fixtureRepo, lastJson, messageLines, plainAccess, runCli, skopeoInspect, uniqueRepo } from "../support/builder-fixtures.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { kubeClients, testbed, waitFor } from "../support/kube.ts";
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

  it("case 11: a build whose push was cut before the manifest -> no digest in status, no rollout", async () => {
    // The push step's own failure message, from a real cut push.
    const tm = join(bed.tmpDir, `tm-partial-ctl-${process.pid}`);
    await withProxy(async (proxy) => {
      proxy.cutManifestPuts();
      const r = await push(proxy, uniqueRepo("faults-partial-ctl"), tm);
      expect(r.code).not.toBe(0);
    });
    const message = await readFile(tm, "utf8");
    const s = await faultScenario({ prefix: "partial", kubelet: { outcome: () => ({ fail: { exitCode: 1, message } }) } });
    await s.startController("one");
    await s.createImages(["p1"]);
    await waitFor("the build's failure in status", async () => (await s.readImage("p1")).status?.lastBuild?.result === "Failed", { timeoutMs: 60_000 });
    const image = await s.readImage("p1");
    expect(image.status?.latestImage).toBeUndefined();
    expect(image.status?.conditions?.find((c) => c.type === "Ready")?.status).not.toBe("True");
    const d = await kubeClients().apps.readNamespacedDeployment({ namespace: s.namespace, name: "p1" });
    expect(d.spec?.template.spec?.containers[0]?.image).toBe("busybox:1");
    expect((await s.operatorWrites((w) => w.resource === "deployments")).length).toBe(0);
  });
});
