import { describe, expect, it } from "vitest";
import { ExponentialBackoffRateLimiter } from "../../src/runtime/rate-limiter.ts";
import { WorkQueue, type WorkQueueMetrics } from "../../src/runtime/work-queue.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";

function newQueue(clock = new FakeClock(), metrics?: WorkQueueMetrics) {
  const queue = new WorkQueue<string>({ clock, rateLimiter: new ExponentialBackoffRateLimiter({ baseMs: 5, maxMs: 1_000_000 }), metrics });
  return { queue, clock };
}

/** Takes every key that is ready now (without waiting), in order. */
async function drainReady(queue: WorkQueue<string>): Promise<string[]> {
  const keys: string[] = [];
  while (queue.length > 0) keys.push((await queue.get()) as string);
  return keys;
}

describe("WorkQueue: dedup and ordering", () => {
  it.each([
    { adds: ["a", "b", "a", "c", "b", "a"], expected: ["a", "b", "c"] },
    { adds: ["x", "x", "x"], expected: ["x"] },
    { adds: [], expected: [] },
  ])("merges repeats of waiting keys: $adds -> $expected", async ({ adds, expected }) => {
    const { queue } = newQueue();
    for (const key of adds) queue.add(key);
    expect(queue.length).toBe(expected.length);
    expect(await drainReady(queue)).toEqual(expected);
  });

  it("hands waiting getters keys in FIFO order", async () => {
    const { queue } = newQueue();
    const got: string[] = [];
    const first = queue.get().then((k) => got.push(`1:${k}`));
    const second = queue.get().then((k) => got.push(`2:${k}`));
    queue.add("a");
    queue.add("b");
    await Promise.all([first, second]);
    expect(got).toEqual(["1:a", "2:b"]);
  });
});

describe("WorkQueue: one key never processed twice at once", () => {
  it("a key added while processing is marked dirty and re-queued only after done", async () => {
    const { queue } = newQueue();
    queue.add("a");
    const key = await queue.get();
    expect(key).toBe("a");
    queue.add("a");
    queue.add("a");
    // Not handed out again while a worker holds it.
    expect(queue.length).toBe(0);
    let second: string | undefined;
    void queue.get().then((k) => (second = k));
    await flushAsync();
    expect(second).toBeUndefined();
    queue.done("a");
    await flushAsync();
    expect(second).toBe("a");
    queue.done("a");
    expect(queue.length).toBe(0);
  });

  it("a key not added during processing is not re-queued by done", async () => {
    const { queue } = newQueue();
    queue.add("a");
    await queue.get();
    queue.done("a");
    expect(queue.length).toBe(0);
    queue.done("a"); // done twice is harmless
    expect(queue.length).toBe(0);
  });

  it("with many concurrent workers and random adds, no key is ever held twice", async () => {
    const { queue } = newQueue();
    const holding = new Set<string>();
    let violations = 0;
    let processed = 0;
    const worker = async () => {
      for (;;) {
        const key = await queue.get();
        if (key === undefined) return;
        if (holding.has(key)) violations++;
        holding.add(key);
        await flushAsync(1);
        if (processed++ % 3 === 0) queue.add(key); // re-added while in hand
        holding.delete(key);
        queue.done(key);
      }
    };
    const workers = Array.from({ length: 8 }, () => worker());
    for (let i = 0; i < 200; i++) {
      queue.add(`k${i % 5}`);
      if (i % 10 === 0) await flushAsync(1);
    }
    await flushAsync(20);
    await queue.shutDownWithDrain();
    await Promise.all(workers);
    expect(violations).toBe(0);
    expect(processed).toBeGreaterThan(5);
  });
});

