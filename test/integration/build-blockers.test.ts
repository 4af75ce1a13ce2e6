// A running build that cannot progress says why in status (and one Warning Event) while it stays
// Running: on the real API server and kube-controller-manager. Real here: the ResourceQuota
// admission refusing the Job controller's pod (FailedCreate), the volume controller leaving the
// store claim Pending (no storage class), the binding to a PersistentVolume. The test bed has no
// scheduler and no kubelet: an image pull error, a missing Secret and an unschedulable pod are
// written into the pod's status as the kubelet and the scheduler write them (same fields,
// reasons and messages). Each prints the time from the Job's creation (or the status write) to
// the condition in the NixImage's status.
import type { KubernetesObject, V1Pod } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { kubeClients, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount, installTestCrd, startTestOperator, waitForBuildPod, waitForJob } from "../support/operator-harness.ts";

type NixImageObject = KubernetesObject & { status?: NixImageStatus };
const repository = "127.0.0.1:5000/shop/web";

let flakeUrl = "";
beforeAll(async () => {
  await installTestCrd();
  flakeUrl = (await createGitRepo(minimalFlake({ marker: "blockers" }), { prefix: "blockers" })).flakeUrl;
});

async function startBuild(prefix: string): Promise<{ namespace: string; created: number }> {
  const namespace = await testNamespace(prefix);
  await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace], config: { store: { poolSize: 1 } } });
  await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
    body: { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", metadata: { name: "web" }, spec: { flake: flakeUrl, image: { repository } } },
  });
  const job = await waitForJob(namespace, "web-build-1");
  return { namespace, created: Date.parse(String(job.metadata!.creationTimestamp)) };
}

