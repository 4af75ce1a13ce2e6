// Fault suite (docs/reliability.md), case 9: many unchanged NixImages, resynced again and again
// (resyncPeriod 1s): the operator must not write anything. NIO_FAULT_SCALE sets how many (CI: 40;
// the figure in docs/reliability.md says which count it was measured with).
import { describe, expect, it } from "vitest";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { waitFor } from "../support/kube.ts";

const count = Number(process.env.NIO_FAULT_SCALE ?? 40);

function reconciles(metrics: string): number {
  let sum = 0;
  for (const m of metrics.matchAll(/^controller_reconcile_total\{[^}]*\} (\d+)$/gm)) sum += Number(m[1]);
  return sum;
}

const notLease = (w: { resource: string }) => w.resource !== "leases";

describe("faults: scale", () => {
  it(`case 9: ${count} unchanged NixImages, 10 resyncs -> 0 writes`, { timeout: 300_000 }, async () => {
    const s = await faultScenario({ prefix: "idle", config: { resyncPeriod: "1s", store: { poolSize: 32 }, concurrency: { builds: 32, reconcilers: 8 } } });
    const ctl = await s.startController("one");
    const names = Array.from({ length: count }, (_, i) => `i${i}`);
    await s.createImages(names, { deployments: false });
    const convergeMs = await s.waitConverged(names, 240_000);
    await s.waitWritesSettle();
    const before = await s.operatorWrites(notLease);
    const reconcilesBefore = reconciles(await ctl.metrics());
    const startedAt = Date.now();
    await waitFor(`10 resyncs of ${count} NixImages`, async () => reconciles(await ctl.metrics()) - reconcilesBefore >= 10 * count, {
      timeoutMs: 120_000,
      intervalMs: 500,
    });
    const resyncMs = Date.now() - startedAt;
    const after = await s.operatorWrites(notLease);
    expect(after.slice(before.length).map((w) => `${w.verb} ${w.resource}/${w.name ?? ""}`)).toEqual([]);
    await recordFigures("9", {
      images: count,
      convergeMs,
      reconciles: reconciles(await ctl.metrics()) - reconcilesBefore,
      resyncMs,
      writesDuringResyncs: after.length - before.length,
    });
  });
});
