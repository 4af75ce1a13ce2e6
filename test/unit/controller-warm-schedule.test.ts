import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { nextWarmTime, warmState, WarmScheduleError } from "../../src/controller/warm-schedule.ts";

/** Due in the plain sense (no spread, no deadline): a slot passed since the last warm build. */
const isWarmDue = (schedule: string, zone: string | undefined, lastWarm: Date | undefined, created: Date, now: Date) =>
  warmState(schedule, zone, lastWarm, created, now, { key: "ns/web", spreadMs: 0, startingDeadlineMs: Infinity }).due !== undefined;

const d = (iso: string) => new Date(iso);
const BERLIN = "Europe/Berlin";

describe("nextWarmTime", () => {
  const table: [string, string, string | undefined, string, string][] = [
    // name, schedule, zone, after, expected
    ["UTC by default", "0 3 * * *", undefined, "2026-11-21T12:00:00Z", "2026-11-22T03:00:00.000Z"],
    ["explicit UTC", "0 3 * * *", "UTC", "2026-11-21T12:00:00Z", "2026-11-22T03:00:00.000Z"],
    ["Berlin in winter (UTC+1)", "0 3 * * *", BERLIN, "2026-11-21T12:00:00Z", "2026-11-22T02:00:00.000Z"],
    ["Berlin in summer (UTC+2)", "0 3 * * *", BERLIN, "2026-07-01T12:00:00Z", "2026-07-02T01:00:00.000Z"],
    ["later the same day", "0 3 * * *", BERLIN, "2026-11-22T01:00:00Z", "2026-11-22T02:00:00.000Z"],
    ["strictly after: at a slot gives the next one", "0 3 * * *", BERLIN, "2026-11-22T02:00:00Z", "2026-11-23T02:00:00.000Z"],
    ["one millisecond before a slot", "0 3 * * *", BERLIN, "2026-11-22T01:59:59.999Z", "2026-11-22T02:00:00.000Z"],
    ["within the slot's minute", "0 3 * * *", BERLIN, "2026-11-22T02:00:30.500Z", "2026-11-23T02:00:00.000Z"],
    ["@daily is local midnight", "@daily", BERLIN, "2026-11-21T12:00:00Z", "2026-11-21T23:00:00.000Z"],
    ["@weekly is Sunday midnight", "@weekly", "UTC", "2026-11-21T12:00:00Z", "2026-11-22T00:00:00.000Z"],
    ["weekdays only (Saturday -> Monday)", "0 3 * * 1-5", "UTC", "2026-11-21T12:00:00Z", "2026-11-23T03:00:00.000Z"],
    ["day names", "15 4 * * MON", "UTC", "2026-11-21T12:00:00Z", "2026-11-23T04:15:00.000Z"],
    ["monthly", "0 3 1 * *", "UTC", "2026-11-21T12:00:00Z", "2026-12-01T03:00:00.000Z"],
    ["steps", "*/15 * * * *", "UTC", "2026-11-21T12:07:00Z", "2026-11-21T12:15:00.000Z"],
    ["New York", "0 3 * * *", "America/New_York", "2026-11-21T12:00:00Z", "2026-11-22T08:00:00.000Z"],
    ["Kolkata (UTC+5:30)", "0 3 * * *", "Asia/Kolkata", "2026-11-21T12:00:00Z", "2026-11-21T21:30:00.000Z"],
    ["leap day", "0 3 29 2 *", "UTC", "2026-11-21T12:00:00Z", "2028-02-29T03:00:00.000Z"],

    // Clocks go forward in Berlin on 2026-03-29 at 02:00 CET -> 03:00 CEST.
    ["spring: a skipped 02:30 runs at 03:00 CEST", "30 2 * * *", BERLIN, "2026-03-28T12:00:00Z", "2026-03-29T01:00:00.000Z"],
    ["spring: and the day after at 02:30 again", "30 2 * * *", BERLIN, "2026-03-29T01:00:00Z", "2026-03-30T00:30:00.000Z"],
    ["spring: a skipped 02:00 runs at 03:00 CEST", "0 2 * * *", BERLIN, "2026-03-28T12:00:00Z", "2026-03-29T01:00:00.000Z"],
    ["spring: 03:00 exists and is 01:00 UTC", "0 3 * * *", BERLIN, "2026-03-28T12:00:00Z", "2026-03-29T01:00:00.000Z"],
    ["spring: 01:30 is still CET", "30 1 * * *", BERLIN, "2026-03-28T12:00:00Z", "2026-03-29T00:30:00.000Z"],
    ["spring: hourly jumps from 01:00 CET to 03:00 CEST", "0 * * * *", BERLIN, "2026-03-29T00:00:00Z", "2026-03-29T01:00:00.000Z"],

    // Clocks go back in Berlin on 2026-10-25 at 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.
    ["autumn: 02:30 runs at its first occurrence (CEST)", "30 2 * * *", BERLIN, "2026-10-24T12:00:00Z", "2026-10-25T00:30:00.000Z"],
    ["autumn: not again at 02:30 CET", "30 2 * * *", BERLIN, "2026-10-25T00:30:00Z", "2026-10-26T01:30:00.000Z"],
    ["autumn: not again when starting between the two", "30 2 * * *", BERLIN, "2026-10-25T01:10:00Z", "2026-10-26T01:30:00.000Z"],
    ["autumn: 02:00 once", "0 2 * * *", BERLIN, "2026-10-25T00:00:00Z", "2026-10-26T01:00:00.000Z"],
    ["autumn: 03:00 is CET", "0 3 * * *", BERLIN, "2026-10-24T12:00:00Z", "2026-10-25T02:00:00.000Z"],
    ["autumn: hourly runs in both 02:00 hours (first)", "0 * * * *", BERLIN, "2026-10-24T23:30:00Z", "2026-10-25T00:00:00.000Z"],
    ["autumn: hourly runs in both 02:00 hours (second)", "0 * * * *", BERLIN, "2026-10-25T00:00:00Z", "2026-10-25T01:00:00.000Z"],
    ["autumn: hourly then 03:00 CET", "0 * * * *", BERLIN, "2026-10-25T01:00:00Z", "2026-10-25T02:00:00.000Z"],
  ];
  it.each(table)("%s", (_name, schedule, zone, after, expected) => {
    expect(nextWarmTime(schedule, zone, d(after)).toISOString()).toBe(expected);
  });

  const localDay = new Intl.DateTimeFormat("en-CA", { timeZone: BERLIN, year: "numeric", month: "2-digit", day: "2-digit" });
  it.each(["30 2 * * *", "0 2 * * *", "0 3 * * *", "59 1 * * *", "30 3 * * *"])("'%s' in Berlin runs exactly once on every day of 2026", (schedule) => {
    const end = Date.parse("2026-12-31T23:00:00Z"); // 2027-01-01 00:00 local
    const perDay = new Map<string, number>();
    let t = d("2025-12-31T23:00:00Z");
    for (;;) {
      const next = nextWarmTime(schedule, BERLIN, t);
      expect(next.getTime()).toBeGreaterThan(t.getTime());
      t = next;
      if (t.getTime() >= end) break;
      const day = localDay.format(t);
      perDay.set(day, (perDay.get(day) ?? 0) + 1);
    }
    expect(perDay.size).toBe(365);
    expect([...perDay.entries()].filter(([, n]) => n !== 1)).toEqual([]);
  });

  it("an hourly schedule runs 23 times on the spring day and 25 times on the autumn day", () => {
    const count = (from: string, to: string) => {
      let n = 0;
      for (let t = nextWarmTime("0 * * * *", BERLIN, d(from)); t.getTime() < Date.parse(to); t = nextWarmTime("0 * * * *", BERLIN, t)) n++;
      return n;
    };
    expect(count("2026-03-28T22:59:00Z", "2026-03-29T22:00:00Z")).toBe(23);
    expect(count("2026-10-24T21:59:00Z", "2026-10-25T23:00:00Z")).toBe(25);
  });

  it.each([
    ["an out-of-range minute", "61 3 * * *", undefined, /not a 5-field cron schedule/],
    ["six fields (seconds)", "0 0 3 * * *", undefined, /not a 5-field cron schedule/],
    ["garbage", "every night", undefined, /not a 5-field cron schedule/],
    ["an unknown zone", "0 3 * * *", "Mars/Olympus_Mons", /time zone "Mars\/Olympus_Mons" is not a known IANA time zone/],
    ["a schedule that never matches", "0 3 31 2 *", "UTC", /"0 3 31 2 \*" in UTC has no time after 2026-11-21T12:00:00.000Z/],
  ])("rejects %s", (_name, schedule, zone, message) => {
    expect(() => nextWarmTime(schedule, zone, d("2026-11-21T12:00:00Z"))).toThrow(WarmScheduleError);
    expect(() => nextWarmTime(schedule, zone, d("2026-11-21T12:00:00Z"))).toThrow(message);
  });

  it("rejects an invalid date", () => {
    expect(() => nextWarmTime("0 3 * * *", undefined, new Date(Number.NaN))).toThrow(RangeError);
  });
});

