import type { Logger } from "../log/logger.ts";
import type { WorkQueue } from "./work-queue.ts";

/** What a reconcile asks for next. Nothing: done until the next event. */
export interface ReconcileResult {
  /** Process the key again after this many ms (e.g. the next poll), with a fresh retry history. */
  requeueAfterMs?: number;
}

export interface ReconcileContext {
  /** Aborted when the workers are told to give up (shutdown deadline passed). */
  signal: AbortSignal;
  /** A child of the workers' logger with the key bound. */
  log: Logger;
}

export type Reconciler<K = string> = (key: K, context: ReconcileContext) => Promise<ReconcileResult | void>;

/** Hooks so a metrics registry (or a test) can count outcomes. */
export interface WorkerMetrics {
  /** One call per reconcile: result is "success", "requeue_after" or "error". */
  reconciled?(result: "success" | "requeue_after" | "error", seconds: number): void;
  /** Workers busy right now. */
  active?(count: number): void;
}

export interface WorkersOptions<K> {
  queue: WorkQueue<K>;
  reconcile: Reconciler<K>;
  /** How many keys are processed at once. Default 1. */
  concurrency?: number;
  logger: Logger;
  metrics?: WorkerMetrics;
  /** Wall time for the duration metric; defaults to performance.now. */
  nowMs?: () => number;
}

export interface Workers {
  /** Resolves when every worker has returned (after the queue is shut down and keys in hand are done). */
  readonly finished: Promise<void>;
  /** Aborts the signal handed to running reconciles (use when a shutdown deadline has passed). */
  abort(reason?: unknown): void;
}

/**
 * Runs `concurrency` workers, each taking a key from the queue and reconciling it:
 * success forgets the key's retry history; `requeueAfterMs` forgets it and adds the key back
 * after that time; an error (thrown or rejected) is logged and the key is re-added through the
 * rate limiter. The workers stop when the queue is shut down; `queue.shutDownWithDrain()` then
 * resolves when their current keys are done.
 */
export function runWorkers<K>(options: WorkersOptions<K>): Workers {
  const { queue, reconcile, logger, metrics } = options;
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
  }
  const nowMs = options.nowMs ?? (() => performance.now());
  const abort = new AbortController();
  let active = 0;

  const processOne = async (key: K): Promise<void> => {
    const log = logger.child({ key: String(key) });
    const started = nowMs();
    active++;
    metrics?.active?.(active);
    try {
      const result = (await reconcile(key, { signal: abort.signal, log })) ?? {};
      const seconds = (nowMs() - started) / 1000;
      queue.forget(key);
      if (result.requeueAfterMs !== undefined && result.requeueAfterMs > 0) {
        queue.addAfter(key, result.requeueAfterMs);
        metrics?.reconciled?.("requeue_after", seconds);
      } else {
        metrics?.reconciled?.("success", seconds);
      }
    } catch (err) {
      const seconds = (nowMs() - started) / 1000;
      metrics?.reconciled?.("error", seconds);
      // Errors that mark themselves `expected` (a lost race, a lost lease) are part of normal
      // operation: retried the same way, but not reported as failures.
      const expected = (err as { expected?: unknown } | undefined)?.expected === true;
      (expected ? log.debug : log.error).call(log, { err, retries: queue.numRequeues(key) }, "reconcile failed; retrying with backoff");
      queue.addRateLimited(key);
    } finally {
      active--;
      metrics?.active?.(active);
      queue.done(key);
    }
  };

  const worker = async (): Promise<void> => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      await processOne(key);
    }
  };

  const finished = Promise.all(Array.from({ length: concurrency }, () => worker())).then(() => undefined);
  return { finished, abort: (reason) => abort.abort(reason) };
}
