// The NixImage controller against the real test bed (kube-apiserver, etcd, kube-controller-manager)
// with the Helm chart's exact RBAC. Builder pods never run here (no kubelet): the harness plays
// the kubelet and the real Job controller turns pod results into Job results.
import { randomBytes } from "node:crypto";
import type { KubernetesObject, V1Job } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it, onTestFinished } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { kubeClients, testNamespace, waitFor } from "../support/kube.ts";
import {
  buildJobs,
  chartServiceAccount,
  finishBuildPod,
  installTestCrd,
  OffsetClock,
  pushResult,
  startTestOperator,
  waitForBuildPod,
  waitForJob,
} from "../support/operator-harness.ts";

type NixImageObject = KubernetesObject & { spec: Record<string, unknown>; status?: NixImageStatus };

const repository = "127.0.0.1:5000/shop/web";
const hex = (seed: string) => (seed.repeat(64) + "0".repeat(64)).slice(0, 64);

async function createNixImage(namespace: string, name: string, spec: Record<string, unknown>): Promise<NixImageObject> {
  return kubeRequestJson<NixImageObject>(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
    body: { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", metadata: { name }, spec: { image: { repository }, ...spec } },
  });
}

async function readNixImage(namespace: string, name: string): Promise<NixImageObject> {
  return kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/${name}`);
}

async function patchNixImage(namespace: string, name: string, patch: object): Promise<void> {
  await kubeRequestJson(kubeClients().kc, "PATCH", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/${name}`, {
    body: patch,
    contentType: "application/merge-patch+json",
  });
}

function condition(image: NixImageObject, type: string) {
  return image.status?.conditions?.find((c) => c.type === type);
}

async function waitForStatus(namespace: string, name: string, what: string, test: (image: NixImageObject) => boolean): Promise<NixImageObject> {
  return waitFor(
    `NixImage ${namespace}/${name}: ${what}`,
    async () => {
      const image = await readNixImage(namespace, name);
      return test(image) ? image : undefined;
    },
    { timeoutMs: 30_000 },
  );
}

async function events(namespace: string, reason: string) {
  const { core } = kubeClients();
  return (await core.listNamespacedEvent({ namespace })).items.filter((e) => e.reason === reason);
}

