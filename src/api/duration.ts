/**
 * Go-style durations ("90s", "5m", "1h30m"), the form Kubernetes users know and CEL's
 * `duration()` parses, so the CRD can compare them in rules.
 */
export const durationPattern = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";

const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds in a Go-style duration; throws on anything else. */
export function parseDuration(text: string): number {
  if (!new RegExp(durationPattern).test(text)) {
    throw new Error(`"${text}" is not a duration: use a number with a unit, like 30s, 5m, 1h or 1h30m`);
  }
  let total = 0;
  for (const [, amount, unit] of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g)) {
    total += Number(amount) * unitMs[unit!]!;
  }
  return Math.round(total);
}