describe("isWarmDue", () => {
  const created = d("2026-11-01T12:00:00Z");
  const table: [string, string, string | undefined, string, string | undefined, string, boolean][] = [
    // name, schedule, zone, created, lastWarm, now, due
    ["before the first slot", "0 3 * * *", BERLIN, "2026-11-21T12:00:00Z", undefined, "2026-11-22T01:59:59Z", false],
    ["at the first slot", "0 3 * * *", BERLIN, "2026-11-21T12:00:00Z", undefined, "2026-11-22T02:00:00Z", true],
    ["after the first slot, never warmed", "0 3 * * *", BERLIN, "2026-11-21T12:00:00Z", undefined, "2026-11-22T09:00:00Z", true],
    ["warmed at the slot: not again the same night", "0 3 * * *", BERLIN, created.toISOString(), "2026-11-22T02:00:05Z", "2026-11-22T09:00:00Z", false],
    ["warmed last night: due at tonight's slot", "0 3 * * *", BERLIN, created.toISOString(), "2026-11-22T02:00:05Z", "2026-11-23T02:00:00Z", true],
    ["three nights missed: due (once)", "0 3 * * *", BERLIN, created.toISOString(), "2026-11-19T02:00:05Z", "2026-11-22T12:00:00Z", true],
    ["created after a slot: that slot does not count", "0 3 * * *", BERLIN, "2026-11-22T02:30:00Z", undefined, "2026-11-22T12:00:00Z", false],
    ["a lastWarm before creation is ignored", "0 3 * * *", BERLIN, "2026-11-22T02:30:00Z", "2026-10-01T00:00:00Z", "2026-11-22T12:00:00Z", false],
    ["a lastWarm in the future (skew): not due", "0 3 * * *", BERLIN, created.toISOString(), "2026-11-23T00:00:00Z", "2026-11-22T12:00:00Z", false],
    ["spring: the skipped 02:30 is due at 03:00 CEST", "30 2 * * *", BERLIN, "2026-03-01T00:00:00Z", "2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", true],
    ["spring: not before", "30 2 * * *", BERLIN, "2026-03-01T00:00:00Z", "2026-03-28T01:30:00Z", "2026-03-29T00:59:00Z", false],
    ["autumn: due at the first 02:30", "30 2 * * *", BERLIN, "2026-10-01T00:00:00Z", "2026-10-24T00:30:05Z", "2026-10-25T00:30:00Z", true],
    ["autumn: not again at the second 02:30", "30 2 * * *", BERLIN, "2026-10-01T00:00:00Z", "2026-10-25T00:30:05Z", "2026-10-25T01:45:00Z", false],
    [
      "autumn: down over the first 02:30, due once in between",
      "30 2 * * *",
      BERLIN,
      "2026-10-01T00:00:00Z",
      "2026-10-24T00:30:05Z",
      "2026-10-25T01:10:00Z",
      true,
    ],
    ["autumn: ...and not at the second 02:30 after that", "30 2 * * *", BERLIN, "2026-10-01T00:00:00Z", "2026-10-25T01:10:00Z", "2026-10-25T01:40:00Z", false],
  ];
  it.each(table)("%s", (_name, schedule, zone, createdIso, lastWarm, now, due) => {
    expect(isWarmDue(schedule, zone, lastWarm === undefined ? undefined : d(lastWarm), d(createdIso), d(now))).toBe(due);
  });

  it("a controller reconciling at random times runs once per slot at most, and runs for every slot it sees (property)", () => {
    const start = Date.parse("2026-10-20T00:00:00Z");
    const span = 12 * 24 * 3600_000; // over the autumn change
    const reconciles = fc.uniqueArray(fc.integer({ min: 1, max: span }), { minLength: 1, maxLength: 60 }).map((xs) => xs.sort((a, b) => a - b));
    const created = new Date(start);
    // The slots depend on the schedule only: computed once each, not in every run.
    const slotsOf = new Map<string, number[]>();
    const slotsFor = (schedule: string) => {
      let slots = slotsOf.get(schedule);
      if (!slots) {
        slots = [];
        for (let t = nextWarmTime(schedule, BERLIN, created); t.getTime() <= start + span; t = nextWarmTime(schedule, BERLIN, t)) slots.push(t.getTime());
        slotsOf.set(schedule, slots);
      }
      return slots;
    };
    fc.assert(
      fc.property(fc.constantFrom("30 2 * * *", "0 3 * * *", "0 */6 * * *", "0 2 * * *"), reconciles, (schedule, offsets) => {
        const slots = slotsFor(schedule);
        const slotsIn = (from: number, to: number) => slots.filter((s) => s > from && s <= to).length;
        let lastWarm: Date | undefined;
        for (const off of offsets) {
          const now = new Date(start + off);
          const since = lastWarm?.getTime() ?? start;
          const due = isWarmDue(schedule, BERLIN, lastWarm, created, now);
          // Due exactly when a slot passed since the last warm build (however many).
          expect(due).toBe(slotsIn(since, now.getTime()) > 0);
          if (due) lastWarm = now;
        }
      }),
      { numRuns: 60 },
    );
    // Up to 3,600 cron evaluations: under a second alone, several times that with both cores busy.
  }, 30_000);
});

