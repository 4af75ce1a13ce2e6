// jobView over Job and Pod objects shaped like what the API server returns (kube-controller-manager
// 1.3x conditions, kubelet container statuses with termination messages).
import type { V1Job, V1Pod } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { cacheCopyFailedMessage, failedStep, jobView } from "../../src/controller/job-outcome.ts";

const jobUid = "5d3c8a0e-1111-4c7b-8a55-0123456789ab";
const digest = `sha256:${"b".repeat(64)}`;
const rev = "c".repeat(40);

function job(name: string, kind: "Image" | "Warm", status: V1Job["status"]): V1Job {
  const number = name.split("-").pop()!;
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name,
      namespace: "shop",
      uid: jobUid,
      resourceVersion: "4711",
      creationTimestamp: new Date("2026-11-22T09:00:00Z"),
      labels: {
        "app.kubernetes.io/managed-by": "nix-image-operator",
        "niximage.io/image": "web",
        "niximage.io/build-kind": kind,
        "niximage.io/build-number": number,
      },
      annotations: {
        "niximage.io/reasons": "RevisionChanged,RebuildRequested",
        "niximage.io/spec-hash": "0123456789abcdef",
        "niximage.io/builder-hash": "fedcba9876543210",
        "niximage.io/rebuild-token": "2026-11-22",
        "niximage.io/revision": `github:acme/shop/${rev}`,
        "niximage.io/requested-at": "2026-11-22T09:00:00Z",
      },
    },
    spec: {
      backoffLimit: 0,
      template: {
        spec: {
          restartPolicy: "Never",
          initContainers: [{ name: "prepare" }, { name: "build" }],
          containers: [{ name: kind === "Warm" ? "report" : "push" }],
          volumes: [
            { name: "store", persistentVolumeClaim: { claimName: "niximage-store-1" } },
            { name: "work", emptyDir: {} },
          ],
        },
      },
    },
    status,
  };
}

const started = { startTime: "2026-11-22T09:00:01Z" as unknown as Date, active: 1, ready: 0, terminating: 0, uncountedTerminatedPods: {} };
const succeeded = {
  startTime: new Date("2026-11-22T09:00:01Z"),
  completionTime: new Date("2026-11-22T09:12:30Z"),
  succeeded: 1,
  terminating: 0,
  ready: 0,
  uncountedTerminatedPods: {},
  conditions: [
    {
      type: "SuccessCriteriaMet",
      status: "True",
      reason: "CompletionsReached",
      message: "Reached expected number of succeeded pods",
      lastProbeTime: new Date("2026-11-22T09:12:30Z"),
      lastTransitionTime: new Date("2026-11-22T09:12:30Z"),
    },
    {
      type: "Complete",
      status: "True",
      reason: "CompletionsReached",
      message: "Reached expected number of succeeded pods",
      lastProbeTime: new Date("2026-11-22T09:12:30Z"),
      lastTransitionTime: new Date("2026-11-22T09:12:30Z"),
    },
  ],
};
const failedStatus = (reason: string, message: string) => ({
  startTime: new Date("2026-11-22T09:00:01Z"),
  failed: 1,
  terminating: 0,
  ready: 0,
  uncountedTerminatedPods: {},
  conditions: [
    {
      type: "FailureTarget",
      status: "True",
      reason,
      message,
      lastProbeTime: new Date("2026-11-22T09:03:00Z"),
      lastTransitionTime: new Date("2026-11-22T09:03:00Z"),
    },
    { type: "Failed", status: "True", reason, message, lastProbeTime: new Date("2026-11-22T09:03:00Z"), lastTransitionTime: new Date("2026-11-22T09:03:00Z") },
  ],
});

