import { createRequire } from "node:module";
import type * as Cron from "cron";

// `cron` (with luxon) costs tens of milliseconds to load: it is required when a schedule is
// checked, not by every process that imports the API schema (the builder steps check none).
const requireCron = () => createRequire(import.meta.url)("cron") as typeof Cron;

/**
 * Five-field cron (minute hour day-of-month month day-of-week) or a macro (@daily, ...).
 * The regex is what the API server can check (CEL/RE2); `checkCronSchedule` adds the `cron`
 * package's full parse (ranges, steps, names) for the CLI and the controller.
 */
// Each field's values bounded by range so the API server rejects "99 3 * * *" too.
const months = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC";
const days = "SUN|MON|TUE|WED|THU|FRI|SAT";
const values = {
  minute: "[0-5]?[0-9]",
  hour: "[01]?[0-9]|2[0-3]",
  dayOfMonth: "0?[1-9]|[12][0-9]|3[01]",
  month: `0?[1-9]|1[0-2]|${months}|${months.toLowerCase()}`,
  dayOfWeek: `[0-7]|${days}|${days.toLowerCase()}`,
};
const field = (value: string) => {
  const item = `(\\*|(${value})(-(${value}))?)(/[0-9]{1,2})?`;
  return `${item}(,${item})*`;
};
const fields = [values.minute, values.hour, values.dayOfMonth, values.month, values.dayOfWeek].map(field).join(" +");
// Only the macros the `cron` package knows: @annually and @midnight passed the API server but not
// the controller's parse, so such a NixImage was stored and never warmed.
export const cronPattern = `^(@(yearly|monthly|weekly|daily|hourly)|${fields})$`;

export function checkCronSchedule(schedule: string): string | undefined {
  if (!new RegExp(cronPattern).test(schedule)) {
    return `"${schedule}" is not a 5-field cron schedule: minute 0-59, hour 0-23, day 1-31, month 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT, e.g. "0 3 * * *", or a macro like @daily`;
  }
  const result = requireCron().validateCronExpression(schedule);
  return result.valid ? undefined : `"${schedule}" is not a valid cron schedule: ${result.error?.message ?? "unknown error"}`;
}

/** True when the IANA time zone is known to this runtime. */
export function isKnownTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}