/** Waits for the Reconciling condition's reason; returns the condition and when it was seen. */
async function waitForReason(namespace: string, reason: string) {
  const image = await waitFor(
    `NixImage ${namespace}/web: Reconciling reason ${reason}`,
    async () => {
      const image = await kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`);
      return image.status?.conditions?.find((c) => c.type === "Reconciling")?.reason === reason ? image : undefined;
    },
    { timeoutMs: 90_000 },
  );
  const seenAt = Date.now();
  const conditions = Object.fromEntries((image.status?.conditions ?? []).map((c) => [c.type, c]));
  // Still a running build: not Ready, in progress, not given up on.
  expect(conditions.Ready?.status).toBe("Unknown");
  expect(conditions.Reconciling?.status).toBe("True");
  expect(conditions.Stalled?.status).toBe("False");
  expect(image.status?.lastBuild).toMatchObject({ job: "web-build-1", result: "Running" });
  return { message: conditions.Reconciling!.message, seenAt };
}

/** The Warning Events about the NixImage with this reason, once there is one (they are recorded after the status write). */
async function warnings(namespace: string, reason: string) {
  return waitFor(`a Warning Event ${reason}`, async () => {
    const events = await kubeClients().core.listNamespacedEvent({ namespace });
    const found = events.items.filter((e) => e.reason === reason && e.type === "Warning" && e.involvedObject.kind === "NixImage");
    return found.length > 0 ? found : undefined;
  });
}

const show = (what: string, ms: number, message: string) => console.log(`[build-blockers] ${what}: in status ${(ms / 1000).toFixed(1)} s after; ${message}`);

/** Writes the pod's status as the kubelet does (status subresource). */
async function writePodStatus(namespace: string, pod: V1Pod, status: V1Pod["status"]): Promise<void> {
  await kubeRequestJson(kubeClients().kc, "PATCH", `/api/v1/namespaces/${namespace}/pods/${pod.metadata!.name}/status`, {
    body: { status },
    contentType: "application/merge-patch+json",
  });
}

describe("a running build that cannot progress says why within seconds", () => {
  it("ResourceQuota refuses the builder pod (the Job controller's FailedCreate): BuilderPodRejected; every step has memory limits", async () => {
    const namespace = await testNamespace("blk-quota");
    // Pods must declare limits.memory under this quota: a step without one would be refused with
    // "must specify limits.memory"; the quota is below what the steps ask for together.
    await kubeClients().core.createNamespacedResourceQuota({ namespace, body: { metadata: { name: "builds" }, spec: { hard: { "limits.memory": "1Gi" } } } });
    await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace], config: { store: { poolSize: 1 } } });
    await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
      body: { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", metadata: { name: "web" }, spec: { flake: flakeUrl, image: { repository } } },
    });
    const job = await waitForJob(namespace, "web-build-1");
    const { message, seenAt } = await waitForReason(namespace, "BuilderPodRejected");
    show("ResourceQuota FailedCreate", seenAt - Date.parse(String(job.metadata!.creationTimestamp)), message);
    expect(message).toContain("exceeded quota: builds");
    expect(message).not.toContain("must specify");
    expect(message).toContain("lower spec.build.resources");
    expect(await warnings(namespace, "BuilderPodRejected")).toHaveLength(1);
    expect((await kubeClients().core.listNamespacedPod({ namespace })).items).toEqual([]);
  });

  it("the store volume stays Pending (no storage class; the volume controller's FailedBinding): StoreVolumePending", async () => {
    const { namespace, created } = await startBuild("blk-pvc");
    const { message, seenAt } = await waitForReason(namespace, "StoreVolumePending");
    show("store volume Pending", seenAt - created, message);
    expect(message).toContain("store volume niximage-store-0 (no storage class, access modes ReadWriteOncePod) is still Pending");
    expect(message).toContain("store.storageClassName");
    expect(await warnings(namespace, "StoreVolumePending")).toHaveLength(1);
  });

  const kubeletStates = [
    {
      reason: "BuilderImagePullFailed",
      status: {
        initContainerStatuses: [
          {
            name: "prepare",
            image: "nix-builder.test/nix:1",
            imageID: "",
            ready: false,
            restartCount: 0,
            state: {
              waiting: {
                reason: "ErrImagePull",
                message: 'failed to pull and unpack image "nix-builder.test/nix:1": failed to resolve reference "nix-builder.test/nix:1": not found',
              },
            },
          },
        ],
      },
      says: ["step prepare cannot pull its image nix-builder.test/nix:1 (ErrImagePull: failed to pull and unpack image", "builder.nixImage"],
    },
    {
      reason: "BuilderConfigError",
      status: {
        initContainerStatuses: [
          {
            name: "prepare",
            image: "nix-builder.test/nix:1",
            imageID: "",
            ready: false,
            restartCount: 0,
            state: { waiting: { reason: "CreateContainerConfigError", message: 'secret "ca-bundle" not found' } },
          },
        ],
      },
      says: ['CreateContainerConfigError: secret "ca-bundle" not found', "Create the Secret or ConfigMap"],
    },
  ];
  it.each(kubeletStates)("the kubelet reports $reason in a step's waiting state", async ({ reason, status, says }) => {
    const { namespace } = await startBuild(`blk-${reason.toLowerCase().slice(7, 14)}`);
    const pod = await waitForBuildPod(namespace, "web-build-1");
    const written = Date.now();
    await writePodStatus(namespace, pod, { phase: "Pending", ...status });
    const { message, seenAt } = await waitForReason(namespace, reason);
    show(reason, seenAt - written, message);
    for (const text of says) expect(message).toContain(text);
    expect(await warnings(namespace, reason)).toHaveLength(1);
  });

  it("the scheduler finds no node (store volume bound to a PersistentVolume): BuilderUnschedulable with the scheduler's message", async () => {
    const { namespace } = await startBuild("blk-sched");
    const { core } = kubeClients();
    // A volume pre-bound to the store claim: the real volume controller binds them.
    const pv = `${namespace}-store`;
    await core.createPersistentVolume({
      body: {
        metadata: { name: pv },
        spec: {
          capacity: { storage: "20Gi" },
          accessModes: ["ReadWriteOncePod"],
          hostPath: { path: `/tmp/${pv}` },
          claimRef: { namespace, name: "niximage-store-0" },
          persistentVolumeReclaimPolicy: "Delete",
        },
      },
    });
    await waitFor(
      "store claim Bound",
      async () => (await core.readNamespacedPersistentVolumeClaim({ namespace, name: "niximage-store-0" })).status?.phase === "Bound",
      { timeoutMs: 60_000 },
    );
    const pod = await waitForBuildPod(namespace, "web-build-1");
    const written = Date.now();
    const scheduler = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient memory.";
    await writePodStatus(namespace, pod, {
      phase: "Pending",
      conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: scheduler, lastTransitionTime: new Date() }],
    });
    const { message, seenAt } = await waitForReason(namespace, "BuilderUnschedulable");
    show("unschedulable", seenAt - written, message);
    expect(message).toContain(scheduler);
    expect(message).toContain("spec.build.resources.requests");
    expect(await warnings(namespace, "BuilderUnschedulable")).toHaveLength(1);
    await core.deletePersistentVolume({ name: pv }).catch(() => undefined);
  });
});
