// Issue 14 follow-up: the cluster binary cache never fails or delays an image build. The real
// controller (chart RBAC) with config.binaryCache pointing at a cache that refuses uploads; the
// cache step's termination messages are those of the real cache-step process run against that
// cache (and against a missing build result: a cache step that fails outright, exit 1). Playing
// the kubelet, the test finishes the push step first, with the cache step still running:
//   - the build's result is taken at once (latestImage, BuildSucceeded, rollout) while the Job runs;
//   - then the cache step ends without copying: one Warning Event CacheCopyFailed saying what
//     failed and what to do, no secret in it; the build stays Succeeded, no BuildFailed, no retry;
//   - a cache step that fails the pod (exit 1, Job Failed) does not fail the build either;
//   - a restarted controller does not say CacheCopyFailed again.
import { randomBytes } from "node:crypto";
import { appendFile, mkdir, readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { KubernetesObject, V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { cacheResultSchema } from "../../src/builder/step-results.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { fixtureRepo, runCli } from "../support/builder-fixtures.ts";
import { apply, kubeClients, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount, installTestCrd, pushResult, startTestOperator, waitForBuildPod, waitForJob } from "../support/operator-harness.ts";
import { run } from "../support/process.ts";

type NixImageObject = KubernetesObject & { status?: NixImageStatus };
const bed = testbed();
const repository = "127.0.0.1:5000/shop/web";
let work = "";
let refusing: Server;
let cacheUrl = "";
let signing: { secretFile: string; secret: string; publicKey: string };
/** The real cache step's termination messages: a copy the cache refused (exit 0), a step that failed outright (exit 1). */
const cacheStep: Record<"refused" | "broken", { code: number; message: string; uploads: number }> = {
  refused: { code: -1, message: "", uploads: 0 },
  broken: { code: -1, message: "", uploads: 0 },
};
let requests = 0;

beforeAll(async () => {
  await installTestCrd();
  work = join(bed.tmpDir, "cache-copy", randomBytes(4).toString("hex"));
  await mkdir(work, { recursive: true });
  // A binary cache that refuses every upload (wrong credentials, say): 403 to everything.
  refusing = createServer((req, res) => {
    requests++;
    req.resume();
    res.writeHead(403, { "Content-Type": "text/plain" }).end("forbidden\n");
  });
  await new Promise<void>((resolve) => refusing.listen(0, "127.0.0.1", resolve));
  cacheUrl = `http://127.0.0.1:${(refusing.address() as AddressInfo).port}/nix-cache`;
  const nixEnv = { ...process.env, ...bed.nix.env };
  const secret = (await run("nix", ["key", "generate-secret", "--key-name", "testbed-cache-copy-1"], { env: nixEnv })).stdout;
  signing = {
    secretFile: join(work, "secret-key"),
    secret: secret.trim(),
    publicKey: (await run("nix", ["key", "convert-secret-to-public"], { env: nixEnv, input: secret })).stdout.trim(),
  };
  await appendFile(signing.secretFile, secret, { mode: 0o600 });
  const hello = await fixtureRepo("hello");
  const built = join(work, "result");
  const b = await runCli(bed, ["build-step", "--flake", hello.flakeUrl, "--attribute", "default", "--out", built]);
  if (b.code !== 0) throw new Error(`build-step failed: ${b.stderr}`);
  for (const [name, from] of [
    ["refused", built],
    ["broken", join(work, "no-result")],
  ] as const) {
    const tm = join(work, `tm-${name}`);
    const before = requests;
    const r = await runCli(bed, ["cache-step", "--from", from, "--to", cacheUrl, "--secret-key-file", signing.secretFile, "--termination-message", tm]);
    cacheStep[name] = { code: r.code ?? -1, message: await readFile(tm, "utf8"), uploads: requests - before };
  }
}, 300_000);
afterAll(() => new Promise<void>((resolve) => (refusing ? refusing.close(() => resolve()) : resolve())));

const terminated = (name: string, exitCode: number, message?: string) => ({
  name,
  ready: false,
  restartCount: 0,
  image: `${name}.test/image:1`,
  imageID: "",
  state: {
    terminated: {
      exitCode,
      reason: exitCode === 0 ? "Completed" : "Error",
      ...(message ? { message } : {}),
      startedAt: new Date().toISOString(),
      finishedAt: new Date().toISOString(),
    },
  },
});
const running = (name: string) => ({
  name,
  ready: true,
  started: true,
  restartCount: 0,
  image: `${name}.test/image:1`,
  imageID: "",
  state: { running: { startedAt: new Date().toISOString() } },
});

/** Sets the builder pod's status as its kubelet would. */
async function setPodStatus(namespace: string, pod: V1Pod, phase: string, containers: object[]) {
  await kubeRequestJson(kubeClients().kc, "PATCH", `/api/v1/namespaces/${namespace}/pods/${pod.metadata!.name}/status`, {
    body: { status: { phase, initContainerStatuses: [terminated("prepare", 0), terminated("build", 0)], containerStatuses: containers } },
    contentType: "application/merge-patch+json",
  });
}

describe("the cluster binary cache never fails or delays the image", () => {
  it("the real cache step against a refusing cache: exit 0 with copied false; without a build result: exit 1", () => {
    expect(cacheStep.refused.code).toBe(0);
    const refused = cacheResultSchema.parse(JSON.parse(cacheStep.refused.message));
    expect(refused).toMatchObject({ cache: cacheUrl, copied: false });
    expect(refused.error).toBeTruthy();
    expect(cacheStep.refused.uploads).toBeGreaterThan(0);
    expect(cacheStep.broken.code).toBe(1);
    expect(cacheStep.broken.message).toContain("result.json");
    expect(cacheStep.refused.message + cacheStep.broken.message).not.toContain(signing.secret.split(":")[1]);
  });

  it("result at push exit 0 while the cache step runs; one CacheCopyFailed per build; exit 1 of the cache step fails nothing", async () => {
    const namespace = await testNamespace("cache-copy");
    const config = { binaryCache: { url: cacheUrl, publicKeys: [signing.publicKey], signingKeySecret: { name: "nix-cache-key" } } };
    const access = await chartServiceAccount();
    let operator = await startTestOperator({ access, namespaces: [namespace], config });
    const repo = await fixtureRepo("hello");
    await apply({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace, annotations: { "niximage.io/from": "web" } },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: "web" } },
        template: { metadata: { labels: { app: "web" } }, spec: { containers: [{ name: "web", image: "busybox:1" }] } },
      },
    });
    await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
      body: { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", metadata: { name: "web" }, spec: { flake: repo.flakeUrl, image: { repository } } },
    });
    const read = () => kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`);
    const events = async (reason: string) => (await kubeClients().core.listNamespacedEvent({ namespace })).items.filter((e) => e.reason === reason);

    const job = await waitForJob(namespace, "web-build-1");
    expect(job.spec!.template.spec!.containers.map((c) => c.name)).toContain("cache");
    const pod = await waitForBuildPod(namespace, "web-build-1");
    const rev = "a".repeat(40);
    const digestHex = "e".repeat(64);
    // Push done, the cache copy still running: the pod (and so the Job) runs on.
    await setPodStatus(namespace, pod, "Running", [running("cache"), terminated("push", 0, pushResult(repository, digestHex, rev))]);
    const taken = await waitFor("the build's result taken while the cache step runs", async () => {
      const image = await read();
      return image.status?.lastBuild?.result === "Succeeded" ? image : undefined;
    });
    expect(taken.status?.latestImage).toBe(`${repository}@sha256:${digestHex}`);
    const jobNow = await kubeClients().batch.readNamespacedJob({ namespace, name: "web-build-1" });
    expect(jobNow.status?.conditions?.some((c) => c.type === "Complete" && c.status === "True") ?? false).toBe(false);
    await waitFor("rolled out while the cache step runs", async () => {
      const d = await kubeClients().apps.readNamespacedDeployment({ namespace, name: "web" });
      return d.spec?.template.spec?.containers[0]?.image === `${repository}@sha256:${digestHex}` ? d : undefined;
    });
    expect(await events("BuildSucceeded")).toHaveLength(1);
    expect(await events("CacheCopyFailed")).toHaveLength(0);

    // The cache step ends without copying (the real step's message): one Warning Event, the build untouched.
    await setPodStatus(namespace, pod, "Succeeded", [
      terminated("cache", cacheStep.refused.code, cacheStep.refused.message),
      terminated("push", 0, pushResult(repository, digestHex, rev)),
    ]);
    const [event] = await waitFor("a CacheCopyFailed Event", async () => {
      const found = await events("CacheCopyFailed");
      return found.length > 0 ? found : undefined;
    });
    console.log(`[figure] CacheCopyFailed: ${event!.message}`);
    expect(event!.type).toBe("Warning");
    expect(event!.involvedObject.name).toBe("web");
    expect(event!.message).toContain(`build web-build-1: copying the closure to the binary cache ${cacheUrl} failed`);
    expect(event!.message).toContain("What to do: check config.binaryCache");
    expect(event!.message).toContain(`kubectl logs -n ${namespace} job/web-build-1 -c cache`);
    expect(event!.message).not.toContain(signing.secret.split(":")[1]);
    expect(event!.message).not.toContain(signing.secretFile);
    await waitFor("the Job complete", async () => {
      const j = await kubeClients().batch.readNamespacedJob({ namespace, name: "web-build-1" });
      return j.status?.conditions?.some((c) => c.type === "Complete" && c.status === "True") ? j : undefined;
    });
    operator.enqueueAll();
    await operator.idle();
    const after = await read();
    expect(after.status?.lastBuild).toMatchObject({ job: "web-build-1", result: "Succeeded" });
    expect(after.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    expect(await events("CacheCopyFailed")).toHaveLength(1);
    expect(await events("BuildFailed")).toHaveLength(0);

    // A restarted controller finds the Event said already (its name is fixed per build).
    await operator.stop();
    operator = await startTestOperator({ access, namespaces: [namespace], config });
    operator.enqueueAll();
    await operator.idle();
    expect(await events("CacheCopyFailed")).toHaveLength(1);

    // Build 2: a cache step that fails outright (exit 1) fails the pod and the Job; the build does not fail.
    await kubeRequestJson(kubeClients().kc, "PATCH", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`, {
      body: { metadata: { annotations: { "niximage.io/rebuild": "cache-copy-2" } } },
      contentType: "application/merge-patch+json",
    });
    const pod2 = await waitForBuildPod(namespace, "web-build-2");
    const digest2 = "f".repeat(64);
    await setPodStatus(namespace, pod2, "Failed", [
      terminated("cache", cacheStep.broken.code, cacheStep.broken.message),
      terminated("push", 0, pushResult(repository, digest2, rev)),
    ]);
    await waitFor("the Job failed (by its cache step)", async () => {
      const j = await kubeClients().batch.readNamespacedJob({ namespace, name: "web-build-2" });
      return j.status?.conditions?.some((c) => c.type === "Failed" && c.status === "True") ? j : undefined;
    });
    const second = await waitFor("build 2 recorded", async () => {
      const image = await read();
      return image.status?.lastBuild?.job === "web-build-2" && image.status.lastBuild.result !== "Running" ? image : undefined;
    });
    expect(second.status?.lastBuild?.result).toBe("Succeeded");
    expect(second.status?.latestImage).toBe(`${repository}@sha256:${digest2}`);
    await waitFor("a second CacheCopyFailed Event", async () => ((await events("CacheCopyFailed")).length === 2 ? true : undefined));
    const byJob = (await events("CacheCopyFailed")).find((e) => e.message?.includes("web-build-2"));
    expect(byJob?.message).toContain("result.json");
    operator.enqueueAll();
    await operator.idle();
    expect(await events("BuildFailed")).toHaveLength(0);
    expect(await events("CacheCopyFailed")).toHaveLength(2);
    // No retry of a build whose image is there.
    expect((await kubeClients().batch.listNamespacedJob({ namespace })).items.map((j) => j.metadata?.name).sort()).toEqual(["web-build-1", "web-build-2"]);
  });
});
