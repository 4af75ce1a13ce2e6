import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { ExponentialBackoffRateLimiter } from "../../src/runtime/rate-limiter.ts";
import { WorkQueue } from "../../src/runtime/work-queue.ts";
import { runWorkers, type ReconcileResult } from "../../src/runtime/workers.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

function setup() {
  const clock = new FakeClock();
  const queue = new WorkQueue<string>({ clock, rateLimiter: new ExponentialBackoffRateLimiter({ baseMs: 5, maxMs: 1_000 }) });
  return { clock, queue, ...capturingLogger() };
}

describe("runWorkers", () => {
  it("success forgets the retry history; errors are logged and retried with growing backoff", async () => {
    const { clock, queue, logger, lines } = setup();
    const calls: number[] = [];
    let failuresLeft = 3;
    const workers = runWorkers({
      queue,
      logger,
      reconcile: async () => {
        calls.push(clock.nowMs());
        if (failuresLeft-- > 0) throw new Error("boom");
        return {};
      },
    });
    const t0 = clock.nowMs();
    queue.add("ns/a");
    await flushAsync();
    for (let i = 0; i < 10; i++) await clock.advanceToNext();
    expect(calls.map((t) => t - t0)).toEqual([0, 5, 15, 35]);
    expect(queue.numRequeues("ns/a")).toBe(0);
    const errors = lines.filter((l) => l.msg === "reconcile failed; retrying with backoff");
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatchObject({ key: "ns/a", retries: 0, err: { message: "boom" } });
    queue.shutDown();
    await workers.finished;
  });

  it("a reconcile that throws synchronously is handled like a rejection", async () => {
    const { clock, queue, logger } = setup();
    let n = 0;
    const workers = runWorkers<string>({
      queue,
      logger,
      reconcile: (() => {
        n++;
        throw new Error("sync");
      }) as never,
    });
    queue.add("k");
    await flushAsync();
    await clock.advance(5);
    expect(n).toBe(2);
    queue.shutDown();
    await workers.finished;
  });

  it.each<{ result: ReconcileResult | undefined; requeuedAfter: number | undefined }>([
    { result: { requeueAfterMs: 60_000 }, requeuedAfter: 60_000 },
    { result: {}, requeuedAfter: undefined },
    { result: undefined, requeuedAfter: undefined },
    { result: { requeueAfterMs: 0 }, requeuedAfter: undefined },
  ])("requeueAfter $result.requeueAfterMs -> key back after $requeuedAfter ms", async ({ result, requeuedAfter }) => {
    const { clock, queue, logger } = setup();
    const calls: number[] = [];
    queue.addRateLimited("k"); // some retry history that must be forgotten
    const workers = runWorkers({
      queue,
      logger,
      reconcile: async () => {
        calls.push(clock.nowMs());
        return result;
      },
    });
    await clock.advance(5);
    const first = calls[0] as number;
    await clock.advance(100_000); // less than two periods
    expect(calls.slice(1).map((t) => t - first)).toEqual(requeuedAfter === undefined ? [] : [requeuedAfter]);
    expect(queue.numRequeues("k")).toBe(0);
    queue.shutDown();
    await workers.finished;
  });

  it("runs up to `concurrency` keys at once, never one key twice, and drains on shutdown", async () => {
    const { queue, logger } = setup();
    const inFlight = new Set<string>();
    let maxInFlight = 0;
    let overlap = 0;
    const release: (() => void)[] = [];
    const done: string[] = [];
    const workers = runWorkers({
      queue,
      logger,
      concurrency: 3,
      reconcile: async (key) => {
        if (inFlight.has(key)) overlap++;
        inFlight.add(key);
        maxInFlight = Math.max(maxInFlight, inFlight.size);
        await new Promise<void>((resolve) => release.push(resolve));
        inFlight.delete(key);
        done.push(key);
      },
    });
    for (const key of ["a", "b", "c", "d", "a", "b"]) queue.add(key);
    await flushAsync();
    expect(inFlight.size).toBe(3);
    queue.add("a"); // dirty while in flight
    // Release one at a time until the queue is empty.
    while (release.length > 0) {
      release.shift()?.();
      await flushAsync();
    }
    expect(done.sort()).toEqual(["a", "a", "b", "b", "c", "d"]);
    expect(maxInFlight).toBe(3);
    expect(overlap).toBe(0);

    // Shutdown while one is in hand: finished waits for it.
    queue.add("e");
    await flushAsync();
    let finished = false;
    const drained = queue.shutDownWithDrain();
    void workers.finished.then(() => (finished = true));
    await flushAsync();
    expect(finished).toBe(false);
    release.shift()?.();
    await drained;
    await workers.finished;
    expect(finished).toBe(true);
    expect(done).toContain("e");
  });

  it("abort() aborts the signal reconciles see; child logger carries the key", async () => {
    const { queue, logger, lines } = setup();
    let seen: AbortSignal | undefined;
    const workers = runWorkers({
      queue,
      logger,
      reconcile: async (key, { signal, log }) => {
        seen = signal;
        log.info("working");
        await new Promise((resolve) => signal.addEventListener("abort", resolve));
        expect(key).toBe("x");
      },
    });
    queue.add("x");
    await flushAsync();
    expect(seen?.aborted).toBe(false);
    expect(lines.find((l) => l.msg === "working")).toMatchObject({ key: "x" });
    queue.shutDown();
    workers.abort(new Error("deadline"));
    await workers.finished;
    expect(seen?.aborted).toBe(true);
  });

  it("reports outcomes to metrics hooks", async () => {
    const { clock, queue, logger } = setup();
    const outcomes: string[] = [];
    const active: number[] = [];
    let n = 0;
    let now = 0;
    const workers = runWorkers({
      queue,
      logger,
      nowMs: () => (now += 500),
      metrics: { reconciled: (result, s) => outcomes.push(`${result}:${s}`), active: (c) => active.push(c) },
      reconcile: async () => {
        n++;
        if (n === 1) throw new Error("x");
        if (n === 2) return { requeueAfterMs: 10 };
        return {};
      },
    });
    queue.add("k");
    await flushAsync();
    await clock.advance(5);
    await clock.advance(10);
    expect(outcomes).toEqual(["error:0.5", "requeue_after:0.5", "success:0.5"]);
    expect(active).toEqual([1, 0, 1, 0, 1, 0]);
    queue.shutDown();
    await workers.finished;
  });

  it("rejects a bad concurrency", () => {
    const { queue, logger } = setup();
    expect(() => runWorkers({ queue, logger, concurrency: 0, reconcile: async () => ({}) })).toThrow(RangeError);
  });
});
