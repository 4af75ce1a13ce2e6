// Fault suite (docs/reliability.md), case 13 as far as the integration tier goes: the builder pod is
// deleted mid-build and stays Terminating (a finalizer of the test's holds it, as a lost node's
// kubelet never confirms the kill). The build must be retried once, and never while the old pod
// still exists: with a pool of one store volume, a second pod would share the volume with it.
import { describe, expect, it } from "vitest";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { succeeded } from "../support/audit-log.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { kubeClients, waitFor } from "../support/kube.ts";
import { waitForBuildPod } from "../support/operator-harness.ts";
import { sleep } from "../support/process.ts";

const hold = "faults.test/hold";

describe("faults: builder pods", () => {
  it("case 13: builder pod deleted mid-build and stuck Terminating -> one rebuild, started only once the old pod is gone", async () => {
    const s = await faultScenario({
      prefix: "podloss",
      config: { store: { poolSize: 1 }, build: { retry: { limit: 3, baseDelay: "1s", maxDelay: "2s" } } },
    });
    s.kubelet.pause();
    await s.startController("one");
    await s.createImages(["n1"]);
    const { core, kc } = kubeClients();
    const pod = await waitForBuildPod(s.namespace, "n1-build-1");
    const podPath = `/api/v1/namespaces/${s.namespace}/pods/${pod.metadata!.name}`;
    await kubeRequestJson(kc, "PATCH", podPath, {
      body: [{ op: "add", path: "/metadata/finalizers/-", value: hold }],
      contentType: "application/json-patch+json",
    });
    await core.deleteNamespacedPod({ namespace: s.namespace, name: pod.metadata!.name! });
    s.kubelet.resume();
    // The "node" stays unreachable for a while: the pod is Terminating, not gone.
    await sleep(5000);
    const releasedAt = Date.now();
    const current = await core.readNamespacedPod({ namespace: s.namespace, name: pod.metadata!.name! });
    await kubeRequestJson(kc, "PATCH", podPath, {
      body: [{ op: "replace", path: "/metadata/finalizers", value: (current.metadata?.finalizers ?? []).filter((f) => f !== hold) }],
      contentType: "application/json-patch+json",
    });
    await waitFor(
      "the old pod gone",
      async () => !(await core.readNamespacedPod({ namespace: s.namespace, name: pod.metadata!.name! }).catch(() => undefined)),
    );

    await s.waitConverged(["n1"]);
    const jobCreates = await s.operatorWrites((w) => w.resource === "jobs" && w.verb === "create" && succeeded(w));
    expect(jobCreates).toHaveLength(2);
    // The retry's Job (and so its pod on the one volume) came only after the old pod was let go.
    expect(jobCreates[1]!.receivedAt).toBeGreaterThanOrEqual(releasedAt);
    expect((await s.readImage("n1")).status?.lastBuild).toMatchObject({ result: "Succeeded", number: 2 });
    expect(s.kubelet.buildsOf(s.namespace, "n1")).toHaveLength(1);
    await recordFigures("13", { rebuilds: jobCreates.length - 1, retryJobAfterOldPodReleasedMs: jobCreates[1]!.receivedAt - releasedAt });
  });
});
