/**
 * Fault injection for the reliability suite: `NIO_CRASH_AT=<point>[:<n>]` makes the process exit
 * with 137 (as if SIGKILLed) the n-th time (default: first) it passes that named point. The points
 * sit between two writes whose order matters (after a volume lease, after a Job POST, after a
 * rollout patch, before the status write). Without the variable this is one Map lookup.
 */
const wanted = parseCrashAt(process.env.NIO_CRASH_AT);
const passed = new Map<string, number>();

export type CrashPointName = "after-lease" | "after-job-post" | "after-rollout-patch" | "before-status-write";

export function crashPoint(name: CrashPointName): void {
  if (wanted?.point !== name) return;
  const count = (passed.get(name) ?? 0) + 1;
  passed.set(name, count);
  if (count === wanted.nth) {
    process.stderr.write(`crash point ${name} (#${count}): exiting with 137\n`);
    process.exit(137);
  }
}

function parseCrashAt(value: string | undefined): { point: string; nth: number } | undefined {
  if (!value) return undefined;
  const [point, nth] = value.split(":");
  return { point: point!, nth: nth ? Math.max(1, Number(nth) || 1) : 1 };
}
