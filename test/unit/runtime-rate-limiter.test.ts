import { describe, expect, it } from "vitest";
import {
  ExponentialBackoffRateLimiter,
  MaxOfRateLimiter,
  TokenBucketRateLimiter,
  backoffDelay,
  controllerRateLimiter,
} from "../../src/runtime/rate-limiter.ts";
import { FakeClock } from "../support/fake-clock.ts";

describe("ExponentialBackoffRateLimiter", () => {
  it.each([
    { name: "client-go defaults", options: {}, expected: [5, 10, 20, 40, 80, 160] },
    { name: "custom base", options: { baseMs: 100, maxMs: 10_000 }, expected: [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000] },
    { name: "base equals max", options: { baseMs: 7, maxMs: 7 }, expected: [7, 7, 7] },
  ])("grows per failure and caps ($name)", ({ options, expected }) => {
    const limiter = new ExponentialBackoffRateLimiter(options);
    expect(expected.map(() => limiter.when("a"))).toEqual(expected);
    expect(limiter.retries("a")).toBe(expected.length);
  });

  it("reaches the 1000 s cap with the defaults and stays there", () => {
    const limiter = new ExponentialBackoffRateLimiter();
    const delays = Array.from({ length: 40 }, () => limiter.when("k"));
    expect(delays[17]).toBe(655_360);
    expect(delays[18]).toBe(1_000_000);
    expect(delays.slice(18).every((d) => d === 1_000_000)).toBe(true);
    expect(Math.max(...delays)).toBe(1_000_000);
  });

  it("keeps keys apart, and forget resets one key only", () => {
    const limiter = new ExponentialBackoffRateLimiter<string>();
    limiter.when("a");
    limiter.when("a");
    limiter.when("b");
    expect([limiter.retries("a"), limiter.retries("b")]).toEqual([2, 1]);
    limiter.forget("a");
    expect([limiter.retries("a"), limiter.retries("b")]).toEqual([0, 1]);
    expect(limiter.when("a")).toBe(5);
    expect(limiter.when("b")).toBe(10);
  });

  it("rejects nonsense", () => {
    expect(() => new ExponentialBackoffRateLimiter({ baseMs: 0 })).toThrow(RangeError);
    expect(() => new ExponentialBackoffRateLimiter({ baseMs: 10, maxMs: 5 })).toThrow(RangeError);
  });

  it.each([
    [5, 1_000_000, 0, 5],
    [5, 1_000_000, 3, 40],
    [5, 1_000_000, 500, 1_000_000],
    [5, 1_000_000, 5000, 1_000_000],
    [1e300, Number.MAX_VALUE, 100, Number.MAX_VALUE],
  ])("backoffDelay(%d, %d, %d) = %d", (base, max, exponent, expected) => {
    expect(backoffDelay(base, max, exponent)).toBe(expected);
  });
});

describe("TokenBucketRateLimiter", () => {
  it("lets a burst through, then spaces requests at qps, and refills with time", async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucketRateLimiter({ qps: 2, burst: 3, clock });
    expect([bucket.when("a"), bucket.when("b"), bucket.when("c")]).toEqual([0, 0, 0]);
    expect([bucket.when("d"), bucket.when("e")]).toEqual([500, 1000]);
    await clock.advance(10_000);
    // Full again (capped at burst), not 20 tokens.
    expect([bucket.when("a"), bucket.when("a"), bucket.when("a"), bucket.when("a")]).toEqual([0, 0, 0, 500]);
    expect(bucket.retries("a")).toBe(0);
  });
});

describe("combined limiters", () => {
  it("MaxOf takes the longest delay and forgets in all", () => {
    const clock = new FakeClock();
    const limiter = new MaxOfRateLimiter<string>(new ExponentialBackoffRateLimiter({ baseMs: 5 }), new TokenBucketRateLimiter({ qps: 1, burst: 1, clock }));
    expect(limiter.when("a")).toBe(5); // token available; backoff 5
    expect(limiter.when("a")).toBe(1000); // bucket empty: 1 s beats 10 ms
    expect(limiter.retries("a")).toBe(2);
    limiter.forget("a");
    expect(limiter.retries("a")).toBe(0);
  });

  it("controllerRateLimiter: per-key backoff plus an overall bucket, which can be turned off", () => {
    const clock = new FakeClock();
    const withBucket = controllerRateLimiter<string>({ clock, bucket: { qps: 10, burst: 2 } });
    expect([withBucket.when("a"), withBucket.when("b"), withBucket.when("c")]).toEqual([5, 5, 100]);
    const noBucket = controllerRateLimiter<string>({ clock, bucket: false });
    expect([noBucket.when("a"), noBucket.when("b"), noBucket.when("c")]).toEqual([5, 5, 5]);
  });
});
