import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { KubeAccess } from "./kube-config.ts";
import type { Logger } from "../log/logger.ts";
import { systemClock, type Clock } from "./clock.ts";
import { controllerMetricsFactory, type ControllerMetrics } from "./controller-metrics.ts";
import { informersReady, startHealthServer, type HealthServer, type InformerHealth } from "./health-server.ts";
import { createInformer, type Informer, type KubeInformerOptions } from "./informer.ts";
import { LeaderElector } from "./leader-election.ts";
import { KubeLeaseStore } from "./lease-store.ts";
import { MetricsRegistry, registerProcessMetrics } from "./metrics.ts";
import { WorkQueue } from "./work-queue.ts";
import { runWorkers, type Reconciler, type Workers } from "./workers.ts";

interface LeaderElectionSettings {
  namespace: string;
  leaseName: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

export interface ManagerOptions {
  kc: KubeAccess;
  logger: Logger;
  clock?: Clock;
  /** Unique per process; default host name plus a random suffix. */
  identity?: string;
  /** Port for /healthz, /readyz and /metrics; 0 picks a free one; undefined for none. */
  metricsPort?: number;
  metricsHost?: string;
  /** Undefined: this replica always leads (one replica, or tests). */
  leaderElection?: LeaderElectionSettings;
  /** Leadership was lost: the process should exit so it restarts clean (workers are stopped already). */
  onLostLeadership?: () => void;
  /** Every informer lists again this often: the bound for repairing a lost watch event. Default 10 min. */
  relistPeriodMs?: number;
  /** /readyz turns false when an informer's watch has been down longer than this. Default 30 s. */
  watchDownGraceMs?: number;
  /** stop() lets running reconciles finish this long, then aborts them. Default 25 s. */
  shutdownDeadlineMs?: number;
  /** Without leader election: how long start() waits for the caches. Default 120 s. */
  syncTimeoutMs?: number;
}

export interface ControllerOptions {
  reconcile: Reconciler<string>;
  /** Keys processed at once. */
  concurrency: number;
  /** Runs when this replica starts leading and every cache is synced, before the workers (e.g. enqueue all). */
  onLeading?: (queue: WorkQueue<string>) => void;
}

/** A task that runs only while leading (after the caches synced), e.g. a background poller; it ends when `signal` aborts. */
export type LeaderTask = (signal: AbortSignal) => Promise<void>;

/** The part of an informer the manager drives, whatever its object type. */
interface ManagedInformer extends InformerHealth {
  start(): void;
  stop(): Promise<void>;
  waitForSync(signal?: AbortSignal): Promise<void>;
}

interface Controller extends ControllerOptions {
  name: string;
  queue: WorkQueue<string>;
  metrics: ControllerMetrics;
  workers?: Workers;
}

/**
 * What every controller needs, written once (controller-runtime's Manager): informers that are
 * started and synced together, /healthz, /readyz (every cache synced and watching) and /metrics
 * with process metrics, leader election with a write fence (`canWrite`), workers per controller
 * that run only while leading, tasks that run only while leading, and a bounded shutdown.
 * A controller's own setup only declares informers, indexes, event mappers and its reconciler.
 */
export class Manager {
  readonly metrics = new MetricsRegistry();
  readonly identity: string;
  readonly clock: Clock;
  /** The API server access every part of the controller should use: it counts requests (rest_client_requests_total). */
  readonly kc: KubeAccess;
  readonly #options: ManagerOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #informers: ManagedInformer[] = [];
  readonly #controllers: Controller[] = [];
  readonly #tasks: { name: string; run: LeaderTask; done?: Promise<void> }[] = [];
  readonly #controllerMetrics: (name: string) => ControllerMetrics;
  #elector: LeaderElector | undefined;
  #leading = false;
  #leaderAbort: AbortController | undefined;
  #health: HealthServer | undefined;
  #busy = 0;
  #stopped: Promise<void> | undefined;

  constructor(options: ManagerOptions) {
    this.#options = options;
    this.#clock = this.clock = options.clock ?? systemClock;
    this.#log = options.logger;
    this.identity = options.identity ?? `${hostname()}-${randomBytes(3).toString("hex")}`;
    registerProcessMetrics(this.metrics);
    const requests = this.metrics.counter({
      name: "rest_client_requests_total",
      help: "Requests to the API server by method (lists, watches, writes, leases).",
      labelNames: ["method"],
    });
    const kc = options.kc;
    // Every request applies the credentials once: the place to count them.
    this.kc = {
      getCurrentCluster: () => kc.getCurrentCluster(),
      applyToHTTPSOptions: (requestOptions) => {
        requests.inc({ method: requestOptions.method ?? "GET" });
        return kc.applyToHTTPSOptions(requestOptions);
      },
    };
    this.#controllerMetrics = controllerMetricsFactory(this.metrics);
  }

  /** An informer the manager starts, waits for and watches over (readiness); declare before start(). */
  informer<T extends KubernetesObject>(options: Omit<KubeInformerOptions<T>, "logger" | "clock">): Informer<T> {
    const informer = createInformer<T>(this.kc, {
      logger: this.#log,
      clock: this.#clock,
      relistPeriodMs: this.#options.relistPeriodMs ?? 600_000,
      ...options,
    });
    this.#informers.push(informer);
    return informer;
  }

