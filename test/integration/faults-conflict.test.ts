// Fault suite (docs/reliability.md), case 6: a conflict storm. A second writer patches every
// NixImage 10 times a second while the operator builds and rolls out, and a TLS fault proxy answers
// half of the operator's NixImage writes with 409 Conflict. The operator must converge with a
// bounded number of write attempts per NixImage, and write nothing at all once it has converged
// while the storm goes on (the other writer's changes are not its business).
import { describe, expect, it } from "vitest";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { succeeded } from "../support/audit-log.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { kubeClients } from "../support/kube.ts";
import { sleep } from "../support/process.ts";

const api = "/apis/niximage.io/v1alpha1";

describe("faults: conflicts", () => {
  it("case 6: second writer at 10/s per NixImage and 50% injected 409s -> converges; writes per NixImage bounded; 0 writes after convergence", async () => {
    const s = await faultScenario({ prefix: "storm", kubelet: { holdMs: () => 500 + Math.random() * 1000 } });
    const proxy = await s.startApiProxy();
    const isImageWrite = (r: { method: string; path: string }) => r.method !== "GET" && r.path.includes("/niximages/");
    proxy.failWrites({ status: 409, match: isImageWrite, probability: 0.5 });
    await s.startController("one", { server: proxy.url, caFile: proxy.caFile });
    const names = ["s1", "s2", "s3", "s4"];
    await s.createImages(names);

    // Lease renewals and Events are not writes to the objects the operator manages.
    const managedWrites = () => proxy.requests.filter((r) => r.method !== "GET" && !/\/(leases|events)(\/|\?|$)/.test(r.path)).length;
    let storming = true;
    let stormWrites = 0;
    const storm = (async () => {
      while (storming) {
        const started = Date.now();
        for (const name of names) {
          await kubeRequestJson(kubeClients().kc, "PATCH", `${api}/namespaces/${s.namespace}/niximages/${name}`, {
            body: { metadata: { annotations: { "storm.test/tick": String(stormWrites) } } },
            contentType: "application/merge-patch+json",
          }).then(
            () => stormWrites++,
            () => undefined,
          );
        }
        await sleep(Math.max(0, 100 - (Date.now() - started)));
      }
    })();
    try {
      await s.waitConverged(names, 90_000);
      const attemptsOf = (name: string) => proxy.requests.filter((r) => isImageWrite(r) && new RegExp(`/niximages/${name}(/|$|\\?)`).test(r.path));
      const perImage = Object.fromEntries(names.map((n) => [n, attemptsOf(n).length]));
      const conflicts = proxy.requests.filter((r) => r.injected === "status 409").length;
      // Quiet once converged: 5 s of storm, no operator write of any kind.
      await s.waitWritesSettle();
      const before = managedWrites();
      await sleep(5000);
      const after = managedWrites();
      expect(after - before, "operator writes during 5 s of storm after convergence").toBe(0);
      // Bounded: a handful of status writes per NixImage, each retried a few times at most (half of them conflict).
      const landed = await s.operatorWrites((w) => w.resource === "niximages" && succeeded(w));
      const landedPerImage = Object.fromEntries(names.map((n) => [n, landed.filter((w) => w.name === n).length]));
      for (const name of names) {
        expect(landedPerImage[name], `writes on NixImage ${name} that landed`).toBeLessThanOrEqual(15);
        expect(perImage[name], `write attempts on NixImage ${name}`).toBeLessThanOrEqual(60);
      }
      const tally = await s.tally(names);
      expect(tally).toMatchObject({ duplicateBuilds: 0, repeatedPatches: 0 });
      await recordFigures("6", {
        stormWrites,
        injectedConflicts: conflicts,
        operatorWriteAttemptsPerImage: perImage,
        operatorWritesLandedPerImage: landedPerImage,
        writesAfterConvergence: after - before,
      });
    } finally {
      storming = false;
      await storm;
    }
  });
});
