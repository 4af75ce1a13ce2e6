import type { Clock } from "./clock.ts";
import { systemClock } from "./clock.ts";

/**
 * Decides how long a key waits before it is retried. `when` records a failure and returns the
 * delay for this retry; `forget` clears the key's history after a success; `retries` tells how
 * often the key has failed since.
 */
export interface RateLimiter<K = string> {
  when(key: K): number;
  forget(key: K): void;
  retries(key: K): number;
}

export interface ExponentialBackoffOptions {
  /** Delay after the first failure. Default 5 ms. */
  baseMs?: number;
  /** Upper bound of the delay. Default 1000 s. */
  maxMs?: number;
}

/** Per-key exponential backoff: base * 2^failures, capped at max (client-go's item limiter). */
export class ExponentialBackoffRateLimiter<K = string> implements RateLimiter<K> {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly #failures = new Map<K, number>();

  constructor(options: ExponentialBackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 5;
    this.maxMs = options.maxMs ?? 1_000_000;
    if (!(this.baseMs > 0) || !(this.maxMs >= this.baseMs)) {
      throw new RangeError(`backoff needs 0 < baseMs <= maxMs, got ${this.baseMs} and ${this.maxMs}`);
    }
  }

  when(key: K): number {
    const failures = this.#failures.get(key) ?? 0;
    this.#failures.set(key, failures + 1);
    return backoffDelay(this.baseMs, this.maxMs, failures);
  }

  forget(key: K): void {
    this.#failures.delete(key);
  }

  retries(key: K): number {
    return this.#failures.get(key) ?? 0;
  }
}

/** base * 2^exponent capped at max, without overflowing for large exponents. */
export function backoffDelay(baseMs: number, maxMs: number, exponent: number): number {
  if (exponent >= 1024) return maxMs;
  const delay = baseMs * 2 ** exponent;
  return Number.isFinite(delay) ? Math.min(delay, maxMs) : maxMs;
}

export interface TokenBucketOptions {
  /** Tokens added per second. Default 10. */
  qps?: number;
  /** Bucket size: how many can go at once after a quiet time. Default 100. */
  burst?: number;
  clock?: Clock;
}

/**
 * One bucket shared by all keys, to bound the overall retry rate. `when` reserves a token and
 * returns how long to wait until it is available (so a burst of failures is spread out).
 */
export class TokenBucketRateLimiter<K = string> implements RateLimiter<K> {
  readonly qps: number;
  readonly burst: number;
  readonly #clock: Clock;
  #tokens: number;
  #lastMs: number;

  constructor(options: TokenBucketOptions = {}) {
    this.qps = options.qps ?? 10;
    this.burst = options.burst ?? 100;
    if (!(this.qps > 0) || !(this.burst >= 1)) {
      throw new RangeError(`token bucket needs qps > 0 and burst >= 1, got ${this.qps} and ${this.burst}`);
    }
    this.#clock = options.clock ?? systemClock;
    this.#tokens = this.burst;
    this.#lastMs = this.#clock.now().getTime();
  }

  when(_key: K): number {
    const nowMs = this.#clock.now().getTime();
    const elapsedMs = Math.max(0, nowMs - this.#lastMs);
    this.#lastMs = nowMs;
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsedMs * this.qps) / 1000);
    this.#tokens -= 1;
    if (this.#tokens >= 0) return 0;
    return Math.ceil((-this.#tokens * 1000) / this.qps);
  }

  forget(_key: K): void {}

  retries(_key: K): number {
    return 0;
  }
}

/** The longest delay of several limiters wins; forget/retries go to all of them. */
export class MaxOfRateLimiter<K = string> implements RateLimiter<K> {
  readonly #limiters: readonly RateLimiter<K>[];

  constructor(...limiters: RateLimiter<K>[]) {
    if (limiters.length === 0) throw new RangeError("MaxOfRateLimiter needs at least one limiter");
    this.#limiters = limiters;
  }

  when(key: K): number {
    let delay = 0;
    for (const limiter of this.#limiters) delay = Math.max(delay, limiter.when(key));
    return delay;
  }

  forget(key: K): void {
    for (const limiter of this.#limiters) limiter.forget(key);
  }

  retries(key: K): number {
    let retries = 0;
    for (const limiter of this.#limiters) retries = Math.max(retries, limiter.retries(key));
    return retries;
  }
}

export interface ControllerRateLimiterOptions extends ExponentialBackoffOptions {
  /** Overall bucket; `false` turns it off. Default 10 qps, burst 100 (client-go's default). */
  bucket?: TokenBucketOptions | false;
  clock?: Clock;
}

/** Per-key exponential backoff (5 ms .. 1000 s) combined with an overall token bucket. */
export function controllerRateLimiter<K = string>(options: ControllerRateLimiterOptions = {}): RateLimiter<K> {
  const perKey = new ExponentialBackoffRateLimiter<K>(options);
  if (options.bucket === false) return perKey;
  const bucket = new TokenBucketRateLimiter<K>({ clock: options.clock, ...options.bucket });
  return new MaxOfRateLimiter<K>(perKey, bucket);
}