const terminated = (name: string, exitCode: number, message?: string) => ({
  name,
  image: "nix.test/nix:2.28",
  imageID: "nix.test/nix@sha256:" + "1".repeat(64),
  containerID: `containerd://${"2".repeat(64)}`,
  ready: false,
  restartCount: 0,
  started: false,
  state: {
    terminated: {
      exitCode,
      reason: exitCode === 0 ? "Completed" : "Error",
      ...(message !== undefined ? { message } : {}),
      startedAt: new Date("2026-11-22T09:00:05Z"),
      finishedAt: new Date("2026-11-22T09:10:00Z"),
      containerID: `containerd://${"2".repeat(64)}`,
    },
  },
});
const waiting = (name: string) => ({
  name,
  image: "operator.test/nio:0.1.0",
  imageID: "",
  ready: false,
  restartCount: 0,
  started: false,
  state: { waiting: { reason: "PodInitializing" } },
});

function pod(name: string, created: string, phase: string, init: object[], main: object[]): V1Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: "shop",
      creationTimestamp: new Date(created),
      labels: { "batch.kubernetes.io/job-name": "web-build-7" },
      ownerReferences: [{ apiVersion: "batch/v1", kind: "Job", name: "web-build-7", uid: jobUid, controller: true }],
    },
    spec: { containers: [] },
    status: { phase, initContainerStatuses: init, containerStatuses: main, startTime: new Date(created), qosClass: "BestEffort" } as V1Pod["status"],
  };
}

const pushMessage = JSON.stringify({
  image: `registry.example.com/acme/web@${digest}`,
  digest,
  tags: [`rev-${rev.slice(0, 12)}`, "latest"],
  format: "package",
  revision: { url: `github:acme/shop/${rev}`, rev, lastModified: 1_763_000_000, narHash: "sha256-x" },
  layers: { total: 42, pushed: 2, skipped: 39, mounted: 1 },
  bytesPushed: 123456,
  seconds: { plan: 0.1, layers: 3.2, push: 4 },
  attestations: { sbom: `sha256:${"a".repeat(64)}`, provenance: `sha256:${"b".repeat(64)}` },
});