describe("warmState: starting deadline and spread", () => {
  const schedule = "0 3 * * *";
  const created = d("2026-11-01T12:00:00Z");
  const lastWarm = d("2026-11-20T02:00:10Z");
  const timing = { key: "shop/web", spreadMs: 0, startingDeadlineMs: 3_600_000 };

  it("down across one slot: a catch-up within the deadline, skipped after it", () => {
    const within = warmState(schedule, "UTC", lastWarm, created, d("2026-11-21T03:59:00Z"), timing);
    expect(within.due?.slot.toISOString()).toBe("2026-11-21T03:00:00.000Z");
    expect(within.missed).toBeUndefined();
    expect(within.upcoming.slot.toISOString()).toBe("2026-11-22T03:00:00.000Z");
    const late = warmState(schedule, "UTC", lastWarm, created, d("2026-11-21T04:00:01Z"), timing);
    expect(late.due).toBeUndefined();
    expect(late.missed?.slot.toISOString()).toBe("2026-11-21T03:00:00.000Z");
    expect(late.missed?.deadline.toISOString()).toBe("2026-11-21T04:00:00.000Z");
  });

  it("down across several slots: one decision, about the latest", () => {
    const s = warmState(schedule, "UTC", lastWarm, created, d("2026-11-25T03:30:00Z"), timing);
    expect(s.due?.slot.toISOString()).toBe("2026-11-25T03:00:00.000Z");
    const late = warmState(schedule, "UTC", lastWarm, created, d("2026-11-25T12:00:00Z"), timing);
    expect(late.missed?.slot.toISOString()).toBe("2026-11-25T03:00:00.000Z");
    expect(late.upcoming.slot.toISOString()).toBe("2026-11-26T03:00:00.000Z");
  });

  it("a slot this process saw due in time and queued is not skipped however long it waits", () => {
    const s = warmState(schedule, "UTC", lastWarm, created, d("2026-11-21T09:00:00Z"), { ...timing, queuedSlot: d("2026-11-21T03:00:00Z") });
    expect(s.due?.slot.toISOString()).toBe("2026-11-21T03:00:00.000Z");
    // A queued older slot does not exempt a newer one.
    const newer = warmState(schedule, "UTC", lastWarm, created, d("2026-11-22T09:00:00Z"), { ...timing, queuedSlot: d("2026-11-21T03:00:00Z") });
    expect(newer.missed?.slot.toISOString()).toBe("2026-11-22T03:00:00.000Z");
  });

  it("an every-minute schedule down for a month walks little and still finds the latest slot", () => {
    const s = warmState("* * * * *", "UTC", d("2026-10-01T00:00:00Z"), created, d("2026-11-02T10:00:30Z"), timing);
    expect(s.due?.slot.toISOString()).toBe("2026-11-02T10:00:00.000Z");
  });

  it("200 NixImages on one slot start spread over the window, each at a fixed offset, never past half the gap", () => {
    const spreadMs = 600_000;
    const now = d("2026-11-21T02:59:00Z");
    const starts = Array.from(
      { length: 200 },
      (_, i) => warmState(schedule, "UTC", lastWarm, created, now, { ...timing, key: `shop/web-${i}`, spreadMs }).upcoming,
    );
    const offsets = starts.map((w) => w.startAt.getTime() - w.slot.getTime());
    expect(Math.min(...offsets)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...offsets)).toBeLessThan(spreadMs);
    // Every minute of the 10 gets some; none gets more than a fifth.
    const perMinute = Array.from({ length: 10 }, (_, m) => offsets.filter((o) => Math.floor(o / 60_000) === m).length);
    expect(Math.min(...perMinute)).toBeGreaterThan(0);
    expect(Math.max(...perMinute)).toBeLessThan(40);
    // The same key gets the same offset; the due state follows the offset, not the slot.
    const again = warmState(schedule, "UTC", lastWarm, created, now, { ...timing, key: "shop/web-7", spreadMs }).upcoming;
    expect(again.startAt).toEqual(starts[7]!.startAt);
    const justBefore = warmState(schedule, "UTC", lastWarm, created, new Date(again.startAt.getTime() - 1), { ...timing, key: "shop/web-7", spreadMs });
    expect(justBefore.due).toBeUndefined();
    const atStart = warmState(schedule, "UTC", lastWarm, created, again.startAt, { ...timing, key: "shop/web-7", spreadMs });
    expect(atStart.due?.slot).toEqual(again.slot);
    // An hourly schedule keeps its offsets under 30 minutes even with a 2 h spread.
    const hourly = warmState("0 * * * *", "UTC", lastWarm, created, now, { ...timing, key: "shop/web-7", spreadMs: 7_200_000 }).upcoming;
    expect(hourly.startAt.getTime() - hourly.slot.getTime()).toBeLessThan(1_800_000);
  });
});
