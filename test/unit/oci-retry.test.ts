import { describe, expect, it } from "vitest";
import {
  backoffDelayMs,
  decideRetry,
  DEFAULT_RETRY_POLICY,
  isRetryableNetworkError,
  isRetryableStatus,
  parseRetryAfter,
  withRetry,
  type RetryPolicy,
} from "../../src/oci/retry.ts";
import { classifyRegistryFailure, RegistryError } from "../../src/oci/registry-error.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";

const policy: RetryPolicy = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 5000 };
const now = new Date("2026-01-01T00:00:00Z");

function errno(code: string): Error {
  return Object.assign(new Error(`connect ${code}`), { code });
}

describe("retry policy (pure)", () => {
  it.each([
    [500, true],
    [502, true],
    [503, true],
    [504, true],
    [429, true],
    [408, true],
    [501, false],
    [400, false],
    [401, false],
    [404, false],
  ])("status %i retryable: %s", (status, retryable) => expect(isRetryableStatus(status)).toBe(retryable));

  it("classifies connection failures", () => {
    expect(isRetryableNetworkError(errno("ECONNRESET"))).toBe(true);
    expect(isRetryableNetworkError(errno("ECONNREFUSED"))).toBe(true);
    expect(isRetryableNetworkError(errno("ETIMEDOUT"))).toBe(true);
    expect(isRetryableNetworkError(new Error("socket hang up"))).toBe(true);
    expect(isRetryableNetworkError(errno("ENOENT"))).toBe(false);
    expect(isRetryableNetworkError(errno("CERT_HAS_EXPIRED"))).toBe(false);
    expect(isRetryableNetworkError("ECONNRESET")).toBe(false);
  });

  it("parses Retry-After as seconds or an HTTP date", () => {
    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", now)).toBe(10_000);
    expect(parseRetryAfter("Wed, 31 Dec 2025 00:00:10 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter("-5", now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it("backs off exponentially with equal jitter, capped", () => {
    expect([1, 2, 3, 4, 5, 6].map((a) => backoffDelayMs(policy, a, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([1, 2, 3, 4, 5, 6].map((a) => backoffDelayMs(policy, a, () => 0.999999))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it.each([
    ["a retryable failure", 1, { retryable: true }, { retry: true, delayMs: 75 }],
    ["the last attempt", 4, { retryable: true }, { retry: false, delayMs: 0 }],
    ["a permanent failure", 1, { retryable: false }, { retry: false, delayMs: 0 }],
    ["Retry-After honoured exactly", 1, { retryable: true, retryAfterMs: 2000 }, { retry: true, delayMs: 2000 }],
    ["Retry-After of zero", 2, { retryable: true, retryAfterMs: 0 }, { retry: true, delayMs: 0 }],
    ["Retry-After beyond the limit", 1, { retryable: true, retryAfterMs: 60_000 }, { retry: false, delayMs: 0 }],
  ])("decides on %s", (_what, attempt, failure, decision) => {
    expect(decideRetry(policy, attempt, failure, () => 0.5)).toEqual(decision);
  });

  it("classifies registry errors by status, Retry-After and cause", () => {
    expect(classifyRegistryFailure(new RegistryError({ operation: "x", host: "h", status: 503 }))).toEqual({ retryable: true });
    expect(classifyRegistryFailure(new RegistryError({ operation: "x", host: "h", status: 429, retryAfterMs: 1000 }))).toEqual({
      retryable: true,
      retryAfterMs: 1000,
    });
    expect(classifyRegistryFailure(new RegistryError({ operation: "x", host: "h", status: 400 }))).toEqual({ retryable: false });
    expect(classifyRegistryFailure(new RegistryError({ operation: "x", host: "h", cause: errno("ECONNRESET") }))).toEqual({ retryable: true });
    expect(classifyRegistryFailure(new RegistryError({ operation: "x", host: "h", reason: "digest mismatch" }))).toEqual({ retryable: false });
    expect(classifyRegistryFailure(errno("EPIPE"))).toEqual({ retryable: true });
    expect(DEFAULT_RETRY_POLICY.maxAttempts).toBeGreaterThan(1);
  });
});

describe("withRetry (fake clock)", () => {
  it("waits the backoff between attempts and returns the first success", async () => {
    const clock = new FakeClock(now);
    const calls: number[] = [];
    const p = withRetry(
      async (attempt) => {
        calls.push(clock.nowMs());
        if (attempt < 3) throw errno("ECONNRESET");
        return "ok";
      },
      { policy, clock, random: () => 1 - Number.EPSILON, classify: classifyRegistryFailure },
    );
    await flushAsync();
    expect(calls).toHaveLength(1);
    await clock.advance(99);
    expect(calls).toHaveLength(1);
    await clock.advance(1);
    expect(calls).toHaveLength(2);
    await clock.advance(200);
    await expect(p).resolves.toBe("ok");
    expect(calls.map((t) => t - now.getTime())).toEqual([0, 100, 300]);
  });

  it("honours Retry-After from a 429", async () => {
    const clock = new FakeClock(now);
    const calls: number[] = [];
    const retries: number[] = [];
    const p = withRetry(
      async (attempt) => {
        calls.push(clock.nowMs() - now.getTime());
        if (attempt === 1) throw new RegistryError({ operation: "x", host: "h", status: 429, retryAfterMs: 3000 });
        return attempt;
      },
      { policy, clock, classify: classifyRegistryFailure, onRetry: (i) => retries.push(i.delayMs) },
    );
    await clock.advance(2999);
    expect(calls).toEqual([0]);
    await clock.advance(1);
    await expect(p).resolves.toBe(2);
    expect(calls).toEqual([0, 3000]);
    expect(retries).toEqual([3000]);
  });

  it("gives up after maxAttempts with the last error, and at once on a permanent error", async () => {
    const clock = new FakeClock(now);
    let n = 0;
    const p = withRetry(
      async () => {
        n++;
        throw new RegistryError({ operation: "x", host: "h", status: 503 });
      },
      { policy, clock, random: () => 0, classify: classifyRegistryFailure },
    );
    const settled = p.catch((e: unknown) => e);
    for (;;) {
      await flushAsync();
      if (!(await clock.advanceToNext())) break; // run every backoff timer
    }
    expect(await settled).toBeInstanceOf(RegistryError);
    expect(n).toBe(4);

    let m = 0;
    await expect(
      withRetry(
        async () => {
          m++;
          throw new RegistryError({ operation: "x", host: "h", status: 404 });
        },
        { policy, clock, classify: classifyRegistryFailure },
      ),
    ).rejects.toThrow(/HTTP 404/);
    expect(m).toBe(1);
  });

  it("stops when aborted while waiting", async () => {
    const clock = new FakeClock(now);
    const ac = new AbortController();
    const p = withRetry(
      async () => {
        throw errno("ECONNRESET");
      },
      { policy, clock, classify: classifyRegistryFailure, signal: ac.signal },
    );
    const settled = p.catch((e: unknown) => e);
    await flushAsync();
    ac.abort(new Error("cancelled"));
    expect(((await settled) as Error).message).toBe("cancelled");
  });
});