describe("jobView", () => {
  it("reads labels, annotations, the store volume and times of a running Job", () => {
    const view = jobView(job("web-build-7", "Image", started), []);
    expect(view).toEqual({
      name: "web-build-7",
      kind: "Image",
      number: 7,
      state: "Running",
      reasons: ["RevisionChanged", "RebuildRequested"],
      specHash: "0123456789abcdef",
      builderHash: "fedcba9876543210",
      rebuildToken: "2026-11-22",
      flake: `github:acme/shop/${rev}`,
      storeVolume: "niximage-store-1",
      requestedAt: "2026-11-22T09:00:00Z",
      startTime: "2026-11-22T09:00:01Z",
      completionTime: undefined,
      attempt: 1,
      podsActive: false,
      foreignPods: [],
    });
  });

  it("success: the push step's termination message is the result", () => {
    const p = pod(
      "web-build-7-x1",
      "2026-11-22T09:00:01Z",
      "Succeeded",
      [terminated("prepare", 0), terminated("build", 0)],
      [terminated("push", 0, pushMessage)],
    );
    const view = jobView(job("web-build-7", "Image", succeeded), [p]);
    expect(view.state).toBe("Succeeded");
    expect(view.startTime).toBe("2026-11-22T09:00:01.000Z");
    expect(view.completionTime).toBe("2026-11-22T09:12:30.000Z");
    expect(view.result).toEqual({
      image: `registry.example.com/acme/web@${digest}`,
      digest,
      tags: [`rev-${rev.slice(0, 12)}`, "latest"],
      format: "package",
      revision: { url: `github:acme/shop/${rev}`, rev, lastModified: 1_763_000_000, narHash: "sha256-x" },
      layers: { total: 42, pushed: 2, skipped: 39, mounted: 1 },
      bytesPushed: 123456,
      seconds: { plan: 0.1, layers: 3.2, push: 4 },
      attestations: { sbom: `sha256:${"a".repeat(64)}`, provenance: `sha256:${"b".repeat(64)}` },
    });
    expect(view.failure).toBeUndefined();
  });

  it("failure in the build step: which step, its exit code and its last log lines", () => {
    const log =
      "building '/nix/store/abc-web.drv'...\nerror: builder for '/nix/store/abc-web.drv' failed with exit code 2;\n       last 10 log lines:\n       > make: *** [all] Error 1\n";
    const p = pod("web-build-7-x1", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), terminated("build", 1, log)], [waiting("push")]);
    const view = jobView(
      job(
        "web-build-7",
        "Image",
        failedStatus("PodFailurePolicy", "Container build for pod shop/web-build-7-x1 failed with exit code 1 matching FailJob rule at index 1"),
      ),
      [p],
    );
    expect(view.state).toBe("Failed");
    expect(view.result).toBeUndefined();
    expect(view.failure).toEqual({ step: "build", exitCode: 1, reason: "Error", message: log.trim() });
  });

  it("the first failing step counts (prepare before build)", () => {
    const p = pod(
      "p",
      "2026-11-22T09:00:01Z",
      "Failed",
      [terminated("prepare", 3, "store volume has Nix 2.3 schema; this image needs 2.28"), terminated("build", 1, "later")],
      [waiting("push")],
    );
    expect(
      jobView(job("web-build-7", "Image", failedStatus("BackoffLimitExceeded", "Job has reached the specified backoff limit")), [p]).failure,
    ).toMatchObject({ step: "prepare", exitCode: 3 });
  });

  it("a step without a termination message: a message that names the step and code", () => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), terminated("build", 137, "")], [waiting("push")]);
    expect(failedStep(p)).toEqual({ step: "build", exitCode: 137, reason: "Error", message: "step build exited with code 137" });
  });

  it("a long log is cut to its last 4000 characters", () => {
    const log = `${"x".repeat(5000)}THE END`;
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), terminated("build", 1, log)], [waiting("push")]);
    const message = failedStep(p)!.message;
    expect(message).toHaveLength(4000);
    expect(message.endsWith("THE END")).toBe(true);
  });

  it("DeadlineExceeded without pod status (the pod is gone): the Job's reason and message", () => {
    const view = jobView(job("web-build-7", "Image", failedStatus("DeadlineExceeded", "Job was active longer than specified deadline")), []);
    expect(view.state).toBe("Failed");
    expect(view.failure).toEqual({ step: "job", reason: "DeadlineExceeded", message: "Job was active longer than specified deadline" });
  });

  it("DeadlineExceeded with a pod killed mid-build that has no terminated step yet", () => {
    const running = { ...terminated("build", 0), state: { running: { startedAt: new Date("2026-11-22T09:00:05Z") } } };
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), running], [waiting("push")]);
    expect(jobView(job("web-build-7", "Image", failedStatus("DeadlineExceeded", "Job was active longer than specified deadline")), [p]).failure).toMatchObject({
      step: "job",
      reason: "DeadlineExceeded",
    });
  });

  it("push step exited 0 without a readable result: the build counts as failed in the push step", () => {
    // The last one: a 8 MB termination message (valid JSON; more than the kubelet ever keeps) is not parsed at all.
    const huge = JSON.stringify({ digest: `sha256:${"a".repeat(64)}`, pad: "x".repeat(8 * 1024 * 1024) });
    for (const message of [undefined, "", "pushed!", '{"digest":"sha256:short"}', "{not json", huge]) {
      const p = pod("p", "2026-11-22T09:00:01Z", "Succeeded", [terminated("prepare", 0), terminated("build", 0)], [terminated("push", 0, message)]);
      const view = jobView(job("web-build-7", "Image", succeeded), [p]);
      expect(view.state).toBe("Failed");
      expect(view.failure).toEqual({ step: "push", message: "the push step finished without a readable result in its termination message" });
      expect(view.result).toBeUndefined();
    }
  });

  it("a succeeded Job whose pod was already deleted: the result is lost, a transient failure (retried), never the old image as Ready", () => {
    const view = jobView(job("web-build-7", "Image", succeeded), []);
    expect(view.state).toBe("Failed");
    expect(view.result).toBeUndefined();
    expect(view.failure).toMatchObject({ step: "push", reason: "ResultLost", transient: true });
    expect(view.failedAt).toBe("2026-11-22T09:12:30.000Z");
  });

  it("a succeeded Job whose push step's end the cache does not show yet: still Running (no verdict from a stale cache)", () => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Running", [terminated("prepare", 0), terminated("build", 0)], [waiting("push")]);
    expect(jobView(job("web-build-7", "Image", succeeded), [p]).state).toBe("Running");
  });

  it("FailureTarget alone (Failed not yet added) already counts as failed", () => {
    const status = failedStatus("PodFailurePolicy", "Container push for pod shop/p failed with exit code 1");
    status.conditions = status.conditions.filter((c) => c.type === "FailureTarget");
    const p = pod(
      "p",
      "2026-11-22T09:00:01Z",
      "Failed",
      [terminated("prepare", 0), terminated("build", 0)],
      [terminated("push", 1, "registry.example.com: 401 Unauthorized")],
    );
    const view = jobView(job("web-build-7", "Image", status), [p]);
    expect(view.state).toBe("Failed");
    expect(view.failure).toEqual({ step: "push", exitCode: 1, reason: "Error", message: "registry.example.com: 401 Unauthorized" });
  });

  it("SuccessCriteriaMet alone already counts as succeeded", () => {
    const status = { ...succeeded, conditions: succeeded.conditions.filter((c) => c.type === "SuccessCriteriaMet") };
    const p = pod("p", "2026-11-22T09:00:01Z", "Succeeded", [terminated("prepare", 0), terminated("build", 0)], [terminated("push", 0, pushMessage)]);
    expect(jobView(job("web-build-7", "Image", status), [p]).result?.digest).toBe(digest);
  });

  it("conditions with status False do not count", () => {
    const status = {
      ...started,
      conditions: [
        { type: "Failed", status: "False", reason: "x" },
        { type: "Suspended", status: "True" },
      ],
    };
    expect(jobView(job("web-build-7", "Image", status), []).state).toBe("Running");
  });

  it("the newest pod tells the story (a disrupted pod was replaced)", () => {
    const old = pod("old", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), terminated("build", 143, "terminated by eviction")], [waiting("push")]);
    const replacement = pod(
      "new",
      "2026-11-22T09:05:00Z",
      "Succeeded",
      [terminated("prepare", 0), terminated("build", 0)],
      [terminated("push", 0, pushMessage)],
    );
    expect(jobView(job("web-build-7", "Image", succeeded), [replacement, old]).result?.digest).toBe(digest);
    expect(jobView(job("web-build-7", "Image", succeeded), [old, replacement]).result?.digest).toBe(digest);
  });

  it("a warm build: the report step's message is the warm result", () => {
    const report = JSON.stringify({
      revision: { url: `github:acme/shop/${rev}`, rev, lastModified: 1_763_000_000, narHash: "sha256-x" },
      closureDiff: {
        added: [{ name: "libfoo", to: "1.0" }],
        removed: [{ name: "libbar", from: "0.9" }],
        changed: [{ name: "openssl", from: "3.0.1", to: "3.0.2" }],
      },
      seconds: { build: 900.5 },
    });
    const p = pod("p", "2026-11-22T02:00:01Z", "Succeeded", [terminated("prepare", 0), terminated("build", 0)], [terminated("report", 0, report)]);
    const view = jobView(job("web-warm-3", "Warm", succeeded), [p]);
    expect(view).toMatchObject({ name: "web-warm-3", kind: "Warm", number: 3, state: "Succeeded" });
    expect(view.warmResult).toEqual(JSON.parse(report));
    expect(view.result).toBeUndefined();
  });

  it("a warm build without a readable report still succeeded (the store is warm)", () => {
    const p = pod("p", "2026-11-22T02:00:01Z", "Succeeded", [terminated("prepare", 0), terminated("build", 0)], [terminated("report", 0, "oops")]);
    const view = jobView(job("web-warm-3", "Warm", succeeded), [p]);
    expect(view.state).toBe("Succeeded");
    expect(view.warmResult).toBeUndefined();
  });

  it.each([
    ["push step exit 75 (registry 503)", "push", 75, "Error", "HTTP 503 from registry", true],
    ["push step exit 1 (401 Unauthorized)", "push", 1, "Error", "HTTP 401", false],
    ["build step exit 75 (flake code cannot ask for retries)", "build", 75, "Error", "nix: error", false],
    ["fetch step exit 75 (source server down)", "fetch", 75, "Error", "Could not resolve host", true],
    ["fetch step exit 1 (credential refused)", "fetch", 1, "Error", "could not read Username", false],
  ])("failure taxonomy: %s -> transient %s", (_what, step, code, reason, message, transient) => {
    const init =
      step === "push"
        ? [terminated("prepare", 0), terminated("build", 0)]
        : step === "fetch"
          ? [terminated("prepare", 0), terminated("fetch", code, message), waiting("build")]
          : [terminated("prepare", 0), terminated("build", code, message)];
    const main = step === "push" ? [terminated("push", code, message)] : [waiting("push")];
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", init, main);
    const view = jobView(job("web-build-7", "Image", failedStatus("BackoffLimitExceeded", "Job has reached the specified backoff limit")), [p]);
    expect(view.failure).toMatchObject({ step, exitCode: code, reason });
    expect(view.failure?.transient === true).toBe(transient);
    expect(view.failedAt).toBe("2026-11-22T09:03:00.000Z");
  });

  it("OOMKilled: deterministic, the memory limit in the message", () => {
    const oom = terminated("build", 137, "building...");
    (oom.state.terminated as { reason: string }).reason = "OOMKilled";
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), oom], [waiting("push")]);
    p.spec = { containers: [], initContainers: [{ name: "prepare" }, { name: "build", resources: { limits: { memory: "2Gi" } } }] };
    const view = jobView(job("web-build-7", "Image", failedStatus("BackoffLimitExceeded", "limit")), [p]);
    expect(view.failure).toMatchObject({ step: "build", reason: "OOMKilled", exitCode: 137 });
    expect(view.failure?.message).toMatch(/more memory than its limit \(2Gi\).*spec\.build\.resources\.limits\.memory/);
    expect(view.failure?.transient).toBeUndefined();
  });

  it("a store volume the prepare step refused (exit 78): StoreIncompatible naming the PVC, deterministic", () => {
    const refused = terminated("prepare", 78, 'the store volume /nix-seed holds a Nix database of schema version "11", written by a newer Nix');
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", [refused, waiting("build")], [waiting("push")]);
    p.metadata = { ...p.metadata, namespace: "shop" };
    p.spec = { containers: [], volumes: [{ name: "store", persistentVolumeClaim: { claimName: "niximage-store-1" } }] };
    const view = jobView(job("web-build-7", "Image", failedStatus("BackoffLimitExceeded", "limit")), [p]);
    expect(view.failure).toMatchObject({ step: "prepare", reason: "StoreIncompatible", exitCode: 78 });
    expect(view.failure?.message).toMatch(/refused store volume niximage-store-1 \(PVC shop\/niximage-store-1\): .*schema version "11"/);
    expect(view.failure?.transient).toBeUndefined();
    // Exit 78 of another step is an ordinary failure.
    const other = pod("p", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), terminated("build", 78, "x")], [waiting("push")]);
    expect(jobView(job("web-build-7", "Image", failedStatus("BackoffLimitExceeded", "limit")), [other]).failure?.reason).not.toBe("StoreIncompatible");
  });

  it.each([
    ["evicted", { reason: "Evicted", message: "The node was low on resource: memory." }, "Evicted"],
    [
      "preempted (DisruptionTarget)",
      { conditions: [{ type: "DisruptionTarget", status: "True", reason: "PreemptionByScheduler", message: "preempted" }] },
      "PreemptionByScheduler",
    ],
  ])("a %s pod: transient", (_what, extra, reason) => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0), terminated("build", 137)], [waiting("push")]);
    p.status = { ...p.status, ...extra } as V1Pod["status"];
    const view = jobView(job("web-build-7", "Image", failedStatus("BackoffLimitExceeded", "limit")), [p]);
    expect(view.failure).toMatchObject({ step: "pod", reason, transient: true });
  });

  it("a failed Job with no pod left (not a deadline): transient; a deadline: not", () => {
    expect(jobView(job("web-build-7", "Image", failedStatus("BackoffLimitExceeded", "limit")), []).failure?.transient).toBe(true);
    expect(jobView(job("web-build-7", "Image", failedStatus("DeadlineExceeded", "deadline")), []).failure?.transient).toBeUndefined();
  });

  it("trust: a pod labelled for the Job but not controlled by its UID is ignored and reported", () => {
    const forged = pod("forged", "2026-11-22T09:05:00Z", "Succeeded", [terminated("prepare", 0), terminated("build", 0)], [terminated("push", 0, pushMessage)]);
    forged.metadata!.ownerReferences = [{ apiVersion: "batch/v1", kind: "Job", name: "web-build-7", uid: "someone-else", controller: true }];
    const unowned = { ...forged, metadata: { ...forged.metadata, name: "unowned", ownerReferences: [] } };
    const view = jobView(job("web-build-7", "Image", succeeded), [forged, unowned]);
    expect(view.result).toBeUndefined();
    expect(view.foreignPods).toEqual(["forged", "unowned"]);
    expect(view.failure).toMatchObject({ reason: "ResultLost" });
  });

  it("the store volume stays in use while any own pod is not finished (a Job marked failed before its pod is gone)", () => {
    const running = pod("p", "2026-11-22T09:00:01Z", "Running", [terminated("prepare", 0)], [waiting("push")]);
    const failedTarget = failedStatus("DeadlineExceeded", "deadline");
    failedTarget.conditions = failedTarget.conditions.filter((c) => c.type === "FailureTarget");
    const view = jobView(job("web-build-7", "Image", failedTarget), [running]);
    expect(view.state).toBe("Failed");
    expect(view.podsActive).toBe(true);
    const gone = pod("p", "2026-11-22T09:00:01Z", "Failed", [terminated("prepare", 0)], [waiting("push")]);
    expect(jobView(job("web-build-7", "Image", failedTarget), [gone]).podsActive).toBe(false);
  });

  it("a Job without labels or annotations reads as an Image build number 0 with no reasons", () => {
    const view = jobView({ metadata: { name: "stray" }, status: {} }, []);
    expect(view).toMatchObject({ name: "stray", kind: "Image", number: 0, reasons: [], state: "Running" });
  });
});

