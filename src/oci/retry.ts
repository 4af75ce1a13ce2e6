// Retry policy for registry requests: exponential backoff with jitter on 5xx/408/429 and on
// connection-level failures (reset, refused, timed out), honouring Retry-After. The decision
// functions are pure; `withRetry` takes the Clock and the random source as parameters.
import type { Clock } from "../runtime/clock.ts";

export interface RetryPolicy {
  /** Total attempts including the first. */
  maxAttempts: number;
  /** Delay before the 2nd attempt; doubles each time. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** A Retry-After longer than this is not waited for: the error is returned instead. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 5,
  baseDelayMs: 500,
  maxDelayMs: 15_000,
  maxRetryAfterMs: 120_000,
};

/** What a failure says about retrying. */
export interface FailureInfo {
  retryable: boolean;
  /** Milliseconds the server asked us to wait (Retry-After). */
  retryAfterMs?: number;
}

const retryableStatuses = new Set([408, 429, 500, 502, 503, 504]);

export function isRetryableStatus(status: number): boolean {
  return retryableStatuses.has(status);
}

const retryableCodes = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "ERR_STREAM_PREMATURE_CLOSE",
  "UND_ERR_SOCKET",
]);

/** Connection-level failures worth another attempt. */
export function isRetryableNetworkError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === "string" && retryableCodes.has(code)) return true;
  return /socket hang up|other side closed/i.test(err.message);
}

/** Retry-After as milliseconds from `now`: delta-seconds or an HTTP-date; undefined when absent/bad. */
export function parseRetryAfter(value: string | undefined, now: Date): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at) || !/[a-z]/i.test(v)) return undefined;
  return Math.max(0, at - now.getTime());
}

/**
 * Backoff before attempt `attempt + 1` after `attempt` failed attempts (1-based): base * 2^(n-1),
 * capped, with "equal jitter" (between half and all of it). `random` returns [0, 1).
 */
export function backoffDelayMs(policy: RetryPolicy, attempt: number, random: () => number): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + (exp / 2) * random());
}

export interface RetryDecision {
  retry: boolean;
  delayMs: number;
}

/** Whether to try again after `attempt` failed attempts, and how long to wait first. */
export function decideRetry(policy: RetryPolicy, attempt: number, failure: FailureInfo, random: () => number): RetryDecision {
  if (!failure.retryable || attempt >= policy.maxAttempts) return { retry: false, delayMs: 0 };
  if (failure.retryAfterMs !== undefined) {
    if (failure.retryAfterMs > policy.maxRetryAfterMs) return { retry: false, delayMs: 0 };
    return { retry: true, delayMs: failure.retryAfterMs };
  }
  return { retry: true, delayMs: backoffDelayMs(policy, attempt, random) };
}

export interface WithRetryOptions {
  policy?: RetryPolicy;
  clock: Clock;
  random?: () => number;
  /** How a thrown error counts; not retryable unless it says so. */
  classify: (err: unknown) => FailureInfo;
  /** Called before waiting for another attempt (for logging). */
  onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void;
  signal?: AbortSignal;
}

/** Runs `fn` until it succeeds, a failure is not retryable, or the attempts are used up. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, options: WithRetryOptions): Promise<T> {
  const policy = options.policy ?? DEFAULT_RETRY_POLICY;
  const random = options.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const decision = decideRetry(policy, attempt, options.classify(err), random);
      if (!decision.retry) throw err;
      options.onRetry?.({ attempt, delayMs: decision.delayMs, error: err });
      await options.clock.sleep(decision.delayMs, options.signal);
    }
  }
}
