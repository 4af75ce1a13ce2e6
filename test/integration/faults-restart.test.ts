// Fault suite (docs/reliability.md): the controller process stopped while its builds run on, and
// stopped (SIGTERM) in the middle of a rollout patch. The controller runs as the chart runs it, as
// a child process; the API server's audit log says which writes it made.
import { describe, expect, it } from "vitest";
import { succeeded } from "../support/audit-log.ts";
import { waitForExit } from "../support/controller-process.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { kubeClients, waitFor } from "../support/kube.ts";

describe("faults: controller restarts", () => {
  it("case 2: operator down while its builds finish -> results adopted after restart, no rebuild", async () => {
    const s = await faultScenario({ prefix: "adopt", config: { store: { poolSize: 6 }, concurrency: { builds: 6 } } });
    s.kubelet.pause();
    const names = ["a1", "a2", "a3", "a4", "a5"];
    const ctl = await s.startController("one");
    await s.createImages(names);
    const { batch } = kubeClients();
    await waitFor("a builder Job per NixImage", async () => (await batch.listNamespacedJob({ namespace: s.namespace })).items.length === names.length);
    ctl.signal("SIGKILL");
    await waitForExit(ctl, "SIGKILL");

    // The builds finish while no controller runs.
    s.kubelet.resume();
    await waitFor(
      "every Job complete",
      async () => (await batch.listNamespacedJob({ namespace: s.namespace })).items.every((j) => (j.status?.succeeded ?? 0) > 0),
      { timeoutMs: 60_000 },
    );
    const restartedAt = Date.now();
    await ctl.restart();
    await s.waitConverged(names);
    const recoveryMs = Date.now() - restartedAt;
    const tally = await s.tally(names);
    expect(tally.duplicateBuilds).toBe(0);
    expect(tally.duplicateRuns).toBe(0);
    expect(tally.repeatedPatches).toBe(0);
    expect((await batch.listNamespacedJob({ namespace: s.namespace })).items.map((j) => j.metadata?.name).sort()).toEqual(names.map((n) => `${n}-build-1`));
    await recordFigures("2", { images: names.length, duplicateBuilds: tally.duplicateBuilds, repeatedPatches: tally.repeatedPatches, recoveryMs });
  });

  it("case 8: SIGTERM while a rollout patch is in flight -> clean exit; after restart every Deployment patched exactly once", async () => {
    const s = await faultScenario({ prefix: "sigterm" });
    const names = ["t1", "t2", "t3"];
    // The proxy holds every Deployment patch, so SIGTERM lands while the patches are in flight.
    const proxy = await s.startApiProxy();
    const hold = proxy.holdWrites((r) => r.method === "PATCH" && /\/deployments\//.test(r.path));
    const ctl = await s.startController("one", { server: proxy.url, caFile: proxy.caFile });
    await s.createImages(names);
    await waitFor("a rollout patch in flight", () => hold.held() > 0, { timeoutMs: 60_000 });
    const termAt = Date.now();
    ctl.signal("SIGTERM");
    // Let the held patch through while the process drains.
    hold.release();
    const how = await waitForExit(ctl, "SIGTERM", 30_000);
    const shutdownMs = Date.now() - termAt;
    expect(how).toBe("exit code 0");
    await ctl.restart();
    const recoveryMs = await s.waitConverged(names);
    const tally = await s.tally(names);
    expect(tally.duplicateBuilds).toBe(0);
    expect(tally.repeatedPatches).toBe(0);
    const patches = (await s.operatorWrites((w) => w.resource === "deployments" && succeeded(w))).length;
    expect(patches).toBe(names.length);
    await recordFigures("8", { images: names.length, shutdownMs, recoveryMs, deploymentPatches: patches, repeatedPatches: tally.repeatedPatches });
  });
});
