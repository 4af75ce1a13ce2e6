import { KubeHttpError } from "../runtime/kube-request.ts";

/**
 * What went wrong while a reconcile wrote to the API server, sorted by what to do about it:
 * permanent (our own write refused: 400/403/404/422; retrying the same write cannot help, so the
 * NixImage is Stalled with a reason), conflict (someone wrote first, or our cache is behind:
 * decide again from fresh caches, through the work queue's backoff), transient (anything else:
 * 5xx, 429, timeouts, network; retried with backoff and shown as Reconciling).
 */

/** This replica does not hold the leader lease (any more): nothing may be written. */
export class NotLeaderError extends Error {
  override name = "NotLeaderError";
  /** Expected after a lost lease: the worker logs it at debug level, not as a failure. */
  readonly expected = true;
  constructor(what: string) {
    super(`not the leader: ${what} not written`);
  }
}

/**
 * The status write lost a race (409), or the cache still shows the object our last write
 * replaced: nothing was written; the work queue retries the key with backoff.
 */
export class StaleCacheError extends Error {
  override name = "StaleCacheError";
  /** A normal race, retried through the backoff: logged at debug level, not as a failure. */
  readonly expected = true;
}

export type ErrorClass = "permanent" | "conflict" | "transient" | "not-leader";

export function classifyError(error: unknown): ErrorClass {
  if (error instanceof NotLeaderError) return "not-leader";
  if (error instanceof StaleCacheError) return "conflict";
  if (error instanceof KubeHttpError) {
    if (error.statusCode === 409) return "conflict";
    if ([400, 403, 404, 405, 413, 422].includes(error.statusCode)) return "permanent";
  }
  return "transient";
}

/** A short text of the error for status and Events: the API server's message, never a request body. */
export function errorText(error: unknown): string {
  const text = error instanceof KubeHttpError ? `${error.statusCode} ${error.reason ?? ""}: ${error.message}` : String((error as Error)?.message ?? error);
  return text.replace(/\s+/g, " ").trim().slice(0, 900);
}
