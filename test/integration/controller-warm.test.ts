// Warm builds on the real test bed: a NixImage with a nightly schedule in Europe/Berlin, the
// controller's clock moved to just past the next 03:00 there. The harness plays the kubelet for the
// warm Job's report step; the real Job controller completes the Job.
import type { KubernetesObject } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { nextWarmTime } from "../../src/controller/warm-schedule.ts";
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
  waitForJob,
} from "../support/operator-harness.ts";

type NixImageObject = KubernetesObject & { spec: Record<string, unknown>; status?: NixImageStatus };

const repository = "127.0.0.1:5000/shop/web";
const digestHex = "d".repeat(64);
const schedule = "0 3 * * *";
const timeZone = "Europe/Berlin";
/** Past the slot and the whole start spread (config.warm.spread, 10m by default). */
const spreadMs = 10 * 60_000;

async function readNixImage(namespace: string, name: string): Promise<NixImageObject> {
  return kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/${name}`);
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

const condition = (image: NixImageObject, type: string) => image.status?.conditions?.find((c) => c.type === type);
const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");

/** What `warm-report` writes as the report step's termination message. */
function warmReport(rev: string) {
  return JSON.stringify({
    revision: { url: `git+http://127.0.0.1/x.git?rev=${rev}`, rev, lastModified: 1704067200, narHash: "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
    closureDiff: {
      added: [{ name: "libfoo", to: "1.2" }],
      removed: [{ name: "libold", from: "0.9" }],
      changed: [{ name: "openssl", from: "3.0.13", to: "3.0.14" }],
    },
    seconds: { lock: 1.5, build: 42.25, closure: 0.5 },
  });
}

