import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { KubeConfig, KubernetesObject, V1Job, V1PersistentVolumeClaim, V1Pod } from "@kubernetes/client-node";
import { group, plural, version } from "../api/niximage.ts";
import { parseDuration } from "../api/duration.ts";
import type { OperatorConfig } from "../config/operator-config.ts";
import type { Logger } from "../log/logger.ts";
import { systemClock, type Clock } from "../runtime/clock.ts";
import { controllerMetricsFactory } from "../runtime/controller-metrics.ts";
import { startHealthServer, informersSynced, type HealthServer } from "../runtime/health-server.ts";
import { createInformer, objectKey, type Informer } from "../runtime/informer.ts";
import { LeaderElector } from "../runtime/leader-election.ts";
import { KubeLeaseStore } from "../runtime/lease-store.ts";
import { MetricsRegistry } from "../runtime/metrics.ts";
import { WorkQueue } from "../runtime/work-queue.ts";
import { runWorkers, type Workers } from "../runtime/workers.ts";
import { jobView } from "./job-outcome.ts";
import { labels } from "./names.ts";
import { indexes, NixImageReconciler } from "./niximage-reconciler.ts";
import { RevisionPolls } from "./revision-polls.ts";
import { resolveRevision } from "../flake/revision-resolver.ts";
import { followingImages, startWebhookReceiver } from "../webhook/webhook-receiver.ts";
import type { WebhookServer } from "../webhook/webhook-server.ts";
import { rolloutAnnotations, workloadKinds, type Workload } from "../rollout/rollout-plan.ts";

/**
 * Wires the NixImage controller: informers (NixImages, builder Jobs and their pods, store
 * volumes) that only enqueue keys, a keyed work queue, workers running the reconciler, leader
 * election, and /healthz, /readyz, /metrics. Only the leader runs workers; every replica keeps
 * its caches warm so a takeover starts at once.
 */
export interface OperatorOptions {
  kc: KubeConfig;
  config: OperatorConfig;
  logger: Logger;
  clock?: Clock;
  identity?: string;
  /** Port for /healthz, /readyz and /metrics; 0 picks a free one; undefined for none. */
  metricsPort?: number;
  metricsHost?: string;
  /** Called when leadership is lost (the process should exit so it restarts clean). */
  onLostLeadership?: () => void;
  polls?: RevisionPolls;
  /** Port of the webhook receiver when config.webhook.enabled (default: from config.webhook.address; 0 picks a free one). */
  webhookPort?: number;
}

