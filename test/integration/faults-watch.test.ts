// Fault suite (docs/reliability.md), cases 4 and 5: the controller's watches broken by a TLS fault
// proxy between it and the API server. Changes, creates and deletes happen while its watches are
// silent; an `ERROR 410 Gone` must make it relist (case 4). Also: cut watches and a malformed line
// on every watch. Case 5 (watches silent for good) is in faults-relist.test.ts.
import { describe, expect, it } from "vitest";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { faultScenario, recordFigures, type FaultScenario } from "../support/fault-scenario.ts";
import { kubeClients, waitFor } from "../support/kube.ts";

const api = "/apis/niximage.io/v1alpha1";

async function requestRebuild(s: FaultScenario, name: string, token: string) {
  await kubeRequestJson(kubeClients().kc, "PATCH", `${api}/namespaces/${s.namespace}/niximages/${name}`, {
    body: { metadata: { annotations: { "niximage.io/rebuild": token } } },
    contentType: "application/merge-patch+json",
  });
}

async function deleteImage(s: FaultScenario, name: string) {
  await kubeRequestJson(kubeClients().kc, "DELETE", `${api}/namespaces/${s.namespace}/niximages/${name}`);
}

async function lastBuildNumber(s: FaultScenario, name: string): Promise<number | undefined> {
  return (await s.readImage(name)).status?.lastBuild?.number;
}

describe("faults: watches", () => {
  it("case 4: watch ERROR 410 Gone after a gap with a change, a create and a delete -> relisted, all three acted on", async () => {
    const s = await faultScenario({ prefix: "gone" });
    const proxy = await s.startApiProxy();
    const ctl = await s.startController("one", { server: proxy.url, caFile: proxy.caFile });
    await s.createImages(["g1", "g2"]);
    await s.waitConverged(["g1", "g2"]);
    await waitFor("the controller's watches open through the proxy", () => proxy.openWatches() >= 5);

    proxy.blackholeWatches();
    await requestRebuild(s, "g1", "gap-1");
    await deleteImage(s, "g2");
    await s.createImages(["g3"]);
    const writesBefore = (await s.operatorWrites()).length;
    proxy.restoreWatches();
    const goneAt = Date.now();
    const gone = proxy.goneWatches();
    expect(gone).toBeGreaterThan(0);

    await s.waitConverged(["g1", "g3"]);
    await waitFor("g1 rebuilt after the gap (build 2)", async () => (await lastBuildNumber(s, "g1")) === 2);
    const recoveryMs = Date.now() - goneAt;
    expect(ctl.running()).toBe(true);
    // g2 is gone: nothing was written for it after the gap.
    const g2Writes = (await s.operatorWrites()).slice(writesBefore).filter((w) => w.name?.startsWith("g2"));
    expect(g2Writes).toEqual([]);
    await recordFigures("4", { watchesGone: gone, recoveryMs });
  });

  it("case 4b: watches cut and a malformed line on every watch -> the controller keeps going", async () => {
    const s = await faultScenario({ prefix: "cut" });
    const proxy = await s.startApiProxy();
    const ctl = await s.startController("one", { server: proxy.url, caFile: proxy.caFile });
    await waitFor("the controller's watches open through the proxy", () => proxy.openWatches() >= 5);
    const malformed = proxy.malformedWatches();
    await s.createImages(["m1"]);
    await s.waitConverged(["m1"]);
    await waitFor("watches open again", () => proxy.openWatches() >= 5);
    const cutAt = Date.now();
    const cut = proxy.cutWatches();
    await s.createImages(["m2"]);
    await s.waitConverged(["m1", "m2"]);
    const recoveryMs = Date.now() - cutAt;
    expect(ctl.running()).toBe(true);
    await recordFigures("4b", { malformed, cut, recoveryAfterCutMs: recoveryMs });
  });
});
