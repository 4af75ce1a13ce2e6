import type { Logger } from "../log/logger.ts";
import type { Clock } from "./clock.ts";
import { systemClock } from "./clock.ts";
import { LeaseConflictError, type LeaseRecord, type LeaseStore, type StoredLease } from "./lease-store.ts";

export interface LeaderElectorOptions {
  store: LeaseStore;
  /** Unique per process, e.g. the pod name plus a random suffix. */
  identity: string;
  /** How long others wait, after they last saw the Lease change, before taking it. Default 15 s. */
  leaseDurationMs?: number;
  /** The leader gives up when it could not renew for this long. Default 10 s. Must be < leaseDuration. */
  renewDeadlineMs?: number;
  /** Time between attempts to acquire or renew. Default 2 s. */
  retryPeriodMs?: number;
  /** Acquire attempts wait retryPeriod * (1 + jitter * random()). Default 0.2. */
  jitter?: number;
  /** Release the Lease when stopped while leading, so a standby takes over at once. Default true. */
  releaseOnStop?: boolean;
  clock?: Clock;
  random?: () => number;
  logger: Logger;
  /** Became leader; `signal` aborts when leadership ends (lost or stopped). */
  onStartedLeading?(signal: AbortSignal): void;
  /** Leadership ended, whichever way. */
  onStoppedLeading?(): void;
  /** Leadership was lost involuntarily (renewals failed past the deadline): the caller should exit. */
  onLost?(): void;
  /** The observed holder changed (also called with our own identity). */
  onNewLeader?(identity: string): void;
}

/**
 * Leader election on a coordination.k8s.io/v1 Lease, in the manner of client-go's leaderelection:
 *
 * - a candidate takes the Lease when it does not exist, is released (no holder), or has not changed
 *   for leaseDuration as seen by the candidate's own clock (so clock skew between nodes does not matter);
 * - the leader renews every retryPeriod; when no renewal succeeded for renewDeadline it stops leading
 *   and calls `onLost`;
 * - every write carries the resourceVersion it read, so two candidates never both win;
 * - `stop()` releases the Lease (holder cleared) so a standby takes over without waiting.
 */
export class LeaderElector {
  readonly identity: string;
  readonly #store: LeaseStore;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #leaseDurationMs: number;
  readonly #renewDeadlineMs: number;
  readonly #retryPeriodMs: number;
  readonly #jitter: number;
  readonly #releaseOnStop: boolean;
  readonly #options: LeaderElectorOptions;

  #observed: StoredLease | undefined;
  #observedKey = "";
  #observedAtMs = 0;
  #leading = false;
  #lastRenewMs = 0;
  #leaderAbort: AbortController | undefined;
  #stopAbort = new AbortController();
  #running: Promise<void> | undefined;
  #reportedLeader: string | undefined;

