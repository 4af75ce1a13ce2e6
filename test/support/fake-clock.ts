import type { Clock } from "../../src/runtime/clock.ts";

interface PendingTimer {
  readonly seq: number;
  readonly dueMs: number;
  readonly fn: () => void;
}

/**
 * A Clock whose time moves only when a test says so. Timers fire in due order (ties in the order
 * they were set), each with `now()` equal to its due time, and the microtasks that a timer's
 * callback starts run before the next timer fires, so async code scheduled by a timer (a promise
 * chain that sets another timer) behaves as it would with real time.
 */
export class FakeClock implements Clock {
  #nowMs: number;
  #seq = 0;
  #timers: PendingTimer[] = [];

  constructor(start: Date | number = Date.parse("2026-01-01T00:00:00Z")) {
    this.#nowMs = typeof start === "number" ? start : start.getTime();
  }

  now(): Date {
    return new Date(this.#nowMs);
  }

  nowMs(): number {
    return this.#nowMs;
  }

  setTimeout(fn: () => void, ms: number): { cancel(): void } {
    const timer: PendingTimer = { seq: this.#seq++, dueMs: this.#nowMs + Math.max(0, ms), fn };
    this.#timers.push(timer);
    return {
      cancel: () => {
        const index = this.#timers.indexOf(timer);
        if (index >= 0) this.#timers.splice(index, 1);
      },
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        timer.cancel();
        reject(signal?.reason);
      };
      const timer = this.setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Number of timers not yet fired or cancelled. */
  pending(): number {
    return this.#timers.length;
  }

  /** Milliseconds until the next timer is due, or undefined when none is pending. */
  nextDueInMs(): number | undefined {
    const next = this.#next();
    return next === undefined ? undefined : next.dueMs - this.#nowMs;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, in order. */
  async advance(ms: number): Promise<void> {
    const target = this.#nowMs + ms;
    await flushAsync();
    for (;;) {
      const next = this.#next();
      if (next === undefined || next.dueMs > target) break;
      this.#timers.splice(this.#timers.indexOf(next), 1);
      this.#nowMs = Math.max(this.#nowMs, next.dueMs);
      next.fn();
      await flushAsync();
    }
    this.#nowMs = target;
    await flushAsync();
  }

  /** Moves time to the next pending timer and fires it (and any due at the same instant). */
  async advanceToNext(): Promise<boolean> {
    const due = this.nextDueInMs();
    if (due === undefined) return false;
    await this.advance(due);
    return true;
  }

  #next(): PendingTimer | undefined {
    let best: PendingTimer | undefined;
    for (const t of this.#timers) {
      if (best === undefined || t.dueMs < best.dueMs || (t.dueMs === best.dueMs && t.seq < best.seq)) best = t;
    }
    return best;
  }
}

/**
 * Lets every pending promise continuation run: a macrotask turn runs only after the microtask
 * queue is empty; a few turns also cover code that itself hops through setImmediate.
 */
export async function flushAsync(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
