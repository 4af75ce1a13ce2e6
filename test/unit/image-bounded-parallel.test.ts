import { describe, expect, it } from "vitest";
import { mapBounded } from "../../src/image/bounded-parallel.ts";

const tick = (ms = 1) => new Promise((r) => setTimeout(r, ms));

describe("mapBounded", () => {
  it("keeps results in input order and never runs more than the limit", async () => {
    let running = 0;
    let max = 0;
    const out = await mapBounded([5, 1, 4, 2, 3], 2, async (n, i) => {
      running++;
      max = Math.max(max, running);
      await tick(n);
      running--;
      return `${i}:${n}`;
    });
    expect(out).toEqual(["0:5", "1:1", "2:4", "3:2", "4:3"]);
    expect(max).toBe(2);
  });

  it("starts nothing new after a failure and throws the first error once running tasks end", async () => {
    const started: number[] = [];
    let finished = 0;
    const p = mapBounded([0, 1, 2, 3, 4, 5], 2, async (n) => {
      started.push(n);
      if (n === 1) throw new Error("boom 1");
      await tick(5);
      finished++;
      return n;
    });
    await expect(p).rejects.toThrow("boom 1");
    expect(started).toEqual([0, 1]);
    expect(finished).toBe(1); // task 0 was allowed to finish
  });

  it("handles an empty list and rejects a bad limit", async () => {
    expect(await mapBounded([], 3, async () => 1)).toEqual([]);
    await expect(mapBounded([1], 0, async () => 1)).rejects.toThrow(/positive integer/);
  });

  it("stops starting tasks when aborted", async () => {
    const ac = new AbortController();
    const started: number[] = [];
    const p = mapBounded(
      [0, 1, 2, 3],
      1,
      async (n) => {
        started.push(n);
        if (n === 1) ac.abort(new Error("stop"));
        return n;
      },
      ac.signal,
    );
    await expect(p).rejects.toThrow("stop");
    expect(started).toEqual([0, 1]);
  });
});