  /** A named controller: its queue exists at once (for event mappers); its workers run while leading. */
  controller(name: string, options: ControllerOptions): WorkQueue<string> {
    const metrics = this.#controllerMetrics(name);
    const queue = new WorkQueue<string>({ clock: this.#clock, metrics: metrics.queue });
    this.#controllers.push({ ...options, name, queue, metrics });
    return queue;
  }

  leaderTask(name: string, run: LeaderTask): void {
    this.#tasks.push({ name, run });
  }

  isLeader(): boolean {
    return this.#leading;
  }

  /**
   * The write fence: true only while leading and within the renew deadline of the last renewal
   * (by this process's clock). Check it right before every API write.
   */
  canWrite(): boolean {
    if (this.#stopped) return false;
    return this.#elector ? this.#elector.holdsLease() : this.#leading;
  }

  get healthPort(): number | undefined {
    return this.#health?.port;
  }

  /**
   * Starts the informers, the health server and (with leader election) the campaign; without
   * leader election it resolves once the caches are synced and the workers run.
   */
  async start(): Promise<void> {
    for (const informer of this.#informers) informer.start();
    if (this.#options.metricsPort !== undefined) {
      this.#health = await startHealthServer({
        port: this.#options.metricsPort,
        host: this.#options.metricsHost,
        registry: this.metrics,
        logger: this.#log,
        readinessChecks: { informers: informersReady(this.#informers, this.#options.watchDownGraceMs ?? 30_000, () => this.#clock.now().getTime()) },
      });
    }
    const election = this.#options.leaderElection;
    if (!election) {
      // The timeout bounds the cache sync only: leading without an election never ends by itself
      // (with the timeout in the leader signal, the leader tasks, e.g. the revision poller,
      // stopped 120 s after start).
      await this.#startLeading(new AbortController().signal, AbortSignal.timeout(this.#options.syncTimeoutMs ?? 120_000));
      return;
    }
    this.#elector = new LeaderElector({
      store: new KubeLeaseStore(this.kc, election.namespace, election.leaseName),
      identity: this.identity,
      leaseDurationMs: election.leaseDurationMs,
      renewDeadlineMs: election.renewDeadlineMs,
      retryPeriodMs: election.retryPeriodMs,
      clock: this.#clock,
      logger: this.#log,
      onStartedLeading: (signal) => {
        this.#startLeading(signal).catch((error: unknown) => this.#log.error({ err: String(error) }, "could not start workers"));
      },
      onStoppedLeading: () => this.#stopLeading(),
      onLost: () => {
        this.#log.error("lost the leader lease; workers stopped");
        this.#options.onLostLeadership?.();
      },
    });
    void this.#elector.run();
  }

  /** Resolves when every queue is empty and no reconcile runs (two looks in a row). */
  async idle(): Promise<void> {
    for (let quiet = 0; quiet < 2;) {
      await this.#clock.sleep(50);
      quiet = this.#controllers.every((c) => c.queue.length === 0) && this.#busy === 0 ? quiet + 1 : 0;
    }
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#stopAll();
    return this.#stopped;
  }

  async #startLeading(signal: AbortSignal, syncSignal: AbortSignal = signal): Promise<void> {
    await Promise.all(this.#informers.map((i) => i.waitForSync(syncSignal)));
    if (signal.aborted || syncSignal.aborted || this.#stopped) return;
    this.#leading = true;
    this.#leaderAbort = new AbortController();
    const leaderSignal = AbortSignal.any([signal, this.#leaderAbort.signal]);
    this.#log.info({ identity: this.identity }, "leading: caches synced, starting workers");
    for (const controller of this.#controllers) {
      controller.onLeading?.(controller.queue);
      controller.workers = runWorkers({
        queue: controller.queue,
        reconcile: async (key, context) => {
          this.#busy++;
          try {
            return await controller.reconcile(key, context);
          } finally {
            this.#busy--;
          }
        },
        concurrency: controller.concurrency,
        logger: this.#log.child({ controller: controller.name }),
        metrics: controller.metrics.workers,
      });
    }
    for (const task of this.#tasks) {
      task.done = task.run(leaderSignal).catch((error: unknown) => this.#log.error({ task: task.name, err: String(error) }, "leader task failed"));
    }
  }

  /** Leadership ended: no key is taken any more and running reconciles are told to stop. */
  #stopLeading(): void {
    if (!this.#leading) return;
    this.#leading = false;
    this.#leaderAbort?.abort(new Error("leadership ended"));
    for (const controller of this.#controllers) {
      controller.queue.shutDown();
      controller.workers?.abort(new Error("leadership ended"));
    }
  }

  async #stopAll(): Promise<void> {
    const deadlineMs = this.#options.shutdownDeadlineMs ?? 25_000;
    this.#leaderAbort?.abort(new Error("stopping"));
    const drained = Promise.all(this.#controllers.map(async (c) => (await c.queue.shutDownWithDrain(), await c.workers?.finished)));
    const timer = this.#clock.setTimeout(() => {
      this.#log.warn({ deadlineMs }, "shutdown deadline passed; aborting running reconciles");
      for (const controller of this.#controllers) controller.workers?.abort(new Error("shutdown deadline passed"));
    }, deadlineMs);
    await drained;
    timer.cancel();
    for (const task of this.#tasks) await task.done;
    this.#leading = false;
    await this.#elector?.stop();
    await Promise.all(this.#informers.map((informer) => informer.stop()));
    await this.#health?.close();
  }
}