describe("the cache step (config.binaryCache) never decides the build", () => {
  /** A Job whose pod has the cache container beside push/report, as builderJob makes it. */
  const withCache = (j: V1Job): V1Job => {
    j.spec!.template.spec!.containers.push({ name: "cache" });
    return j;
  };
  const running = (name: string) => ({ ...waiting(name), started: true, state: { running: { startedAt: new Date("2026-11-22T09:00:05Z") } } });
  const cacheMessage = (copied: boolean, error?: string) =>
    JSON.stringify({
      cache: "https://cache.example.com/nix",
      outPath: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web",
      closurePaths: 12,
      copied,
      seconds: 3.5,
      ...(error ? { error } : {}),
    });
  const init = [terminated("prepare", 0), terminated("build", 0)];

  it("push exited 0 while the cache copy still runs: the result is taken now (the Job is still running)", () => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Running", init, [running("cache"), terminated("push", 0, pushMessage)]);
    const view = jobView(withCache(job("web-build-7", "Image", started)), [p]);
    expect(view.state).toBe("Succeeded");
    expect(view.result?.digest).toBe(digest);
    // The push step's end, as the Job has no completionTime yet.
    expect(view.completionTime).toBe("2026-11-22T09:10:00.000Z");
    // The store volume stays held until the cache step is done too.
    expect(view.podsActive).toBe(true);
    expect(view.cacheCopyFailed).toBeUndefined();
  });

  it("the cache step failed the Job (exit 1): the build still succeeded with the push result; the cache failure is reported apart", () => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", init, [
      terminated("cache", 1, "cannot read /work/result/result.json (EACCES): did the build step finish successfully?"),
      terminated("push", 0, pushMessage),
    ]);
    const view = jobView(withCache(job("web-build-7", "Image", failedStatus("PodFailurePolicy", "Container cache exited with 1"))), [p]);
    expect(view.state).toBe("Succeeded");
    expect(view.result?.digest).toBe(digest);
    expect(view.failure).toBeUndefined();
    expect(view.cacheCopyFailed).toEqual({ message: "cannot read /work/result/result.json (EACCES): did the build step finish successfully?" });
  });

  it("a copy that failed (exit 0, copied: false): an Event message with what failed, the cache, what to do, no credentials", () => {
    const error =
      "copy /nix/store/x to the binary cache https://cache.example.com/nix failed: unable to upload 'https://ci:s3cr3t@cache.example.com/nix/x.narinfo': HTTP error 403";
    const p = pod("p", "2026-11-22T09:00:01Z", "Succeeded", init, [terminated("cache", 0, cacheMessage(false, error)), terminated("push", 0, pushMessage)]);
    const view = jobView(withCache(job("web-build-7", "Image", succeeded)), [p]);
    expect(view.state).toBe("Succeeded");
    expect(view.cacheCopyFailed).toEqual({ cache: "https://cache.example.com/nix", message: error });
    const message = cacheCopyFailedMessage(view, "shop")!;
    expect(message).toContain("build web-build-7: copying the closure to the binary cache https://cache.example.com/nix failed");
    expect(message).toContain("HTTP error 403");
    expect(message).toContain("The build's result does not depend on it");
    expect(message).toContain("What to do: check config.binaryCache");
    expect(message).toContain("kubectl logs -n shop job/web-build-7 -c cache");
    expect(message).not.toContain("s3cr3t");
    expect(message.length).toBeLessThanOrEqual(1024);
  });

  it("a copy that worked, or a cache step still running: nothing to report", () => {
    const copied = pod("p", "2026-11-22T09:00:01Z", "Succeeded", init, [terminated("cache", 0, cacheMessage(true)), terminated("push", 0, pushMessage)]);
    const view = jobView(withCache(job("web-build-7", "Image", succeeded)), [copied]);
    expect(view.cacheCopyFailed).toBeUndefined();
    expect(cacheCopyFailedMessage(view, "shop")).toBeUndefined();
  });

  it("push failed (transient) and the cache failed too: the push step's failure is the build's (cache sorts first in the statuses)", () => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Failed", init, [terminated("cache", 1, "nix copy failed"), terminated("push", 75, "registry 503")]);
    const view = jobView(withCache(job("web-build-7", "Image", failedStatus("PodFailurePolicy", "failed"))), [p]);
    expect(view.state).toBe("Failed");
    expect(view.failure).toMatchObject({ step: "push", exitCode: 75, transient: true });
  });

  it("push still running, cache done: still Running", () => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Running", init, [terminated("cache", 0, cacheMessage(true)), running("push")]);
    expect(jobView(withCache(job("web-build-7", "Image", started)), [p]).state).toBe("Running");
  });

  it("without a cache step nothing changes: a Job still running is Running even after push exited 0", () => {
    const p = pod("p", "2026-11-22T09:00:01Z", "Running", init, [terminated("push", 0, pushMessage)]);
    expect(jobView(job("web-build-7", "Image", started), [p]).state).toBe("Running");
  });

  it("a warm build: the report exited 0, the cache copy still runs: succeeded with the report", () => {
    const report = JSON.stringify({ seconds: { build: 12 } });
    const p = pod("p", "2026-11-22T02:00:01Z", "Running", init, [running("cache"), terminated("report", 0, report)]);
    const view = jobView(withCache(job("web-warm-3", "Warm", started)), [p]);
    expect(view.state).toBe("Succeeded");
    expect(view.warmResult).toEqual({ seconds: { build: 12 } });
  });
});
