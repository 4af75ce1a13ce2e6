import type { Clock } from "./clock.ts";
import { systemClock } from "./clock.ts";
import type { RateLimiter } from "./rate-limiter.ts";
import { controllerRateLimiter } from "./rate-limiter.ts";

/** Hooks a queue calls so a metrics registry (or a test) can observe it. All optional. */
export interface WorkQueueMetrics {
  /** Number of keys waiting to be handed out, after every change. */
  depth?(value: number): void;
  /** A key was added (including merged repeats and requeues). */
  added?(): void;
  /** Seconds a key waited in the queue before a worker got it. */
  queueLatency?(seconds: number): void;
  /** Seconds from `get` to `done` for one key. */
  workDuration?(seconds: number): void;
  /** A key was re-added through the rate limiter. */
  retried?(): void;
}

export interface WorkQueueOptions<K> {
  clock?: Clock;
  /** Per-key retry delays for `addRateLimited`. Default: 5 ms .. 1000 s backoff plus a 10 qps bucket. */
  rateLimiter?: RateLimiter<K>;
  metrics?: WorkQueueMetrics;
}

/**
 * A keyed work queue in the manner of client-go's rate-limited delaying queue:
 *
 * - a key is in the queue at most once: adding it again while it waits merges the two;
 * - a key is never handed to two workers at once: adding a key while a worker has it marks it dirty,
 *   and `done` puts it back in the queue;
 * - `addAfter` holds a key back for a time on the Clock; when the same key is held twice the earlier
 *   time wins; `addRateLimited` holds it back by the rate limiter's delay for that key;
 * - `shutDown` stops accepting keys and makes `get` return undefined; keys still waiting are dropped
 *   (the next process lists everything again); `shutDownWithDrain` also waits until the workers have
 *   called `done` for every key they hold.
 *
 * Every `get` that returns a key must be followed by exactly one `done(key)`.
 */
export class WorkQueue<K = string> {
  readonly #clock: Clock;
  readonly #rateLimiter: RateLimiter<K>;
  readonly #metrics: WorkQueueMetrics;

  /** Keys ready to hand out, in order; `#head` is the index of the first. */
  #queue: K[] = [];
  #head = 0;
  /** Keys that need processing: the queued ones plus processing ones added again. */
  readonly #dirty = new Set<K>();
  /** Keys a worker holds, with the time it got them. */
  readonly #processing = new Map<K, number>();
  /** When each queued key entered the queue. */
  readonly #queuedAt = new Map<K, number>();
  /** Keys held back until a time: key -> [due ms, sequence]. */
  readonly #delayed = new Map<K, { dueMs: number; seq: number }>();
  #delayedSeq = 0;
  #delayTimer: { cancel(): void; dueMs: number } | undefined;
  readonly #waiters: ((key: K | undefined) => void)[] = [];
  #drainWaiters: (() => void)[] = [];
  #shuttingDown = false;

  constructor(options: WorkQueueOptions<K> = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#rateLimiter = options.rateLimiter ?? controllerRateLimiter<K>({ clock: this.#clock });
    this.#metrics = options.metrics ?? {};
  }

  /** Keys waiting to be handed out (not counting delayed or processing ones). */
  get length(): number {
    return this.#queue.length - this.#head;
  }

  /** Keys a worker currently holds. */
  get processingCount(): number {
    return this.#processing.size;
  }