export interface RunningOperator {
  readonly metrics: MetricsRegistry;
  readonly health: HealthServer | undefined;
  /** The forge webhook receiver, when config.webhook.enabled. */
  readonly webhook: WebhookServer | undefined;
  readonly identity: string;
  isLeader(): boolean;
  /** API writes made by reconciles, by "VERB resource". */
  readonly writes: Map<string, number>;
  /** Queues every NixImage for a reconcile now (a manual resync). */
  enqueueAll(): void;
  /** Resolves when the queue is empty and no reconcile runs. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const { kc, config } = options;
  const clock = options.clock ?? systemClock;
  const log = options.logger.child({ component: "controller" });
  const identity = options.identity ?? `${hostname()}-${randomBytes(3).toString("hex")}`;
  const metrics = new MetricsRegistry();
  const controllerMetrics = controllerMetricsFactory(metrics)("niximage");
  const writeCounter = metrics.counter({
    name: "niximage_api_writes_total",
    help: "API writes made by reconciles, by verb and resource.",
    labelNames: ["verb", "resource"],
  });
  const writes = new Map<string, number>();
  const buildsTotal = metrics.counter({
    name: "niximage_builds_total",
    help: "Finished builds by kind (Image, Warm) and result.",
    labelNames: ["kind", "result"],
  });
  const phaseSeconds = metrics.histogram({
    name: "niximage_build_phase_seconds",
    help: "Seconds per phase of finished builds (lock, build, push, ...), from the builder's own timings.",
    labelNames: ["kind", "phase"],
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600],
  });
  const resyncPeriodMs = parseDuration(config.resyncPeriod);

  // One informer per resource per watched namespace ("" = all namespaces).
  const scopes = config.namespaces.length > 0 ? config.namespaces : [""];
  const pathFor = (scope: string, apiPrefix: string, resource: string) => `${apiPrefix}${scope ? `/namespaces/${scope}` : ""}/${resource}`;
  const managed = `${labels.image}`;
  const informerSets = scopes.map((scope) => ({
    images: createInformer<KubernetesObject>(kc, { path: pathFor(scope, `/apis/${group}/${version}`, plural), logger: log, clock, resyncPeriodMs }),
    jobs: createInformer<V1Job>(kc, { path: pathFor(scope, "/apis/batch/v1", "jobs"), labelSelector: managed, logger: log, clock }),
    pods: createInformer<V1Pod>(kc, { path: pathFor(scope, "/api/v1", "pods"), labelSelector: managed, logger: log, clock }),
    volumes: createInformer<V1PersistentVolumeClaim>(kc, {
      path: pathFor(scope, "/api/v1", "persistentvolumeclaims"),
      labelSelector: labels.store,
      logger: log,
      clock,
    }),
    // Consent is an annotation, which no selector can filter on: these watch all workloads.
    workloads: workloadKinds.map((kind) =>
      createInformer<Workload>(kc, {
        path: kind === "CronJob" ? pathFor(scope, "/apis/batch/v1", "cronjobs") : pathFor(scope, "/apis/apps/v1", `${kind.toLowerCase()}s`),
        logger: log,
        clock,
      }),
    ),
  }));
  const merged = {
    images: mergeInformers(informerSets.map((s) => s.images)),
    jobs: mergeInformers(informerSets.map((s) => s.jobs)),
    pods: mergeInformers(informerSets.map((s) => s.pods)),
    volumes: mergeInformers(informerSets.map((s) => s.volumes)),
    workloads: mergeInformers(informerSets.flatMap((s) => s.workloads)),
  };
  const all = informerSets.flatMap((s) => [s.images, s.jobs, s.pods, s.volumes, ...s.workloads] as Informer<KubernetesObject>[]);
  const fromKey = (workload: KubernetesObject) => {
    const from = workload.metadata?.annotations?.[rolloutAnnotations.from];
    return from ? [`${workload.metadata?.namespace}/${from}`] : [];
  };
  for (const set of informerSets) {
    set.jobs.addIndex(indexes.jobsByImage, (job) =>
      job.metadata?.labels?.[labels.image] ? [`${job.metadata.namespace}/${job.metadata.labels[labels.image]}`] : [],
    );
    set.pods.addIndex(indexes.podsByJob, (pod) => {
      const job = pod.metadata?.labels?.["batch.kubernetes.io/job-name"] ?? pod.metadata?.labels?.["job-name"];
      return job ? [`${pod.metadata?.namespace}/${job}`] : [];
    });
  }

  const queue = new WorkQueue<string>({ clock, metrics: controllerMetrics.queue });
  const enqueueImage = (obj: KubernetesObject) => queue.add(objectKey(obj));
  const enqueueOwner = (obj: KubernetesObject) => {
    const image = obj.metadata?.labels?.[labels.image];
    if (image) queue.add(`${obj.metadata?.namespace}/${image}`);
  };
  // A finished build frees a store volume: everyone waiting in that namespace may start now.
  const enqueueNamespaceOnFinish = (old: V1Job, job: V1Job) => {
    if (jobView(old, []).state === "Running" && jobView(job, []).state !== "Running") {
      for (const image of merged.images.list(job.metadata?.namespace)) enqueueImage(image);
    }
  };
  for (const informer of informerSets.flatMap((s) => s.workloads)) {
    informer.addIndex(indexes.workloadsByImage, fromKey);
    // A workload that opts in, changes its mind or changes its status wakes its NixImage.
    informer.addEventHandler({
      add: (w) => fromKey(w).forEach((k) => queue.add(k)),
      update: (old, w) => new Set([...fromKey(old), ...fromKey(w)]).forEach((k) => queue.add(k)),
      delete: (w) => fromKey(w).forEach((k) => queue.add(k)),
    });
  }
  for (const set of informerSets) {
    set.images.addEventHandler({ add: enqueueImage, update: (_old, obj) => enqueueImage(obj), delete: enqueueImage });
    set.jobs.addEventHandler({ add: enqueueOwner, update: (old, job) => (enqueueOwner(job), enqueueNamespaceOnFinish(old, job)), delete: enqueueOwner });
    set.pods.addEventHandler({ add: enqueueOwner, update: (_old, pod) => enqueueOwner(pod), delete: enqueueOwner });
  }

  const reconciler = new NixImageReconciler({
    kc,
    config,
    clock,
    logger: log,
    ...merged,
    // The poller connects only where the flake ref policy allows (SSRF): its allowed address ranges.
    polls: options.polls ?? new RevisionPolls((ref, o) => resolveRevision(ref, { ...o, allowedAddressRanges: config.flakeRefPolicy.allowedAddressRanges })),
    onBuildFinished: ({ kind, result, seconds }) => {
      buildsTotal.inc({ kind, result });
      for (const [phase, value] of Object.entries(seconds)) phaseSeconds.observe({ kind, phase }, value);
    },
    onWrite: (verb, resource) => {
      writeCounter.inc({ verb, resource });
      writes.set(`${verb} ${resource}`, (writes.get(`${verb} ${resource}`) ?? 0) + 1);
    },
  });

  for (const informer of all) informer.start();
  const health =
    options.metricsPort === undefined
      ? undefined
      : await startHealthServer({
          port: options.metricsPort,
          host: options.metricsHost,
          registry: metrics,
          logger: log,
          readinessChecks: { informers: informersSynced(all) },
        });

  // Every replica receives webhooks (the Service spreads them); the request goes through the API
  // server (an annotation) so the leader acts on it.
  const webhook = config.webhook.enabled
    ? await startWebhookReceiver({
        kc,
        config: config.webhook,
        port: options.webhookPort,
        images: () => followingImages(merged.images.list()),
        metrics,
        logger: log,
        clock,
      })
    : undefined;

  let workers: Workers | undefined;
  let busy = 0;
  let stopped: Promise<void> | undefined;
  const startWorkers = async (signal: AbortSignal) => {
    await Promise.all(all.map((i) => i.waitForSync(signal)));
    log.info({ identity }, "leading: caches synced, starting workers");
    for (const image of merged.images.list()) enqueueImage(image);
    workers = runWorkers({
      queue,
      reconcile: async (key, context) => {
        busy++;
        try {
          return await reconciler.reconcile(key, context);
        } finally {
          busy--;
        }
      },
      concurrency: config.concurrency.reconcilers,
      logger: log,
      metrics: controllerMetrics.workers,
    });
  };

  let elector: LeaderElector | undefined;
  let leading = false;
  if (config.leaderElection.enabled) {
    elector = new LeaderElector({
      store: new KubeLeaseStore(kc, config.leaderElection.namespace, config.leaderElection.leaseName),
      identity,
      leaseDurationMs: parseDuration(config.leaderElection.leaseDuration),
      renewDeadlineMs: parseDuration(config.leaderElection.renewDeadline),
      retryPeriodMs: parseDuration(config.leaderElection.retryPeriod),
      clock,
      logger: log,
      onStartedLeading: (signal) => {
        leading = true;
        startWorkers(signal).catch((error: unknown) => log.error({ err: String(error) }, "could not start workers"));
      },
      onStoppedLeading: () => {
        leading = false;
      },
      onLost: () => {
        log.error("lost the leader lease; stopping");
        options.onLostLeadership?.();
      },
    });
    void elector.run();
  } else {
    leading = true;
    await startWorkers(AbortSignal.timeout(120_000));
  }

  return {
    metrics,
    health,
    webhook,
    identity,
    writes,
    isLeader: () => leading,
    enqueueAll: () => {
      for (const image of merged.images.list()) enqueueImage(image);
    },
    async idle() {
      // Two empty looks in a row: a reconcile that just finished may have queued a follow-up.
      for (let quiet = 0; quiet < 2;) {
        await clock.sleep(50);
        quiet = queue.length === 0 && busy === 0 ? quiet + 1 : 0;
      }
    },
    stop() {
      stopped ??= stopAll();
      return stopped;
    },
  };

  async function stopAll(): Promise<void> {
    await webhook?.close();
    await queue.shutDownWithDrain();
    await workers?.finished;
    await elector?.stop();
    await Promise.all(all.map((informer) => informer.stop()));
    await health?.close();
  }
}

/** A read view over the same resource's informers in several namespaces. */
function mergeInformers<T extends KubernetesObject>(informers: Informer<T>[]): Informer<T> {
  if (informers.length === 1) return informers[0]!;
  const view = {
    get: (name: string, namespace?: string) => informers.map((i) => i.get(name, namespace)).find(Boolean),
    getByKey: (key: string) => informers.map((i) => i.getByKey(key)).find(Boolean),
    list: (namespace?: string) => informers.flatMap((i) => i.list(namespace)),
    byIndex: (name: string, value: string) => informers.flatMap((i) => i.byIndex(name, value)),
  };
  return view as unknown as Informer<T>;
}
