import type { Logger } from "../log/logger.ts";
import type { Clock } from "./clock.ts";
import { systemClock } from "./clock.ts";

/**
 * Shutdown runs in phases, in this order; hooks within a phase run concurrently:
 * - stop-accepting: shut the work queues, stop informers (no new work starts);
 * - drain: wait for the workers to finish the keys they hold;
 * - release: release the leader-election Lease (a standby takes over at once);
 * - close: close the health/metrics server, flush logs.
 */
const SHUTDOWN_PHASES = ["stop-accepting", "drain", "release", "close"] as const;
export type ShutdownPhase = (typeof SHUTDOWN_PHASES)[number];

export type ShutdownHook = (deadline: AbortSignal) => Promise<void> | void;

export interface SignalSource {
  on(signal: NodeJS.Signals, listener: () => void): unknown;
  off(signal: NodeJS.Signals, listener: () => void): unknown;
}

export interface GracefulShutdownOptions {
  logger: Logger;
  /** Time each phase may take; its hooks' signal aborts then and the next phase starts. */
  phaseTimeoutsMs?: Partial<Record<ShutdownPhase, number>>;
  clock?: Clock;
  /** Default SIGTERM and SIGINT. */
  signals?: NodeJS.Signals[];
  /** Default `process`. */
  signalSource?: SignalSource;
  /** Called with the exit code when the sequence is over, and at once on a second signal. */
  exit?: (code: number) => void;
}

const DEFAULT_PHASE_TIMEOUTS_MS: Readonly<Record<ShutdownPhase, number>> = {
  "stop-accepting": 5_000,
  drain: 25_000,
  release: 5_000,
  close: 3_000,
};

export interface ShutdownResult {
  reason: string;
  /** Every hook finished in time without throwing. */
  clean: boolean;
  exitCode: number;
}

/**
 * Turns SIGTERM/SIGINT (or a call, e.g. when leadership is lost) into an ordered, bounded shutdown.
 * `signal` aborts as soon as shutdown begins, for loops that should notice at once.
 * Note: when the drain deadline passes, the Lease is still released; work still running then
 * belongs to a process about to exit.
 */
export class GracefulShutdown {
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #timeouts: Record<ShutdownPhase, number>;
  readonly #signals: NodeJS.Signals[];
  readonly #source: SignalSource;
  readonly #exit: ((code: number) => void) | undefined;
  readonly #hooks = new Map<ShutdownPhase, { name: string; fn: ShutdownHook }[]>();
  readonly #abort = new AbortController();
  #result: Promise<ShutdownResult> | undefined;
  readonly #onSignal: (signal: NodeJS.Signals) => void;
  readonly #listeners = new Map<NodeJS.Signals, () => void>();

  constructor(options: GracefulShutdownOptions) {
    this.#log = options.logger.child({ component: "shutdown" });
    this.#clock = options.clock ?? systemClock;
    this.#timeouts = { ...DEFAULT_PHASE_TIMEOUTS_MS, ...options.phaseTimeoutsMs };
    this.#signals = options.signals ?? ["SIGTERM", "SIGINT"];
    this.#source = options.signalSource ?? process;
    this.#exit = options.exit;
    this.#onSignal = (signal) => {
      if (this.#result) {
        this.#log.warn({ signal }, "second signal during shutdown; exiting now");
        this.#exit?.(1);
        return;
      }
      void this.shutdown(`received ${signal}`);
    };
    for (const signal of this.#signals) {
      const listener = () => this.#onSignal(signal);
      this.#listeners.set(signal, listener);
      this.#source.on(signal, listener);
    }
  }

  /** Aborted when shutdown begins. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get shuttingDown(): boolean {
    return this.#result !== undefined;
  }

  register(phase: ShutdownPhase, name: string, fn: ShutdownHook): void {
    const hooks = this.#hooks.get(phase) ?? [];
    hooks.push({ name, fn });
    this.#hooks.set(phase, hooks);
  }

  /** Starts the sequence (once; later calls return the same result). */
  shutdown(reason: string, exitCode = 0): Promise<ShutdownResult> {
    if (this.#result) return this.#result;
    // The result is recorded before the signal is aborted: an abort listener that calls
    // shutdown() again (e.g. "stopping") must get this run, with this exit code.
    const started = Promise.withResolvers<void>();
    this.#result = this.#run(reason, exitCode, started.promise);
    this.#log.info({ reason }, "shutting down");
    this.#abort.abort(new Error(`shutdown: ${reason}`));
    started.resolve();
    return this.#result;
  }

  /** Removes the signal listeners (tests, or a process that handles signals itself). */
  dispose(): void {
    for (const [signal, listener] of this.#listeners) this.#source.off(signal, listener);
    this.#listeners.clear();
  }

  async #run(reason: string, requestedCode: number, started: Promise<void>): Promise<ShutdownResult> {
    await started;
    let clean = true;
    for (const phase of SHUTDOWN_PHASES) {
      const hooks = this.#hooks.get(phase) ?? [];
      if (hooks.length === 0) continue;
      if (!(await this.#runPhase(phase, hooks))) clean = false;
    }
    const exitCode = clean ? requestedCode : Math.max(requestedCode, 1);
    this.#log.info({ reason, clean, exitCode }, "shutdown complete");
    this.dispose();
    this.#exit?.(exitCode);
    return { reason, clean, exitCode };
  }

  async #runPhase(phase: ShutdownPhase, hooks: { name: string; fn: ShutdownHook }[]): Promise<boolean> {
    const deadline = new AbortController();
    const timeoutMs = this.#timeouts[phase];
    const pending = new Set(hooks.map((h) => h.name));
    let ok = true;
    const runs = hooks.map(async (hook) => {
      try {
        await hook.fn(deadline.signal);
      } catch (err) {
        ok = false;
        this.#log.error({ phase, hook: hook.name, error: err instanceof Error ? err.message : String(err) }, "shutdown hook failed");
      } finally {
        pending.delete(hook.name);
      }
    });
    let timer: { cancel(): void } | undefined;
    const timedOut = new Promise<true>((resolve) => {
      timer = this.#clock.setTimeout(() => resolve(true), timeoutMs);
    });
    const late = await Promise.race([Promise.all(runs).then(() => false), timedOut]);
    timer?.cancel();
    if (late) {
      deadline.abort(new Error(`shutdown phase ${phase} took longer than ${timeoutMs} ms`));
      this.#log.warn({ phase, timeoutMs, unfinished: [...pending] }, "shutdown phase timed out; moving on");
      return false;
    }
    return ok;
  }
}
