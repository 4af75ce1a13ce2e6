// When nightly cache-warm builds run (`spec.warm.schedule` in `spec.warm.timeZone`). Pure: the
// caller passes the times.
//
// Semantics (those of Vixie cron for jobs at fixed hours):
//   - A slot whose local time is skipped by a daylight-saving jump (02:30 on the night clocks go
//     forward in Europe/Berlin) runs right after the jump (03:00 local).
//   - A local time that happens twice when clocks go back (02:30 in Berlin in late October) runs
//     once, at its first occurrence, unless the hour field is a wildcard (`*`, `*/2`, `@hourly`):
//     such schedules follow the `cron` package's local-time stepping (an hourly schedule runs every
//     real hour, 25 times that day).
//   - Missed slots (the controller was down) make one warm build, not one per slot, if it can
//     start within the starting deadline (config.warm.startingDeadline, as a CronJob's
//     startingDeadlineSeconds); otherwise the slot is skipped (the caller says so in an Event).
//   - Each NixImage starts at a fixed offset after the slot within config.warm.spread, so many
//     NixImages on one schedule do not all start (and queue for build slots) at the same second.
import { createHash } from "node:crypto";
import { CronTime } from "cron";
import { checkCronSchedule, isKnownTimeZone } from "../api/cron-schedule.ts";

/** The schedule or time zone is invalid, or the schedule never matches (e.g. 31 February). */
export class WarmScheduleError extends Error {
  override readonly name = "WarmScheduleError";
}

const MAX_STEPS = 16;
const MINUTE_MS = 60_000;

/** Parsed schedules by zone and expression; a controller sees few distinct ones. */
const cronTimes = new Map<string, CronTime>();
const MAX_CACHED = 256;

function cachedCronTime(schedule: string, zone: string): CronTime {
  const key = `${zone}\u0000${schedule}`;
  let ct = cronTimes.get(key);
  if (!ct) {
    ct = cronTimeOf(schedule, zone);
    if (cronTimes.size >= MAX_CACHED) cronTimes.delete(cronTimes.keys().next().value!);
    cronTimes.set(key, ct);
  }
  return ct;
}

/**
 * The last second of the minute of `ms`. Slots fall on whole minutes, so the first slot after it is
 * the first slot after `ms`; starting there spares the library stepping through the seconds.
 */
function lastSecondOfMinute(ms: number): Date {
  return new Date(Math.floor(ms / MINUTE_MS) * MINUTE_MS + 59_000);
}

function cronTimeOf(schedule: string, zone: string): CronTime {
  const problem = checkCronSchedule(schedule);
  if (problem !== undefined) throw new WarmScheduleError(`warm schedule: ${problem}`);
  if (!isKnownTimeZone(zone)) throw new WarmScheduleError(`warm schedule: time zone "${zone}" is not a known IANA time zone (like Europe/Berlin or UTC)`);
  try {
    return new CronTime(schedule, zone);
  } catch (e) {
    throw new WarmScheduleError(`warm schedule "${schedule}" in ${zone}: ${(e as Error).message}`, { cause: e });
  }
}

/** True when the hour field (after macro expansion) starts with `*`: the job runs every hour or every few hours. */
function hasWildcardHours(schedule: string): boolean {
  const s = schedule.trim().toLowerCase();
  if (s === "@hourly") return true;
  if (s.startsWith("@")) return false;
  const hour = s.split(/\s+/)[1] ?? "";
  return hour.startsWith("*");
}

const wallClockFormats = new Map<string, Intl.DateTimeFormat>();

/** Local date and time (to the minute) of `ms` in `zone`. */
function wallClock(ms: number, zone: string): string {
  let f = wallClockFormats.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
    });
    wallClockFormats.set(zone, f);
  }
  return f.format(ms);
}

/** Does the local time of `ms` also occur earlier (it lies in the hour repeated when clocks go back)? */
function isRepeatedLocalTime(ms: number, zone: string): boolean {
  const wall = wallClock(ms, zone);
  // Clock shifts are 30 minutes (Lord Howe), one hour, or rarely two.
  return [30, 60, 120].some((minutes) => wallClock(ms - minutes * 60_000, zone) === wall);
}

/**
 * The first slot of `schedule` (5-field cron or a macro) strictly after `after`, in `timeZone`
 * (UTC when undefined). Throws WarmScheduleError for an invalid schedule or zone, or one that
 * never matches.
 */
