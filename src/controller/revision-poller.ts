// When to poll a NixImage's flake ref for a new revision next (`spec.triggers.interval`). Pure: the
// time comes in as `now`; the background poller (revision-polls.ts) schedules by it.

/** No poll is scheduled closer than this after the previous one, whatever the spec says. */
export const MIN_POLL_INTERVAL_MS = 10_000;
/** Default spread: up to this fraction of the interval, fixed per key. */
const DEFAULT_POLL_JITTER_RATIO = 0.1;

export interface PollTimeOptions {
  /**
   * Spreads the polls of many NixImages with the same interval over time: a fixed delay in
   * [0, jitterRatio * interval) derived from `key` (e.g. `namespace/name`), the same on every call
   * and every controller replica. No spread without a key.
   */
  key?: string;
  /** Default DEFAULT_POLL_JITTER_RATIO; 0 turns the spread off. */
  jitterRatio?: number;
}

/** FNV-1a, 32 bits: a stable, well-spread number from a key. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The fixed extra delay of `key` for `intervalMs`. */
export function pollJitterMs(intervalMs: number, options: PollTimeOptions = {}): number {
  const ratio = options.jitterRatio ?? DEFAULT_POLL_JITTER_RATIO;
  if (options.key === undefined || !(ratio > 0)) return 0;
  if (ratio >= 1) throw new RangeError(`jitterRatio must be below 1, got ${ratio}`);
  return Math.floor((hash32(options.key) / 0x1_0000_0000) * ratio * intervalMs);
}

function checkInterval(intervalMs: number): number {
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) throw new RangeError(`poll interval must be a positive number of milliseconds, got ${intervalMs}`);
  return Math.max(intervalMs, MIN_POLL_INTERVAL_MS);
}

/**
 * When the next poll is due: `lastPoll + interval (+ the key's spread)`; `now` when there was no poll
 * yet; undefined when polling is off (no interval). A `lastPoll` in the future (clock skew between
 * replicas) counts as `now`, so a skewed timestamp never postpones polling by more than an interval.
 */
export function nextPollTime(lastPoll: Date | undefined, intervalMs: number | undefined, now: Date, options: PollTimeOptions = {}): Date | undefined {
  if (intervalMs === undefined) return undefined;
  const interval = checkInterval(intervalMs);
  if (lastPoll === undefined) return new Date(now.getTime());
  const from = Math.min(lastPoll.getTime(), now.getTime());
  return new Date(from + interval + pollJitterMs(interval, options));
}
