// Without leader election the replica leads for good: the cache-sync timeout of start() must not
// end leadership (it did: the leader tasks, e.g. the revision poller, stopped 120 s after start).
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Manager } from "../../src/runtime/manager.ts";

describe("Manager without leader election", () => {
  it("keeps the leader signal alive after the sync timeout has passed", async () => {
    const kc = { getCurrentCluster: () => undefined, applyToHTTPSOptions: async () => {} };
    const manager = new Manager({ kc: kc as never, logger: pino({ level: "silent" }), syncTimeoutMs: 20 });
    let leaderSignal: AbortSignal | undefined;
    manager.leaderTask("probe", (signal) => {
      leaderSignal = signal;
      return new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    });
    await manager.start();
    expect(manager.isLeader()).toBe(true);
    // A timer due after the sync timeout's: by the time it fires, that timeout has fired too.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(leaderSignal?.aborted).toBe(false);
    await manager.stop();
    expect(leaderSignal?.aborted).toBe(true);
  });
});
