// The warm build's report step: what the build step left in its result directory, turned into the
// small JSON the controller reads from the pod's termination message (<= 4096 bytes) and copies
// into `status.lastWarmBuild`:
//
//   {"revision": {"url", "rev", "lastModified", "narHash"},
//    "closureDiff": {"added": [{name, to}], "removed": [{name, from}], "changed": [{name, from, to}]},
//    "seconds": {"lock", "build", ...}}
//
// `closureDiff` is there only when the build step updated the inputs (--update-inputs): it compares
// the closure built from the committed lock file (locked-closure.json) with the one built against
// the updated inputs (closure.json). Lists are cut evenly until the message fits; `totals` keeps
// the full counts, and the full diff goes to the step's log.
import { diffClosures, type ClosureDiff } from "../controller/closure-diff.ts";
import { boundDurations, boundUrl, resultBounds, TERMINATION_MESSAGE_LIMIT, type WarmResult } from "./step-results.ts";
import { readLockedClosure, readStepFiles } from "./step-files.ts";

const { packageName: NAME_MAX, version: VERSION_MAX, closureChanges: MAX_CHANGES } = resultBounds;

export interface WarmReport {
  /** What goes into the termination message. */
  message: WarmResult;
  /** The whole diff (totals, rebuilt count), for the log. */
  diff?: ClosureDiff;
}

const cut = (s: string, max: number) => (s.length <= max ? s : `${s.slice(0, max - 1)}…`);

/** PURE: the report of a diff and the build result's revision and timings. */
export function warmReportOf(revision: WarmResult["revision"], seconds: Record<string, number>, diff: ClosureDiff | undefined): WarmResult {
  const message: WarmResult = { revision, seconds: boundDurations(seconds) };
  if (diff) {
    // The full diff goes to the log; the report keeps as many entries as status holds.
    message.closureDiff = {
      added: diff.added.slice(0, MAX_CHANGES).map((a) => ({ name: cut(a.name, NAME_MAX), to: cut(a.to, VERSION_MAX) })),
      removed: diff.removed.slice(0, MAX_CHANGES).map((r) => ({ name: cut(r.name, NAME_MAX), from: cut(r.from, VERSION_MAX) })),
      changed: diff.changed.slice(0, MAX_CHANGES).map((c) => ({ name: cut(c.name, NAME_MAX), from: cut(c.from, VERSION_MAX), to: cut(c.to, VERSION_MAX) })),
      // Never cut silently: the full counts travel with whatever part of the lists fits.
      totals: diff.totals,
    };
  }
  return message;
}

const bytes = (s: string) => Buffer.byteLength(s, "utf8");

/**
 * PURE: the compact JSON of `report`, cut until it fits `limit` bytes: every list keeps at most the
 * same number of entries (the largest number that fits), then the timings go, then the locked URL
 * is shortened. The revision's commit is never dropped.
 */
export function fitWarmReport(input: WarmResult, limit = TERMINATION_MESSAGE_LIMIT): string {
  const report = input.revision ? { ...input, revision: { ...input.revision, url: boundUrl(input.revision.url) } } : input;
  const full = JSON.stringify(report);
  if (bytes(full) <= limit) return full;
  const withLists = (r: WarmResult, n: number): WarmResult =>
    r.closureDiff
      ? {
          ...r,
          closureDiff: {
            ...r.closureDiff,
            added: r.closureDiff.added.slice(0, n),
            removed: r.closureDiff.removed.slice(0, n),
            changed: r.closureDiff.changed.slice(0, n),
          },
        }
      : r;
  let r = report;
  if (r.closureDiff) {
    const longest = Math.max(r.closureDiff.added.length, r.closureDiff.removed.length, r.closureDiff.changed.length);
    let lo = 0;
    let hi = longest;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (bytes(JSON.stringify(withLists(r, mid))) <= limit) lo = mid;
      else hi = mid - 1;
    }
    r = withLists(r, lo);
  }
  let text = JSON.stringify(r);
  if (bytes(text) > limit && r.seconds) {
    r = { ...r, seconds: {} };
    text = JSON.stringify(r);
  }
  const revision = r.revision;
  if (bytes(text) > limit && revision) {
    const url = revision.url;
    // Characters may take several bytes, and the ellipsis takes three: cut until it fits.
    for (
      let keep = Math.max(0, url.length - (bytes(text) - limit) - 3);
      keep >= 0 && bytes(text) > limit;
      keep -= Math.max(1, Math.ceil((bytes(text) - limit) / 4))
    ) {
      r = { ...r, revision: { ...revision, url: `${url.slice(0, keep)}…` } };
      text = JSON.stringify(r);
    }
  }
  return text;
}

/** Reads the build step's result directory and makes the report. */
export async function warmReport(dir: string): Promise<WarmReport> {
  const { result, closure } = await readStepFiles(dir);
  const locked = await readLockedClosure(dir);
  const diff = locked
    ? diffClosures(
        locked.map((p) => p.path),
        closure.map((p) => p.path),
      )
    : undefined;
  return { message: warmReportOf(result.revision, result.seconds, diff), ...(diff ? { diff } : {}) };
}