  /** Keys held back by `addAfter`/`addRateLimited`. */
  get delayedCount(): number {
    return this.#delayed.size;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Queues a key now. Ignored after shutdown. */
  add(key: K): void {
    if (this.#shuttingDown) return;
    this.#metrics.added?.();
    if (this.#dirty.has(key)) return;
    this.#dirty.add(key);
    if (this.#processing.has(key)) return;
    this.#push(key);
  }

  /** Queues a key after `ms` of clock time; if it is already held back, the earlier time wins. */
  addAfter(key: K, ms: number): void {
    if (this.#shuttingDown) return;
    if (!(ms > 0)) {
      this.add(key);
      return;
    }
    const dueMs = this.#clock.now().getTime() + ms;
    const existing = this.#delayed.get(key);
    if (existing !== undefined && existing.dueMs <= dueMs) return;
    this.#delayed.set(key, { dueMs, seq: this.#delayedSeq++ });
    if (this.#delayTimer === undefined || dueMs < this.#delayTimer.dueMs) this.#armDelayTimer(dueMs);
  }

  /** Queues a key after the rate limiter's delay for it (which grows with each call until `forget`). */
  addRateLimited(key: K): void {
    if (this.#shuttingDown) return;
    this.#metrics.retried?.();
    this.addAfter(key, this.#rateLimiter.when(key));
  }

  /** Clears the key's retry history (call after it was processed successfully). */
  forget(key: K): void {
    this.#rateLimiter.forget(key);
  }

  /** How many times the key has been re-added through the rate limiter since the last `forget`. */
  numRequeues(key: K): number {
    return this.#rateLimiter.retries(key);
  }

  /** The next key to process, waiting for one if needed; undefined once the queue is shut down. */
  get(): Promise<K | undefined> {
    if (this.#shuttingDown) return Promise.resolve(undefined);
    if (this.length > 0 && this.#waiters.length === 0) return Promise.resolve(this.#take());
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      this.#dispatch();
    });
  }

  /** Marks the key as processed; if it was added meanwhile it goes back into the queue. */
  done(key: K): void {
    const startedMs = this.#processing.get(key);
    if (startedMs === undefined) return;
    this.#processing.delete(key);
    this.#metrics.workDuration?.((this.#clock.now().getTime() - startedMs) / 1000);
    if (this.#dirty.has(key) && !this.#shuttingDown) {
      this.#push(key);
    } else {
      this.#dirty.delete(key);
    }
    if (this.#processing.size === 0 && this.#drainWaiters.length > 0) {
      const waiters = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Stops accepting keys; waiting `get` calls and all later ones return undefined. */
  shutDown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.#delayTimer?.cancel();
    this.#delayTimer = undefined;
    this.#delayed.clear();
    for (const key of this.#queue.slice(this.#head)) {
      this.#dirty.delete(key);
      this.#queuedAt.delete(key);
    }
    this.#queue = [];
    this.#head = 0;
    this.#metrics.depth?.(0);
    const waiters = this.#waiters.splice(0);
    for (const resolve of waiters) resolve(undefined);
  }

  /** `shutDown`, then resolves once every key handed out has been marked `done`. */
  shutDownWithDrain(): Promise<void> {
    this.shutDown();
    if (this.#processing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  #push(key: K): void {
    this.#queue.push(key);
    this.#queuedAt.set(key, this.#clock.now().getTime());
    this.#metrics.depth?.(this.length);
    this.#dispatch();
  }

  #take(): K {
    const key = this.#queue[this.#head] as K;
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    const nowMs = this.#clock.now().getTime();
    this.#processing.set(key, nowMs);
    this.#dirty.delete(key);
    const queuedAt = this.#queuedAt.get(key);
    this.#queuedAt.delete(key);
    if (queuedAt !== undefined) this.#metrics.queueLatency?.((nowMs - queuedAt) / 1000);
    this.#metrics.depth?.(this.length);
    return key;
  }

  #dispatch(): void {
    while (this.#waiters.length > 0 && this.length > 0) {
      const resolve = this.#waiters.shift() as (key: K | undefined) => void;
      resolve(this.#take());
    }
  }

  #armDelayTimer(dueMs: number): void {
    this.#delayTimer?.cancel();
    const delay = Math.max(0, dueMs - this.#clock.now().getTime());
    const timer = this.#clock.setTimeout(() => this.#onDelayTimer(), delay);
    this.#delayTimer = { cancel: () => timer.cancel(), dueMs };
  }

  #onDelayTimer(): void {
    this.#delayTimer = undefined;
    if (this.#shuttingDown) return;
    const nowMs = this.#clock.now().getTime();
    const due: [K, { dueMs: number; seq: number }][] = [];
    let nextDueMs = Infinity;
    for (const entry of this.#delayed) {
      if (entry[1].dueMs <= nowMs) due.push(entry);
      else nextDueMs = Math.min(nextDueMs, entry[1].dueMs);
    }
    due.sort((a, b) => a[1].dueMs - b[1].dueMs || a[1].seq - b[1].seq);
    for (const [key] of due) {
      this.#delayed.delete(key);
      this.add(key);
    }
    if (nextDueMs !== Infinity) this.#armDelayTimer(nextDueMs);
  }
}