export function nextWarmTime(schedule: string, timeZone: string | undefined, after: Date): Date {
  const zone = timeZone ?? "UTC";
  const cron = cachedCronTime(schedule, zone);
  const wildcardHours = hasWildcardHours(schedule);
  const afterMs = after.getTime();
  if (Number.isNaN(afterMs)) throw new RangeError("nextWarmTime: invalid 'after' date");
  let from = lastSecondOfMinute(afterMs);
  for (let step = 0; step < MAX_STEPS; step++) {
    let candidate: number;
    try {
      candidate = cron.getNextDateFrom(from, zone).toMillis();
    } catch (e) {
      throw new WarmScheduleError(`warm schedule "${schedule}" in ${zone} has no time after ${after.toISOString()}: ${(e as Error).message.split("\n")[0]}`, {
        cause: e,
      });
    }
    if (candidate <= afterMs || candidate <= from.getTime()) {
      // The library works on local times; around a clock change it can land on or before the start.
      from = lastSecondOfMinute(Math.max(afterMs, from.getTime(), candidate) + MINUTE_MS);
      continue;
    }
    if (!wildcardHours && isRepeatedLocalTime(candidate, zone)) {
      // The second occurrence of a local time when clocks go back: this slot ran at the first one.
      from = lastSecondOfMinute(candidate);
      continue;
    }
    return new Date(candidate);
  }
  throw new WarmScheduleError(`warm schedule "${schedule}" in ${zone}: no slot found after ${after.toISOString()}`);
}

/** How a warm slot's start is placed and how late it may still start (config.warm). */
export interface WarmTiming {
  /** Identifies the NixImage (namespace/name): its offset within the spread is a fixed function of it. */
  key: string;
  /** Starts of one slot are spread over this long after it (at most half the time to the next slot). */
  spreadMs: number;
  /** A start not seen within this long after its time is skipped, not run late. */
  startingDeadlineMs: number;
  /** The slot this process already saw due and queued (waiting for a build slot or a running build): no deadline for it. */
  queuedSlot?: Date;
}

export interface WarmSlot {
  /** The cron slot. */
  slot: Date;
  /** When this NixImage's build for it starts: the slot plus its spread offset. */
  startAt: Date;
  /** The last moment a catch-up may start. */
  deadline: Date;
}

/**
 * Where a NixImage stands on its warm schedule at `now`:
 *   - `due`: the latest slot whose start has come and that no warm build started yet; start it
 *     (once, however many slots were missed);
 *   - `missed`: that slot, but its starting deadline passed before any controller saw it: skip it;
 *   - `upcoming`: the first slot whose start has not come yet.
 * `lastWarm` must be the time the previous warm build was started (the `now` of the reconcile that
 * started it), not the slot it was for: after missed slots the latter would make one build per slot.
 * `created` is when the warm schedule began to apply (when the controller first announced a slot).
 */
export interface WarmState {
  due?: WarmSlot;
  missed?: WarmSlot;
  upcoming: WarmSlot;
}

/** A fraction in [0, 1), fixed per key and spread evenly over keys. */
function spreadFraction(key: string): number {
  return createHash("sha256").update(key).digest().readUInt32BE(0) / 2 ** 32;
}

const DAY_MS = 86_400_000;
/** Look-back windows for the latest elapsed slot: the first one holding one is walked slot by slot. */
const LOOK_BACK_MS = [3_600_000, DAY_MS, 32 * DAY_MS, 400 * DAY_MS];
const MAX_WALK = 5_000;
const MAX_DATE_MS = 8.64e15;

export function warmState(schedule: string, timeZone: string | undefined, lastWarm: Date | undefined, created: Date, now: Date, timing: WarmTiming): WarmState {
  const fraction = spreadFraction(timing.key);
  const slotAfter = (after: number): WarmSlot => {
    const slot = nextWarmTime(schedule, timeZone, new Date(after));
    const gap = nextWarmTime(schedule, timeZone, slot).getTime() - slot.getTime();
    const startAt = slot.getTime() + Math.floor(fraction * Math.min(timing.spreadMs, gap / 2));
    return { slot, startAt: new Date(startAt), deadline: new Date(Math.min(startAt + timing.startingDeadlineMs, MAX_DATE_MS)) };
  };
  const nowMs = now.getTime();
  const from = Math.max(created.getTime(), lastWarm?.getTime() ?? -Infinity);
  const first = slotAfter(from);
  if (first.startAt.getTime() > nowMs) return { upcoming: first };
  // At least one start has come: find the latest (starts are in slot order, as offsets stay under half a gap).
  for (const window of [...LOOK_BACK_MS, Infinity]) {
    let latest = window === Infinity ? first : slotAfter(Math.max(from, nowMs - window));
    if (latest.startAt.getTime() > nowMs) continue;
    let upcoming = slotAfter(latest.slot.getTime());
    for (let walked = 0; upcoming.startAt.getTime() <= nowMs; walked++) {
      if (walked >= MAX_WALK)
        throw new WarmScheduleError(`warm schedule "${schedule}": more than ${MAX_WALK} slots to walk since ${new Date(from).toISOString()}`);
      latest = upcoming;
      upcoming = slotAfter(latest.slot.getTime());
    }
    const queued = timing.queuedSlot?.getTime() === latest.slot.getTime();
    return nowMs - latest.startAt.getTime() <= timing.startingDeadlineMs || queued ? { due: latest, upcoming } : { missed: latest, upcoming };
  }
  throw new WarmScheduleError(`warm schedule "${schedule}": no slot found before ${now.toISOString()}`);
}