describe("NixImage controller: warm builds", () => {
  beforeAll(async () => {
    await installTestCrd();
  });

  it("runs a warm build just after 03:00 Berlin, records it without touching the image, and only once per slot", async () => {
    const flake = await createGitRepo(minimalFlake({ marker: "warm" }), { prefix: "ctl-warm" });
    const namespace = await testNamespace("ctl-warm");
    const access = await chartServiceAccount();
    const clock = new OffsetClock();
    const operator = await startTestOperator({ access, namespaces: [namespace], clock });
    await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
      body: {
        apiVersion: "niximage.io/v1alpha1",
        kind: "NixImage",
        metadata: { name: "web" },
        spec: {
          flake: flake.flakeUrl,
          image: { repository },
          warm: { schedule, timeZone, attributes: ["devShells.x86_64-linux.default"], updateInputs: true },
        },
      },
    });

    // The image build first, as always.
    await waitForJob(namespace, "web-build-1");
    await finishBuildPod(namespace, "web-build-1", { succeed: { message: pushResult(repository, digestHex, flake.rev) } });
    // Ready comes with SuccessCriteriaMet; the completionTime follows with Complete a moment later.
    const built = await waitForStatus(
      namespace,
      "web",
      "Ready",
      (i) => condition(i, "Ready")?.status === "True" && i.status?.lastBuild?.completionTime !== undefined,
    );
    const slot = nextWarmTime(schedule, timeZone, clock.now());
    expect(built.status?.nextWarmBuild).toBe(rfc3339(slot));
    expect(new Intl.DateTimeFormat("en-GB", { timeZone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(slot)).toBe("03:00");
    expect(built.status?.lastWarmBuild).toBeUndefined();

    // Just past the slot: a warm build starts.
    clock.advance(slot.getTime() - clock.now().getTime() + spreadMs + 5_000);
    operator.enqueueAll();
    const job = await waitForJob(namespace, "web-warm-1");
    expect(job.metadata?.labels?.["niximage.io/build-kind"]).toBe("Warm");
    expect(job.metadata?.annotations?.["niximage.io/reasons"]).toBe("WarmSchedule");
    const pod = job.spec!.template.spec!;
    expect(pod.containers.map((c) => c.name)).toEqual(["report"]);
    expect(pod.containers[0]!.command).toEqual(expect.arrayContaining(["warm-report", "--from", "/work/result"]));
    expect(pod.initContainers![1]!.args).toEqual(expect.arrayContaining(["--extra-attribute", "devShells.x86_64-linux.default", "--update-inputs"]));
    expect((pod.volumes ?? []).filter((v) => v.secret)).toEqual([]);

    // While it runs: recorded as the warm build, the image stays Ready, lastBuild and latestImage stay.
    const running = await waitForStatus(namespace, "web", "warm build running", (i) => i.status?.lastWarmBuild?.job === "web-warm-1");
    expect(running.status?.lastWarmBuild).toMatchObject({ job: "web-warm-1", number: 1, kind: "Warm", reasons: ["WarmSchedule"], result: "Running" });
    expect(running.status?.lastBuild).toEqual(built.status?.lastBuild);
    expect(running.status?.latestImage).toBe(built.status?.latestImage);
    expect(condition(running, "Ready")).toMatchObject({ status: "True", lastTransitionTime: condition(built, "Ready")?.lastTransitionTime });

    // The report step finishes: lastWarmBuild gets the closure diff; the image is untouched.
    await finishBuildPod(namespace, "web-warm-1", { succeed: { message: warmReport(flake.rev) } });
    // SuccessCriteriaMet comes first, Complete with the completionTime a moment later.
    const warmed = await waitForStatus(
      namespace,
      "web",
      "warm build recorded",
      (i) => i.status?.lastWarmBuild?.result === "Succeeded" && i.status.lastWarmBuild.completionTime !== undefined,
    );
    expect(warmed.status?.lastWarmBuild).toMatchObject({
      job: "web-warm-1",
      kind: "Warm",
      result: "Succeeded",
      revision: { rev: flake.rev },
      durations: { lock: 1.5, build: 42.25, closure: 0.5 },
      closureDiff: {
        added: [{ name: "libfoo", to: "1.2" }],
        removed: [{ name: "libold", from: "0.9" }],
        changed: [{ name: "openssl", from: "3.0.13", to: "3.0.14" }],
      },
    });
    expect(warmed.status?.latestImage).toBe(`${repository}@sha256:${digestHex}`);
    expect(warmed.status?.lastBuild).toEqual(built.status?.lastBuild);
    expect(warmed.status?.latestRevision).toEqual(built.status?.latestRevision);
    expect(warmed.status?.buildCount).toBe(1);
    // The next slot is the following night's 03:00.
    const next = nextWarmTime(schedule, timeZone, clock.now());
    expect(next.getTime() - slot.getTime()).toBeGreaterThanOrEqual(23 * 3_600_000);
    expect(warmed.status?.nextWarmBuild).toBe(rfc3339(next));
    expect(condition(warmed, "Ready")?.status).toBe("True");

    // More reconciles in the same slot (also minutes later) start no second warm build.
    for (const minutes of [0, 1, 30]) {
      clock.advance(minutes * 60_000);
      operator.enqueueAll();
      await operator.idle();
    }
    expect((await buildJobs(namespace)).map((j) => j.metadata?.name)).toEqual(["web-build-1", "web-warm-1"]);
    const settled = await readNixImage(namespace, "web");
    expect(settled.status?.lastWarmBuild).toEqual(warmed.status?.lastWarmBuild);

    // The next night: warm build 2, on the store volume the image builds on.
    clock.advance(next.getTime() - clock.now().getTime() + spreadMs + 1_000);
    operator.enqueueAll();
    const second = await waitForJob(namespace, "web-warm-2");
    const volumeOf = (j: typeof second) => j.spec!.template.spec!.volumes!.find((v) => v.name === "store")!.persistentVolumeClaim!.claimName;
    expect(volumeOf(second)).toBe(volumeOf(job));
  });

  it("a warm schedule added to an existing NixImage waits for its next slot", async () => {
    const flake = await createGitRepo(minimalFlake({ marker: "warm-later" }), { prefix: "ctl-warm-add" });
    const namespace = await testNamespace("ctl-warm-add");
    const access = await chartServiceAccount();
    const clock = new OffsetClock();
    const operator = await startTestOperator({ access, namespaces: [namespace], clock });
    const path = `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`;
    await kubeRequestJson(kubeClients().kc, "POST", path, {
      body: { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", metadata: { name: "web" }, spec: { flake: flake.flakeUrl, image: { repository } } },
    });
    await waitForJob(namespace, "web-build-1");
    await finishBuildPod(namespace, "web-build-1", { succeed: { message: pushResult(repository, digestHex, flake.rev) } });
    await waitForStatus(namespace, "web", "Ready", (i) => condition(i, "Ready")?.status === "True");

    // Two days later, someone adds a nightly schedule at midday: no warm build before the night.
    clock.advance(2 * 86_400_000);
    const noon = new Date(clock.now());
    noon.setUTCHours(11, 0, 0, 0);
    if (noon.getTime() < clock.now().getTime()) noon.setUTCDate(noon.getUTCDate() + 1);
    clock.advance(noon.getTime() - clock.now().getTime());
    await kubeRequestJson(kubeClients().kc, "PATCH", `${path}/web`, {
      body: { spec: { warm: { schedule, timeZone } } },
      contentType: "application/merge-patch+json",
    });
    const slot = nextWarmTime(schedule, timeZone, clock.now());
    await waitForStatus(namespace, "web", "next warm build announced", (i) => i.status?.nextWarmBuild === rfc3339(slot));
    operator.enqueueAll();
    await operator.idle();
    expect((await buildJobs(namespace)).map((j) => j.metadata?.name)).toEqual(["web-build-1"]);

    // At the slot it runs.
    clock.advance(slot.getTime() - clock.now().getTime() + spreadMs + 1_000);
    operator.enqueueAll();
    await waitForJob(namespace, "web-warm-1");
  });
});
