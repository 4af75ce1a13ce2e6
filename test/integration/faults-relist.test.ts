// Fault suite (docs/reliability.md), case 5: every watch of the controller silent for good (a TLS
// fault proxy blackholes them: the connections stay open, nothing arrives, not even the end), so
// only the periodic relist (config resyncPeriod) can see a create and a change.
import { describe, expect, it } from "vitest";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { kubeClients, waitFor } from "../support/kube.ts";

const api = "/apis/niximage.io/v1alpha1";

describe("faults: relist", () => {
  it("case 5: every watch silent for good (blackholed) -> a create and a change are still acted on by the periodic relist", async () => {
    const relistSeconds = 4;
    const s = await faultScenario({ prefix: "blackhole", config: { resyncPeriod: `${relistSeconds}s` } });
    const proxy = await s.startApiProxy();
    const ctl = await s.startController("one", { server: proxy.url, caFile: proxy.caFile });
    await s.createImages(["b1"]);
    await s.waitConverged(["b1"]);
    // From now on no watch delivers anything, old or new: only lists see changes.
    proxy.blackholeWatches();
    const silentAt = Date.now();
    await s.createImages(["b2"]);
    await kubeRequestJson(kubeClients().kc, "PATCH", `${api}/namespaces/${s.namespace}/niximages/b1`, {
      body: { metadata: { annotations: { "niximage.io/rebuild": "silent-1" } } },
      contentType: "application/merge-patch+json",
    });
    await s.waitConverged(["b1", "b2"], 60_000);
    await waitFor("b1 rebuilt (build 2)", async () => (await s.readImage("b1")).status?.lastBuild?.number === 2, { timeoutMs: 60_000 });
    const recoveryMs = Date.now() - silentAt;
    expect(ctl.running()).toBe(true);
    await recordFigures("5", { relistPeriodSeconds: relistSeconds, recoveryMs });
  });
});