  constructor(options: LeaderElectorOptions) {
    this.#options = options;
    this.identity = options.identity;
    this.#store = options.store;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.#renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.#retryPeriodMs = options.retryPeriodMs ?? 2_000;
    this.#jitter = options.jitter ?? 0.2;
    this.#releaseOnStop = options.releaseOnStop ?? true;
    this.#log = options.logger.child({ lease: options.store.description, identity: options.identity });
    if (!this.identity) throw new Error("leader election needs a non-empty identity");
    if (!(this.#leaseDurationMs > this.#renewDeadlineMs)) throw new RangeError("leaseDuration must be greater than renewDeadline");
    if (!(this.#renewDeadlineMs > this.#retryPeriodMs * (1 + this.#jitter))) {
      throw new RangeError("renewDeadline must be greater than retryPeriod * (1 + jitter)");
    }
    if (!(this.#retryPeriodMs > 0)) throw new RangeError("retryPeriod must be positive");
  }

  isLeader(): boolean {
    return this.#leading;
  }

  /**
   * Whether this replica may write now: leading, and the last successful renewal is less than
   * renewDeadline ago by our own clock. Others take the Lease only leaseDuration (> renewDeadline)
   * after they saw it change, so a write checked here cannot overlap a new leader's, even when
   * the renew loop itself is stalled (a frozen process, a hung request).
   */
  holdsLease(): boolean {
    return this.#leading && this.#clock.now().getTime() - this.#lastRenewMs < this.#renewDeadlineMs;
  }

  /** The holder last seen on the Lease (undefined when released or never seen). */
  leader(): string | undefined {
    return this.#observed?.record.holderIdentity;
  }

  /**
   * Campaigns until leader, then renews until leadership is lost or `stop()` is called.
   * Resolves when the election is over; call once.
   */
  run(): Promise<void> {
    if (this.#running) throw new Error("LeaderElector.run may be called once");
    this.#running = this.#run();
    return this.#running;
  }

  /** Stops campaigning/renewing and, when leading, releases the Lease. Resolves when done. */
  async stop(): Promise<void> {
    this.#stopAbort.abort(new Error("leader election stopped"));
    await this.#running;
  }

  async #run(): Promise<void> {
    const stopSignal = this.#stopAbort.signal;
    this.#log.info("campaigning for leadership");
    // Acquire. Each attempt is bounded, so a hung request cannot hold up stop().
    let acquired = false;
    while (!stopSignal.aborted) {
      acquired = await this.#withDeadline(this.#tryAcquireOrRenew(), this.#renewDeadlineMs);
      if (acquired) break;
      const wait = this.#retryPeriodMs * (1 + this.#jitter * this.#random());
      if (!(await this.#sleep(wait))) break;
    }
    if (stopSignal.aborted) {
      // Stopped while (or right after) acquiring: hand the Lease back if we got it.
      if (acquired && this.#releaseOnStop) await this.#release();
      return;
    }
    this.#startLeading();
    // Renew.
    for (;;) {
      if (!(await this.#sleep(this.#retryPeriodMs))) break;
      let renewed = false;
      while (!stopSignal.aborted) {
        const remainingMs = this.#lastRenewMs + this.#renewDeadlineMs - this.#clock.now().getTime();
        if (remainingMs <= 0) break;
        renewed = await this.#withDeadline(this.#tryAcquireOrRenew(), remainingMs);
        if (renewed || stopSignal.aborted) break;
        const left = this.#lastRenewMs + this.#renewDeadlineMs - this.#clock.now().getTime();
        if (left <= 0) break;
        if (!(await this.#sleep(Math.min(this.#retryPeriodMs, left)))) break;
      }
      if (stopSignal.aborted) break;
      if (!renewed) {
        this.#log.error({ renewDeadlineMs: this.#renewDeadlineMs }, "could not renew the lease in time; leadership lost");
        await this.#stopLeading("lost");
        return;
      }
    }
    await this.#stopLeading("stopped");
  }

  #startLeading(): void {
    this.#leading = true;
    this.#leaderAbort = new AbortController();
    this.#log.info("became leader");
    this.#reportLeader(this.identity);
    const signal = this.#leaderAbort.signal;
    this.#safely("onStartedLeading", () => this.#options.onStartedLeading?.(signal));
  }

  async #stopLeading(how: "stopped" | "lost"): Promise<void> {
    if (!this.#leading) return;
    this.#leading = false;
    this.#leaderAbort?.abort(new Error(how === "lost" ? "leadership lost" : "leader election stopped"));
    if (how === "stopped" && this.#releaseOnStop) await this.#release();
    this.#safely("onStoppedLeading", () => this.#options.onStoppedLeading?.());
    if (how === "lost") this.#safely("onLost", () => this.#options.onLost?.());
  }

  /** Clears the holder (leaseDuration 1 s) if we still hold the Lease. */
  async #release(): Promise<void> {
    const observed = this.#observed;
    if (!observed || observed.record.holderIdentity !== this.identity) return;
    const now = this.#clock.now();
    try {
      const released = await this.#withDeadlineValue(
        this.#store.update(
          { holderIdentity: undefined, leaseDurationSeconds: 1, acquireTime: now, renewTime: now, leaseTransitions: observed.record.leaseTransitions },
          observed.resourceVersion,
        ),
        this.#renewDeadlineMs,
      );
      if (released) {
        this.#setObserved(released, now.getTime());
        this.#log.info("released the lease");
      } else {
        this.#log.warn("releasing the lease timed out");
      }
    } catch (err) {
      this.#log.warn({ error: describe(err) }, "could not release the lease; the next leader waits for it to expire");
    }
  }

  /** One attempt; true when we hold the Lease afterwards. Errors count as "no". */
  async #tryAcquireOrRenew(): Promise<boolean> {
    const durationSeconds = Math.ceil(this.#leaseDurationMs / 1000);
    try {
      // Fast path: a leader renews with the resourceVersion it wrote last, without reading first.
      if (this.#leading && this.#observed?.record.holderIdentity === this.identity) {
        const now = this.#clock.now();
        try {
          const renewed = await this.#store.update(
            { ...this.#observed.record, holderIdentity: this.identity, leaseDurationSeconds: durationSeconds, renewTime: now },
            this.#observed.resourceVersion,
          );
          this.#setObserved(renewed, this.#clock.now().getTime());
          this.#lastRenewMs = now.getTime();
          return true;
        } catch (err) {
          this.#log.debug({ error: describe(err) }, "fast renew failed; reading the lease");
        }
      }

      const stored = await this.#store.get();
      const now = this.#clock.now();
      const nowMs = now.getTime();
      if (stored === undefined) {
        const created = await this.#store.create({
          holderIdentity: this.identity,
          leaseDurationSeconds: durationSeconds,
          acquireTime: now,
          renewTime: now,
          leaseTransitions: 0,
        });
        this.#setObserved(created, nowMs);
        this.#lastRenewMs = nowMs;
        return true;
      }
      this.#setObserved(stored, nowMs);

      const holder = stored.record.holderIdentity;
      const heldByOther = holder !== undefined && holder !== "" && holder !== this.identity;
      const theirDurationMs = (stored.record.leaseDurationSeconds ?? 0) > 0 ? (stored.record.leaseDurationSeconds as number) * 1000 : this.#leaseDurationMs;
      if (heldByOther && this.#observedAtMs + theirDurationMs > nowMs) return false;

      const keep = holder === this.identity;
      const record: LeaseRecord = {
        holderIdentity: this.identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: keep ? (stored.record.acquireTime ?? now) : now,
        renewTime: now,
        leaseTransitions: keep ? (stored.record.leaseTransitions ?? 0) : (stored.record.leaseTransitions ?? 0) + 1,
      };
      const updated = await this.#store.update(record, stored.resourceVersion);
      this.#setObserved(updated, nowMs);
      this.#lastRenewMs = nowMs;
      if (!keep) this.#log.info({ previousHolder: holder ?? null, transitions: record.leaseTransitions }, "acquired the lease");
      return true;
    } catch (err) {
      if (err instanceof LeaseConflictError) this.#log.debug({ error: err.message }, "lost a race for the lease");
      else this.#log.warn({ error: describe(err) }, "lease request failed");
      return false;
    }
  }

  /** Remembers the record; the observation time moves only when the record changed. */
  #setObserved(stored: StoredLease, nowMs: number): void {
    const key = stored.resourceVersion + "\u0000" + JSON.stringify(stored.record);
    if (key !== this.#observedKey) {
      this.#observedKey = key;
      this.#observedAtMs = nowMs;
    }
    this.#observed = stored;
    const holder = stored.record.holderIdentity;
    if (holder && holder !== this.#reportedLeader) this.#reportLeader(holder);
  }

  #reportLeader(identity: string): void {
    if (identity === this.#reportedLeader) return;
    this.#reportedLeader = identity;
    if (identity !== this.identity) this.#log.info({ leader: identity }, "new leader observed");
    this.#safely("onNewLeader", () => this.#options.onNewLeader?.(identity));
  }

  /** Sleeps on the clock; false when stopped meanwhile. */
  async #sleep(ms: number): Promise<boolean> {
    try {
      await this.#clock.sleep(ms, this.#stopAbort.signal);
      return true;
    } catch {
      return false;
    }
  }

  /** The attempt's result, or false when it takes longer than `ms`. */
  async #withDeadline(attempt: Promise<boolean>, ms: number): Promise<boolean> {
    return (await this.#withDeadlineValue(attempt, ms)) ?? false;
  }

  #withDeadlineValue<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
    return new Promise<T | undefined>((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => resolve(undefined), ms);
      work.then(
        (value) => {
          timer.cancel();
          resolve(value);
        },
        (err: unknown) => {
          timer.cancel();
          reject(err);
        },
      );
    });
  }

  #safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ error: describe(err) }, `${what} callback failed`);
    }
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message.slice(0, 300)}` : String(err).slice(0, 300);
}
