// The push step's result: what the controller reads from the pod's termination message (at most
// 4096 bytes, kubelet's limit) and what `build --json` prints (the same fields, plus the build
// phases in `seconds`).
//
//   {"image": "<host>/<repo>@sha256:<hex>", "digest": "sha256:<hex>", "tags": ["rev-…", ...],
//    "format": "package", "revision": {"url", "rev", "lastModified", "narHash"},
//    "layers": {"total", "pushed", "skipped", "mounted"}, "bytesPushed": n,
//    "seconds": {"plan", "layers", "config", "manifest", "tags", "push", ...}, "outPath": "/nix/store/…",
//    "unchanged": true (only when the output was that of the image in use: nothing pushed)}
//
// A failure writes a short plain-text message instead (also <= 4096 bytes). The shape is
// pushResultSchema in step-results.ts, which the controller parses.
import { writeFile } from "node:fs/promises";
import { boundDurations, boundUrl, resultBounds, TERMINATION_MESSAGE_LIMIT, type PushStepResult } from "./step-results.ts";

function bytes(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/**
 * PURE: the compact JSON of `result`, shortened until it fits `limit` bytes: extra tags are dropped
 * first (the immutable tag, the first, always stays), then the locked URL is cut, then the phase
 * timings go. The digest, image and counts are never dropped.
 */
export function fitResult(result: PushStepResult, limit = TERMINATION_MESSAGE_LIMIT): string {
  const r: PushStepResult = {
    ...result,
    tags: result.tags.slice(0, resultBounds.tags),
    revision: { ...result.revision, url: boundUrl(result.revision.url) },
    seconds: boundDurations(result.seconds),
  };
  let text = JSON.stringify(r);
  while (bytes(text) > limit && r.tags.length > 1) {
    r.tags.pop();
    text = JSON.stringify(r);
  }
  if (bytes(text) > limit) {
    const excess = bytes(text) - limit;
    r.revision.url = `${r.revision.url.slice(0, Math.max(0, r.revision.url.length - excess - 1))}…`;
    text = JSON.stringify(r);
  }
  if (bytes(text) > limit) {
    r.seconds = {};
    text = JSON.stringify(r);
  }
  return text;
}

/** PURE: a failure message cut to the limit (on a character boundary). */
export function fitMessage(message: string, limit = TERMINATION_MESSAGE_LIMIT): string {
  if (bytes(message) <= limit) return message;
  let out = message.slice(0, limit);
  while (bytes(`${out}…`) > limit) out = out.slice(0, -1);
  return `${out}…`;
}

/** Writes the termination message (never throws: a failing write must not hide the real outcome). */
export async function writeTerminationMessage(path: string | undefined, text: string): Promise<void> {
  if (path === undefined) return;
  try {
    await writeFile(path, fitMessage(text));
  } catch {
    // e.g. no /dev/termination-log outside Kubernetes
  }
}
