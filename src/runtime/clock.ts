/** Time comes in as a parameter so decisions and schedules are testable without waiting. */
export interface Clock {
  now(): Date;
  /** Resolves after `ms` of this clock's time; a fake clock resolves when advanced past it. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  setTimeout(fn: () => void, ms: number): { cancel(): void };
}

export const systemClock: Clock = {
  now: () => new Date(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};

/**
 * `base` with its time moved by `offsetMs`; timers run on the base clock. For the fault suite only
 * (`NIO_FAULT_CLOCK_OFFSET_MS`, like NIO_CRASH_AT): a controller process started at a warm slot
 * without waiting for one, and started again "hours later" after it was killed.
 */
function offsetClock(base: Clock, offsetMs: number): Clock {
  return { now: () => new Date(base.now().getTime() + offsetMs), sleep: base.sleep, setTimeout: base.setTimeout };
}

/** The clock a controller process runs on: the system's, moved by NIO_FAULT_CLOCK_OFFSET_MS when that is set. */
export function processClock(env: Record<string, string | undefined>): Clock {
  const offset = Number(env.NIO_FAULT_CLOCK_OFFSET_MS ?? "");
  return Number.isFinite(offset) && offset !== 0 ? offsetClock(systemClock, offset) : systemClock;
}
