import { validateCronExpression } from "cron";

/**
 * Five-field cron (minute hour day-of-month month day-of-week) or a macro (@daily, ...).
 * The regex is what the API server can check (CEL/RE2); `checkCronSchedule` adds the `cron`
 * package's full parse (ranges, steps, names) for the CLI and the controller.
 */
const field = "(\\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?";
const list = `${field}(,${field})*`;
export const cronPattern = `^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|${list}( +${list}){4})$`;

export function checkCronSchedule(schedule: string): string | undefined {
  if (!new RegExp(cronPattern).test(schedule)) {
    return `"${schedule}" is not a 5-field cron schedule (minute hour day month weekday), e.g. "0 3 * * *", or a macro like @daily`;
  }
  const result = validateCronExpression(schedule);
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
