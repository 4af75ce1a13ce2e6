// Fault suite (docs/reliability.md), case 7: two replicas; the leader is frozen (SIGSTOP) with work
// in hand until well past its lease, the other takes over, then the old one wakes up (SIGCONT).
// The audit log tells the replicas apart by their token's credential id: the old leader must not
// make a single write after the new leader took the Lease.
import { describe, expect, it } from "vitest";
import { succeeded } from "../support/audit-log.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { waitFor } from "../support/kube.ts";
import { sleep } from "../support/process.ts";

describe("faults: leader election", () => {
  it("case 7: leader SIGSTOPped past its lease -> the other replica takes over; 0 writes by the old leader after that (audit log)", async () => {
    const s = await faultScenario({
      prefix: "freeze",
      config: { store: { poolSize: 8 }, concurrency: { builds: 8 } },
      kubelet: { holdMs: () => 500 + Math.random() * 1500 },
    });
    const a = await s.startController("a");
    const first = await s.waitLeading(a, undefined);
    const b = await s.startController("b");
    const names = ["f1", "f2", "f3", "f4", "f5", "f6"];
    await s.createImages(names);
    // Freeze the leader while it has builds running and rollouts to come.
    await waitFor("the leader started builds", async () => (await s.operatorWrites((w) => w.resource === "jobs" && succeeded(w))).length >= 2);
    a.signal("SIGSTOP");
    const stoppedAt = Date.now();
    const second = await s.waitLeading(b, first);
    const takeoverMs = Date.now() - stoppedAt;
    const takeover = (await s.operatorWrites((w) => w.resource === "leases" && succeeded(w) && w.credentialId === b.credentialId))[0];
    expect(takeover, "the new leader's Lease write in the audit log").toBeDefined();
    // Let the old leader sleep through a few more lease periods, then wake it.
    await sleep(3000);
    a.signal("SIGCONT");
    await s.waitConverged(names, 90_000);
    // Give the woken replica time to act on whatever it had in hand (its renew deadline and more).
    await waitFor("the old leader has stopped leading or exited", async () => !a.running() || (await s.leaseHolder()) === second, { timeoutMs: 30_000 });
    await sleep(3000);
    const byOld = await s.operatorWrites((w) => w.credentialId === a.credentialId && succeeded(w));
    expect(byOld.length, "the audit log names the old leader's writes before the freeze").toBeGreaterThan(0);
    // A write the API server received before the takeover was in flight when the leader froze; one
    // received after it was sent by a replica that no longer held the Lease.
    const late = byOld.filter((w) => w.receivedAt > takeover!.at);
    expect(late.map((w) => `${w.verb} ${w.resource}/${w.name ?? ""} received ${w.receivedAt - takeover!.at} ms after the takeover`)).toEqual([]);
    const tally = await s.tally(names);
    expect(tally).toMatchObject({ duplicateBuilds: 0, repeatedPatches: 0 });
    await recordFigures("7", { takeoverMs, oldLeaderWritesAfterTakeover: late.length, oldLeaderExit: a.running() ? "running" : await a.exited() });
  });
});