describe("WorkQueue: delayed adds", () => {
  it("releases keys when their time comes, in due order", async () => {
    const { queue, clock } = newQueue();
    queue.addAfter("c", 300);
    queue.addAfter("a", 100);
    queue.addAfter("b", 200);
    queue.addAfter("b2", 200);
    expect(queue.length).toBe(0);
    expect(queue.delayedCount).toBe(4);
    await clock.advance(99);
    expect(queue.length).toBe(0);
    await clock.advance(1);
    expect(await drainReady(queue)).toEqual(["a"]);
    await clock.advance(150);
    expect(await drainReady(queue)).toEqual(["b", "b2"]);
    await clock.advance(49);
    expect(queue.length).toBe(0);
    await clock.advance(1);
    expect(await drainReady(queue)).toEqual(["c"]);
    expect(queue.delayedCount).toBe(0);
  });

  it("keys that fall due together come out ordered by due time, not insertion", async () => {
    const { queue, clock } = newQueue();
    queue.addAfter("late", 30);
    queue.addAfter("early", 10);
    queue.addAfter("middle", 20);
    await clock.advance(1000);
    expect(await drainReady(queue)).toEqual(["early", "middle", "late"]);
  });

  it.each([
    { name: "earlier second add wins", first: 500, second: 100, readyAt: 100 },
    { name: "later second add is ignored", first: 100, second: 500, readyAt: 100 },
    { name: "same time", first: 200, second: 200, readyAt: 200 },
  ])("the earliest pending time wins ($name)", async ({ first, second, readyAt }) => {
    const { queue, clock } = newQueue();
    queue.addAfter("k", first);
    queue.addAfter("k", second);
    expect(queue.delayedCount).toBe(1);
    await clock.advance(readyAt - 1);
    expect(queue.length).toBe(0);
    await clock.advance(1);
    expect(await drainReady(queue)).toEqual(["k"]);
    await clock.advance(1000);
    expect(queue.length).toBe(0); // only once
  });

  it("addAfter with 0 or a negative delay adds at once", () => {
    const { queue } = newQueue();
    queue.addAfter("a", 0);
    queue.addAfter("b", -5);
    expect(queue.length).toBe(2);
  });

  it("a delayed key that falls due while processing is marked dirty", async () => {
    const { queue, clock } = newQueue();
    queue.add("a");
    await queue.get();
    queue.addAfter("a", 10);
    await clock.advance(10);
    expect(queue.length).toBe(0);
    queue.done("a");
    expect(await drainReady(queue)).toEqual(["a"]);
  });
});

describe("WorkQueue: rate-limited adds", () => {
  it("backs off per key, and forget starts over", async () => {
    const { queue, clock } = newQueue();
    const readyAfter = async (key: string): Promise<number> => {
      const start = clock.nowMs();
      queue.addRateLimited(key);
      while (queue.length === 0) await clock.advanceToNext();
      const got = (await queue.get()) as string;
      queue.done(got);
      return clock.nowMs() - start;
    };
    expect([await readyAfter("a"), await readyAfter("a"), await readyAfter("a"), await readyAfter("a")]).toEqual([5, 10, 20, 40]);
    expect(queue.numRequeues("a")).toBe(4);
    expect(await readyAfter("b")).toBe(5);
    queue.forget("a");
    expect(queue.numRequeues("a")).toBe(0);
    expect(await readyAfter("a")).toBe(5);
  });
});

describe("WorkQueue: shutdown", () => {
  it("wakes waiting getters with undefined, and later gets return undefined", async () => {
    const { queue } = newQueue();
    const waiting = queue.get();
    queue.shutDown();
    expect(await waiting).toBeUndefined();
    expect(await queue.get()).toBeUndefined();
  });

  it("stops accepting keys and drops waiting and delayed ones", async () => {
    const { queue, clock } = newQueue();
    queue.add("a");
    queue.addAfter("b", 10);
    queue.shutDown();
    queue.add("c");
    queue.addAfter("d", 1);
    queue.addRateLimited("e");
    await clock.advance(100);
    expect(queue.length).toBe(0);
    expect(queue.delayedCount).toBe(0);
    expect(clock.pending()).toBe(0);
    expect(await queue.get()).toBeUndefined();
  });

  it("shutDownWithDrain waits for keys in hand and does not re-queue dirty ones", async () => {
    const { queue } = newQueue();
    queue.add("a");
    queue.add("b");
    const a = (await queue.get()) as string;
    queue.add("a"); // dirty
    let drained = false;
    const drain = queue.shutDownWithDrain().then(() => (drained = true));
    await flushAsync();
    expect(drained).toBe(false);
    queue.done(a);
    await drain;
    expect(drained).toBe(true);
    expect(queue.length).toBe(0);
    expect(await queue.get()).toBeUndefined();
  });

  it("shutDownWithDrain resolves at once when nothing is in hand", async () => {
    const { queue } = newQueue();
    await queue.shutDownWithDrain();
    expect(queue.shuttingDown).toBe(true);
  });
});

describe("WorkQueue: metrics hooks", () => {
  it("reports depth, adds, latency, work duration and retries", async () => {
    const events: string[] = [];
    const metrics: WorkQueueMetrics = {
      depth: (n) => events.push(`depth=${n}`),
      added: () => events.push("add"),
      queueLatency: (s) => events.push(`latency=${s}`),
      workDuration: (s) => events.push(`work=${s}`),
      retried: () => events.push("retry"),
    };
    const { queue, clock } = newQueue(new FakeClock(), metrics);
    queue.add("a");
    queue.add("a");
    await clock.advance(1500);
    const key = (await queue.get()) as string;
    await clock.advance(250);
    queue.done(key);
    queue.addRateLimited("a");
    await clock.advance(5);
    expect(events).toEqual(["add", "depth=1", "add", "latency=1.5", "depth=0", "work=0.25", "retry", "add", "depth=1"]);
  });
});