describe("NixImage controller", () => {
  let flake: Awaited<ReturnType<typeof createGitRepo>>;
  beforeAll(async () => {
    await installTestCrd();
    flake = await createGitRepo(minimalFlake({ marker: "v1" }), { prefix: "controller" });
  });

  it("first build: a Job with the documented shape, then status from the push result; then no writes while nothing changes", async () => {
    const namespace = await testNamespace("ctl-first");
    const access = await chartServiceAccount();
    const operator = await startTestOperator({ access, namespaces: [namespace] });
    await kubeClients().core.createNamespacedSecret({
      namespace,
      body: {
        // The Secret opts in to the NixImages that may push with it (push-secret-consent.ts).
        metadata: { name: "regcred", annotations: { "niximage.io/allowed-images": "web" } },
        type: "kubernetes.io/dockerconfigjson",
        data: { ".dockerconfigjson": Buffer.from('{"auths":{}}').toString("base64") },
      },
    });
    await createNixImage(namespace, "web", { flake: flake.flakeUrl, image: { repository, pushSecretRef: { name: "regcred" } } });

    const job = await waitForJob(namespace, "web-build-1");
    const pod = job.spec!.template.spec!;
    expect(job.metadata?.annotations?.["niximage.io/reasons"]).toBe("SpecChanged");
    expect(job.metadata?.ownerReferences?.[0]).toMatchObject({ kind: "NixImage", name: "web", controller: true });
    expect(job.spec).toMatchObject({ backoffLimit: 0, podReplacementPolicy: "Failed", activeDeadlineSeconds: 3600 });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.initContainers!.map((c) => c.name)).toEqual(["prepare", "build"]);
    expect(pod.containers.map((c) => c.name)).toEqual(["push", "stream"]);
    const build = pod.initContainers![1]!;
    expect(build.args).toEqual(expect.arrayContaining(["build-step", "--flake", flake.flakeUrl, "--attribute", "default"]));
    // A literal HOME (the root filesystem is read-only), nothing from a Secret or ConfigMap.
    expect(build.env).toEqual([{ name: "HOME", value: "/tmp" }]);
    expect(build.envFrom).toBeUndefined();
    expect(build.volumeMounts!.map((m) => m.name)).not.toContain("push-secret");
    expect(pod.containers[0]!.volumeMounts!.map((m) => m.name)).toContain("push-secret");
    // streamLayeredImage scripts (flake code) run in the stream step: no Secret there either.
    expect(pod.containers[1]!.volumeMounts!.map((m) => m.name)).not.toContain("push-secret");

    const pvcs = await kubeClients().core.listNamespacedPersistentVolumeClaim({ namespace });
    expect(pvcs.items.map((p) => [p.metadata?.name, p.metadata?.annotations?.["niximage.io/lease-holder"]])).toEqual([["niximage-store-0", "web-build-1"]]);

    await finishBuildPod(namespace, "web-build-1", { succeed: { message: pushResult(repository, hex("a"), flake.rev) } });
    const done = await waitForStatus(namespace, "web", "Ready", (i) => condition(i, "Ready")?.status === "True");
    expect(done.status).toMatchObject({
      latestImage: `${repository}@sha256:${hex("a")}`,
      latestRevision: { rev: flake.rev },
      lastBuild: { job: "web-build-1", number: 1, result: "Succeeded", reasons: ["SpecChanged"], layers: { pushed: 1, skipped: 3 }, bytesPushed: 1234 },
      observedGeneration: 1,
    });
    expect(condition(done, "Stalled")?.status).toBe("False");
    // Events and metrics follow the status write (a stale reconcile announces nothing): the
    // reconcile that wrote it is done once the operator is idle.
    await operator.idle();
    expect((await events(namespace, "BuildSucceeded")).length).toBe(1);
    // /metrics over HTTP, as Prometheus scrapes it.
    const metrics = await (await fetch(`http://127.0.0.1:${operator.health!.port}/metrics`)).text();
    expect(metrics).toMatch(/^niximage_builds_total\{kind="Image",result="Succeeded"\} 1$/m);
    expect(metrics).toMatch(/^niximage_build_phase_seconds_count\{kind="Image",phase="build"\} 1$/m);
    expect(metrics).toMatch(/^controller_reconcile_total\{controller="niximage",result="[a-z_]+"\} \d+$/m);
    expect(await (await fetch(`http://127.0.0.1:${operator.health!.port}/readyz`)).text()).toMatch(/ok/);

    // Nothing changed: reconciles happen, but no Job, no status write, no write at all.
    await operator.idle();
    const before = { rv: (await readNixImage(namespace, "web")).metadata?.resourceVersion, writes: new Map(operator.writes) };
    for (let i = 0; i < 3; i++) {
      operator.enqueueAll();
      await operator.idle();
    }
    expect((await readNixImage(namespace, "web")).metadata?.resourceVersion).toBe(before.rv);
    expect(operator.writes).toEqual(before.writes);
    expect((await buildJobs(namespace)).length).toBe(1);
  });

  it("revision change from a new commit, manual rebuild, and a failure that keeps the previous image", async () => {
    const namespace = await testNamespace("ctl-triggers");
    const repo = await createGitRepo(minimalFlake({ marker: "one" }), { prefix: "ctl-rev" });
    const access = await chartServiceAccount();
    const clock = new OffsetClock();
    const operator = await startTestOperator({ access, namespaces: [namespace], clock });
    await createNixImage(namespace, "app", { flake: repo.flakeUrl, triggers: { interval: "1m" } });

    // The first build is pinned to the commit the poll found.
    const first = await waitForJob(namespace, "app-build-1");
    expect(first.metadata?.annotations?.["niximage.io/revision"]).toContain(repo.rev);
    await finishBuildPod(namespace, "app-build-1", { succeed: { message: pushResult(repository, hex("1"), repo.rev) } });
    await waitForStatus(namespace, "app", "first image", (i) => i.status?.latestImage?.endsWith(hex("1")) ?? false);

    // Same commit, interval passed: one poll, no build.
    clock.advance(70_000);
    operator.enqueueAll();
    await operator.idle();
    expect((await buildJobs(namespace)).length).toBe(1);

    // A new commit: the next poll sees it and builds exactly that revision.
    const second = await repo.commit({ "message.txt": "two" });
    clock.advance(70_000);
    operator.enqueueAll();
    const job2 = await waitForJob(namespace, "app-build-2");
    expect(job2.metadata?.annotations?.["niximage.io/reasons"]).toBe("RevisionChanged");
    expect(job2.metadata?.annotations?.["niximage.io/revision"]).toContain(second);
    await finishBuildPod(namespace, "app-build-2", { succeed: { message: pushResult(repository, hex("2"), second) } });
    await waitForStatus(namespace, "app", "second image", (i) => i.status?.latestImage?.endsWith(hex("2")) ?? false);

    // Manual rebuild that fails in the build step: Stalled with details, the image stays.
    await patchNixImage(namespace, "app", { metadata: { annotations: { "niximage.io/rebuild": "try-1" } } });
    const job3 = await waitForJob(namespace, "app-build-3");
    expect(job3.metadata?.annotations?.["niximage.io/reasons"]).toBe("RebuildRequested");
    await finishBuildPod(namespace, "app-build-3", {
      fail: { step: "build", exitCode: 1, message: "error: builder for '/nix/store/x-app.drv' failed with exit code 2" },
    });
    const stalled = await waitForStatus(namespace, "app", "Stalled", (i) => condition(i, "Stalled")?.status === "True");
    expect(stalled.status?.latestImage).toBe(`${repository}@sha256:${hex("2")}`);
    expect(stalled.status?.lastBuild).toMatchObject({ job: "app-build-3", result: "Failed", failure: { step: "build", exitCode: 1 } });
    expect(stalled.status?.lastBuild?.failure?.message).toContain("failed with exit code 2");
    expect(condition(stalled, "Ready")).toMatchObject({ status: "False", reason: "BuildFailed" });
    expect(condition(stalled, "Stalled")?.message).toContain("stays in use");
    await operator.idle(); // events follow the status write
    expect((await events(namespace, "BuildFailed"))[0]?.message).toContain("step build (exit 1)");

    // The failure is not retried in a loop: the same inputs start no new build.
    clock.advance(70_000);
    operator.enqueueAll();
    await operator.idle();
    expect((await buildJobs(namespace)).length).toBe(3);
  });

  it("two NixImages never share a store volume; the second waits, then reuses it", async () => {
    const namespace = await testNamespace("ctl-volumes");
    const access = await chartServiceAccount();
    const operator = await startTestOperator({ access, namespaces: [namespace], config: { store: { poolSize: 1 } } });
    await createNixImage(namespace, "a", { flake: flake.flakeUrl });
    await createNixImage(namespace, "b", { flake: flake.flakeUrl });
    const first = await waitFor("one builder Job", async () => ((await buildJobs(namespace)).length === 1 ? (await buildJobs(namespace))[0] : undefined));
    const waiting = first.metadata!.labels!["niximage.io/image"] === "a" ? "b" : "a";
    const blocked = await waitForStatus(namespace, waiting, "waiting for a volume", (i) => condition(i, "Reconciling")?.reason === "WaitingForStoreVolume");
    expect(condition(blocked, "Reconciling")?.status).toBe("True");
    expect(condition(blocked, "Reconciling")?.message).toContain("store volumes of this namespace are in use");
    await operator.idle();
    expect((await buildJobs(namespace)).length).toBe(1);

    await finishBuildPod(namespace, first.metadata!.name!, { succeed: { message: pushResult(repository, hex("c"), flake.rev) } });
    const second = await waitForJob(namespace, `${waiting}-build-1`);
    const volumeOf = (job: V1Job) => job.spec!.template.spec!.volumes!.find((v) => v.name === "store")!.persistentVolumeClaim!.claimName;
    expect(volumeOf(second)).toBe(volumeOf(first));
    const firstNow = (await buildJobs(namespace)).find((j) => j.metadata?.name === first.metadata?.name);
    expect(firstNow?.status?.succeeded).toBe(1);
  });

  it("a store volume stays leased while the failed Job's pod is still terminating; freed once the pod is gone", async () => {
    const namespace = await testNamespace("ctl-lease-pod");
    const access = await chartServiceAccount();
    const operator = await startTestOperator({ access, namespaces: [namespace], config: { store: { poolSize: 1 } } });
    const { core, batch } = kubeClients();
    await createNixImage(namespace, "a", { flake: flake.flakeUrl, build: { timeout: "1m" } });
    await waitForJob(namespace, "a-build-1");
    // Bind the pod to a node that has no kubelet: deleting it then leaves it terminating (nothing confirms the kill).
    const nodeName = `ghost-${namespace}`.slice(0, 63);
    await core.createNode({ body: { metadata: { name: nodeName, labels: { "testbed.niximage.io/run": "x" } } } });
    onTestFinished(async () => {
      await core.deleteNode({ name: nodeName }).catch(() => undefined);
    });
    const pod = await waitForBuildPod(namespace, "a-build-1");
    await core.createNamespacedPodBinding({
      namespace,
      name: pod.metadata!.name!,
      body: { metadata: { name: pod.metadata!.name! }, target: { apiVersion: "v1", kind: "Node", name: nodeName } },
    });
    await createNixImage(namespace, "b", { flake: flake.flakeUrl });
    await waitForStatus(namespace, "b", "waiting for the volume", (i) => condition(i, "Reconciling")?.reason === "WaitingForStoreVolume");

    // The build's deadline passes: the Job controller marks it failed and deletes the pod, which stays terminating.
    await waitFor(
      "a-build-1 failed by its deadline",
      async () => (await batch.readNamespacedJob({ namespace, name: "a-build-1" })).status?.conditions?.some((c) => c.reason === "DeadlineExceeded"),
      { timeoutMs: 120_000 },
    );
    await waitFor("the pod terminating", async () => (await core.readNamespacedPod({ namespace, name: pod.metadata!.name! })).metadata?.deletionTimestamp);
    await waitForStatus(namespace, "a", "a's build failed", (i) => i.status?.lastBuild?.result === "Failed");
    operator.enqueueAll();
    await operator.idle();
    expect((await buildJobs(namespace)).map((j) => j.metadata?.name)).toEqual(["a-build-1"]);
    expect(condition(await readNixImage(namespace, "b"), "Reconciling")?.reason).toBe("WaitingForStoreVolume");

    // The pod is gone (the node confirms, or someone forces it): the volume is free, b builds on it.
    await core.deleteNamespacedPod({ namespace, name: pod.metadata!.name!, gracePeriodSeconds: 0 });
    const b = await waitForJob(namespace, "b-build-1");
    expect(b.spec!.template.spec!.volumes!.find((v) => v.name === "store")!.persistentVolumeClaim!.claimName).toBe("niximage-store-0");
  });

  it("a restarted controller adopts the running build instead of starting another", async () => {
    const namespace = await testNamespace("ctl-restart");
    const access = await chartServiceAccount();
    const one = await startTestOperator({ access, namespaces: [namespace] });
    await createNixImage(namespace, "web", { flake: flake.flakeUrl });
    await waitForJob(namespace, "web-build-1");
    await one.idle();
    await one.stop();

    const two = await startTestOperator({ access, namespaces: [namespace] });
    await two.idle();
    expect((await buildJobs(namespace)).map((j) => j.metadata?.name)).toEqual(["web-build-1"]);
    await finishBuildPod(namespace, "web-build-1", { succeed: { message: pushResult(repository, hex("d"), flake.rev) } });
    await waitForStatus(namespace, "web", "Ready", (i) => condition(i, "Ready")?.status === "True");
    expect((await buildJobs(namespace)).length).toBe(1);
  });

  it("suspend stops new builds; deletion removes the builds and frees the volume", async () => {
    const namespace = await testNamespace("ctl-suspend");
    const access = await chartServiceAccount();
    const operator = await startTestOperator({ access, namespaces: [namespace] });
    await createNixImage(namespace, "web", { flake: flake.flakeUrl, suspend: true });
    await waitForStatus(namespace, "web", "Suspended", (i) => condition(i, "Ready")?.reason === "Suspended");
    await operator.idle();
    expect((await buildJobs(namespace)).length).toBe(0);

    await patchNixImage(namespace, "web", { spec: { suspend: false } });
    await waitForJob(namespace, "web-build-1");
    await kubeRequestJson(kubeClients().kc, "DELETE", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`);
    // The garbage collector (kube-controller-manager) removes the owned Job.
    await waitFor("builder Jobs garbage-collected", async () => (await buildJobs(namespace)).length === 0, { timeoutMs: 60_000 });
  });

  it("a write the API server refuses (a name too long for a label) reaches status: Stalled/JobRejected, one Warning Event, no build recorded", async () => {
    const namespace = await testNamespace("ctl-rejected");
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    // Valid as an object name (<= 253), too long for the niximage.io/image label value (<= 63).
    const name = `web-${"x".repeat(70)}`;
    await createNixImage(namespace, name, { flake: flake.flakeUrl });
    const image = await waitForStatus(namespace, name, "Stalled/JobRejected", (i) => condition(i, "Stalled")?.reason === "JobRejected");
    expect(condition(image, "Stalled")?.status).toBe("True");
    expect(condition(image, "Ready")).toMatchObject({ status: "False", reason: "JobRejected" });
    expect(condition(image, "Ready")?.message).toMatch(/creating Job .* failed: 422 .*metadata.labels/);
    expect(image.status?.lastBuild).toBeUndefined();
    expect(image.status?.buildCount ?? 0).toBe(0);
    expect(await buildJobs(namespace)).toEqual([]);
    await operator.idle();
    // Not retried in a loop: a refused write waits (the next try is minutes away); the store
    // volume leased for it is given back.
    expect(operator.writes.get("POST jobs")).toBe(1);
    operator.enqueueAll();
    await operator.idle();
    expect(operator.writes.get("POST jobs")).toBe(1);
    const pvcs = (await kubeClients().core.listNamespacedPersistentVolumeClaim({ namespace })).items;
    expect(pvcs.map((p) => p.metadata?.annotations?.["niximage.io/lease-holder"] ?? "")).toEqual([""]);
    expect((await events(namespace, "JobRejected")).length).toBe(1);
  });

  it("failure taxonomy: a registry outage in the push step (exit 75) is retried with backoff and counted; then Ready", async () => {
    const namespace = await testNamespace("ctl-transient");
    const operator = await startTestOperator({
      access: await chartServiceAccount(),
      namespaces: [namespace],
      config: { build: { retry: { baseDelay: "1s" } } },
    });
    await createNixImage(namespace, "web", { flake: flake.flakeUrl });
    await waitForJob(namespace, "web-build-1");
    await finishBuildPod(namespace, "web-build-1", { fail: { step: "push", exitCode: 75, message: "PUT blob: HTTP 503 Service Unavailable" } });
    const retried = await waitForJob(namespace, "web-build-2");
    expect(retried.metadata?.annotations).toMatchObject({ "niximage.io/reasons": "Retry", "niximage.io/attempt": "2" });
    const running = await waitForStatus(namespace, "web", "attempt 2 running", (i) => i.status?.lastBuild?.job === "web-build-2");
    expect(running.status?.lastBuild).toMatchObject({ attempt: 2, result: "Running" });
    await finishBuildPod(namespace, "web-build-2", { succeed: { message: pushResult(repository, hex("7"), flake.rev) } });
    const ready = await waitForStatus(namespace, "web", "Ready", (i) => condition(i, "Ready")?.status === "True");
    expect(ready.status).toMatchObject({ latestImage: `${repository}@sha256:${hex("7")}`, lastBuild: { job: "web-build-2", attempt: 2 } });
    await operator.idle();
    expect((await buildJobs(namespace)).length).toBe(2);
  });

  it("failure taxonomy: a builder pod deleted mid-build means one rebuild; a result lost with its pod never leaves Ready=True", async () => {
    const namespace = await testNamespace("ctl-lost");
    const access = await chartServiceAccount();
    const config = { build: { retry: { baseDelay: "1s" } } };
    const operator = await startTestOperator({ access, namespaces: [namespace], config });
    await createNixImage(namespace, "web", { flake: flake.flakeUrl });
    await waitForJob(namespace, "web-build-1");
    // The pod goes (node lost, someone deleted it): the Job fails without a pod to say why.
    const pod = await waitForBuildPod(namespace, "web-build-1");
    await kubeClients().core.deleteNamespacedPod({ namespace, name: pod.metadata!.name! });
    const second = await waitForJob(namespace, "web-build-2");
    expect(second.metadata?.annotations?.["niximage.io/reasons"]).toBe("Retry");
    const failed = await readNixImage(namespace, "web");
    expect(condition(failed, "Ready")?.status).not.toBe("True");

    // The retry succeeds, but its pod is deleted before the (stopped) operator reads the result.
    await operator.stop();
    await finishBuildPod(namespace, "web-build-2", { succeed: { message: pushResult(repository, hex("8"), flake.rev) } });
    await waitFor("web-build-2 complete", async () =>
      (await kubeClients().batch.readNamespacedJob({ namespace, name: "web-build-2" })).status?.conditions?.some(
        (c) => c.type === "Complete" && c.status === "True",
      ),
    );
    const pod2 = await waitForBuildPod(namespace, "web-build-2");
    await kubeClients().core.deleteNamespacedPod({ namespace, name: pod2.metadata!.name!, gracePeriodSeconds: 0 });
    await waitFor("pod of web-build-2 gone", async () =>
      (await kubeClients().core.listNamespacedPod({ namespace, labelSelector: "batch.kubernetes.io/job-name=web-build-2" })).items.length === 0
        ? true
        : undefined,
    );
    const restarted = await startTestOperator({ access, namespaces: [namespace], config });
    const lost = await waitForStatus(namespace, "web", "the lost result is a transient failure", (i) => i.status?.lastBuild?.failure?.reason === "ResultLost");
    expect(lost.status?.lastBuild).toMatchObject({ job: "web-build-2", result: "Failed", failure: { transient: true } });
    expect(lost.status?.latestImage).toBeUndefined();
    expect(condition(lost, "Ready")?.status).not.toBe("True");
    await waitForJob(namespace, "web-build-3");
    await restarted.idle();
    expect((await readNixImage(namespace, "web")).status?.lastBuild).toMatchObject({ job: "web-build-3", attempt: 3 });
  });

  it("leader election: only the leader acts; a standby takes over when it stops", async () => {
    const namespace = await testNamespace("ctl-leader");
    const access = await chartServiceAccount();
    const first = await startTestOperator({ access, namespaces: [namespace], leaderElection: true, identity: "first" });
    await waitFor("first leads", async () => first.isLeader());
    const second = await startTestOperator({ access, namespaces: [namespace], leaderElection: true, identity: "second" });
    await createNixImage(namespace, "web", { flake: flake.flakeUrl });
    await waitForJob(namespace, "web-build-1");
    await first.idle();
    expect(second.isLeader()).toBe(false);
    expect([...second.writes.values()].reduce((a, b) => a + b, 0)).toBe(0);

    const stoppedAt = Date.now();
    await first.stop();
    await waitFor("second takes over", async () => second.isLeader(), { timeoutMs: 10_000 });
    expect(Date.now() - stoppedAt).toBeLessThan(8_000);
    await createNixImage(namespace, `other-${randomBytes(2).toString("hex")}`, { flake: flake.flakeUrl });
    await waitFor("second acts", async () => (await buildJobs(namespace)).length === 2, { timeoutMs: 30_000 });
  });
});
