import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { MIN_POLL_INTERVAL_MS, nextPollTime, pollJitterMs } from "../../src/controller/revision-poller.ts";

const T0 = Date.parse("2026-05-01T10:00:00Z");
const at = (ms: number) => new Date(ms);
const MIN = 60_000;

describe("nextPollTime", () => {
  const table: [string, number | undefined, number | undefined, number, number | undefined][] = [
    // name, lastPoll, interval, now, expected next
    ["never polled: due now", undefined, 5 * MIN, T0, T0],
    ["polling off: never", T0, undefined, T0 + 10 * MIN, undefined],
    ["polling off, never polled: never", undefined, undefined, T0, undefined],
    ["one interval after the last poll", T0, 5 * MIN, T0 + MIN, T0 + 5 * MIN],
    ["overdue: the time already passed", T0, 5 * MIN, T0 + 60 * MIN, T0 + 5 * MIN],
    ["a last poll in the future counts as now", T0 + 30 * MIN, 5 * MIN, T0, T0 + 5 * MIN],
    ["intervals below the floor are raised", T0, 1_000, T0, T0 + MIN_POLL_INTERVAL_MS],
  ];
  it.each(table)("%s", (_name, last, interval, now, expected) => {
    const next = nextPollTime(last === undefined ? undefined : at(last), interval, at(now));
    expect(next?.getTime()).toBe(expected);
  });

  it.each([0, -5, Number.NaN, Number.POSITIVE_INFINITY])("rejects interval %s", (interval) => {
    expect(() => nextPollTime(at(T0), interval, at(T0))).toThrow(RangeError);
  });

  it("spreads keys over [0, 10%) of the interval, the same on every call", () => {
    const interval = 10 * MIN;
    const spreads = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const j = pollJitterMs(interval, { key: `shop/web-${i}` });
      expect(j).toBeGreaterThanOrEqual(0);
      expect(j).toBeLessThan(interval * 0.1);
      expect(pollJitterMs(interval, { key: `shop/web-${i}` })).toBe(j);
      spreads.add(Math.floor(j / 6_000));
    }
    expect(spreads.size).toBeGreaterThan(8); // spread over most of the ten 6 s buckets
    expect(pollJitterMs(interval, {})).toBe(0);
    expect(pollJitterMs(interval, { key: "a", jitterRatio: 0 })).toBe(0);
    expect(() => pollJitterMs(interval, { key: "a", jitterRatio: 1 })).toThrow(RangeError);
    const next = nextPollTime(at(T0), interval, at(T0), { key: "shop/web" })!.getTime();
    expect(next - T0 - interval).toBe(pollJitterMs(interval, { key: "shop/web" }));
  });

  it("is never later than one interval (plus spread) from now, nor earlier than the last poll (property)", () => {
    fc.assert(
      fc.property(fc.integer({ min: -1e9, max: 1e9 }), fc.integer({ min: 1, max: 7 * 24 * 60 * MIN }), fc.string(), (offset, interval, key) => {
        const now = at(T0);
        const last = at(T0 + offset);
        const next = nextPollTime(last, interval, now, { key })!.getTime();
        const effective = Math.max(interval, MIN_POLL_INTERVAL_MS);
        expect(next).toBeLessThanOrEqual(T0 + effective * 1.1);
        expect(next).toBeGreaterThanOrEqual(Math.min(last.getTime(), T0) + effective);
      }),
    );
  });
});
