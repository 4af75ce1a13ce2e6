import type { KubernetesObject, V1Job, V1PersistentVolumeClaim, V1Pod } from "@kubernetes/client-node";
import type { KubeAccess } from "../runtime/kube-config.ts";
import { group, plural, version } from "../api/niximage.ts";
import { parseDuration } from "../api/duration.ts";
import type { OperatorConfig } from "../config/operator-config.ts";
import type { Logger } from "../log/logger.ts";
import type { Clock } from "../runtime/clock.ts";
import { objectKey, type Informer, type InformerView } from "../runtime/informer.ts";
import { Manager } from "../runtime/manager.ts";
import type { MetricsRegistry } from "../runtime/metrics.ts";
import { rolloutAnnotations, workloadKinds, type Workload } from "../rollout/rollout-plan.ts";
import { withoutBookkeeping, workloadProjection } from "./cache-projections.ts";
import { jobView } from "./job-outcome.ts";
import { labels } from "./names.ts";
import { indexes, NixImageReconciler } from "./niximage-reconciler.ts";
import { RevisionPolls } from "./revision-polls.ts";
import { readSourceCredentials } from "./source-secret.ts";
import { resolveRevision } from "../flake/revision-resolver.ts";
import type { WebhookServer } from "../webhook/webhook-server.ts";

/**
 * The NixImage controller: which objects it watches, how it indexes them, which NixImage an
 * event concerns, and its reconciler. Everything generic (informers, health, metrics, leader
 * election, workers, shutdown) is the Manager's (runtime/manager.ts).
 */
export interface OperatorOptions {
  kc: KubeAccess;
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
  /** Where /healthz, /readyz and /metrics are served, if they are. */
  readonly health: { port: number } | undefined;
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
  const log = options.logger.child({ component: "controller" });
  const election = config.leaderElection;
  const manager = new Manager({
    kc,
    logger: log,
    clock: options.clock,
    identity: options.identity,
    metricsPort: options.metricsPort,
    metricsHost: options.metricsHost,
    onLostLeadership: options.onLostLeadership,
    relistPeriodMs: parseDuration(config.resyncPeriod),
    leaderElection: election.enabled
      ? {
          namespace: election.namespace,
          leaseName: election.leaseName,
          leaseDurationMs: parseDuration(election.leaseDuration),
          renewDeadlineMs: parseDuration(election.renewDeadline),
          retryPeriodMs: parseDuration(election.retryPeriod),
        }
      : undefined,
  });
  const { metrics } = manager;
  const writes = new Map<string, number>();
  const writeCounter = metrics.counter({
    name: "niximage_api_writes_total",
    help: "API writes made by reconciles, by verb and resource.",
    labelNames: ["verb", "resource"],
  });
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

  // One informer per resource per watched namespace ("" = all namespaces).
  const scopes = config.namespaces.length > 0 ? config.namespaces : [""];
  const pathFor = (scope: string, apiPrefix: string, resource: string) => `${apiPrefix}${scope ? `/namespaces/${scope}` : ""}/${resource}`;
  const sets = scopes.map((scope) => ({
    images: manager.informer<KubernetesObject>({
      path: pathFor(scope, `/apis/${group}/${version}`, plural),
      resyncPeriodMs: parseDuration(config.resyncPeriod),
      transform: withoutBookkeeping,
    }),
    jobs: manager.informer<V1Job>({ path: pathFor(scope, "/apis/batch/v1", "jobs"), labelSelector: labels.image, transform: withoutBookkeeping }),
    pods: manager.informer<V1Pod>({ path: pathFor(scope, "/api/v1", "pods"), labelSelector: labels.image, transform: withoutBookkeeping }),
    volumes: manager.informer<V1PersistentVolumeClaim>({
      path: pathFor(scope, "/api/v1", "persistentvolumeclaims"),
      labelSelector: labels.store,
      transform: withoutBookkeeping,
    }),
    // Consent is an annotation, which no selector can filter on: these watch all workloads.
    workloads: workloadKinds.map((kind) =>
      manager.informer<Workload>({
        path: kind === "CronJob" ? pathFor(scope, "/apis/batch/v1", "cronjobs") : pathFor(scope, "/apis/apps/v1", `${kind.toLowerCase()}s`),
        transform: workloadProjection,
      }),
    ),
  }));
  const images = mergeInformers(sets.map((s) => s.images));

  // Indexes.
  const fromKey = (workload: KubernetesObject) => {
    const from = workload.metadata?.annotations?.[rolloutAnnotations.from];
    return from ? [`${workload.metadata?.namespace}/${from}`] : [];
  };
  for (const set of sets) {
    set.jobs.addIndex(indexes.jobsByImage, (job) =>
      job.metadata?.labels?.[labels.image] ? [`${job.metadata.namespace}/${job.metadata.labels[labels.image]}`] : [],
    );
    set.pods.addIndex(indexes.podsByJob, (pod) => {
      const job = pod.metadata?.labels?.["batch.kubernetes.io/job-name"] ?? pod.metadata?.labels?.["job-name"];
      return job ? [`${pod.metadata?.namespace}/${job}`] : [];
    });
    for (const informer of set.workloads) informer.addIndex(indexes.workloadsByImage, fromKey);
  }

  const polls =
    options.polls ??
    new RevisionPolls({
      clock: manager.clock,
      logger: log,
      // The poller connects only where the flake ref policy allows (SSRF): its allowed address ranges.
      resolve: (ref, o) => resolveRevision(ref, { ...o, allowedAddressRanges: config.flakeRefPolicy.allowedAddressRanges }),
      // A private source's netrc / access-tokens (or ssh key and known_hosts), read for each poll and not kept (source-secret.ts).
      readCredentials: (secret, signal, want) => readSourceCredentials(manager.kc, secret, signal, want),
    });
  const reconciler = new NixImageReconciler({
    kc: manager.kc,
    config,
    clock: manager.clock,
    logger: log,
    images,
    jobs: mergeInformers(sets.map((s) => s.jobs)),
    pods: mergeInformers(sets.map((s) => s.pods)),
    volumes: mergeInformers(sets.map((s) => s.volumes)),
    workloads: mergeInformers(sets.flatMap((s) => s.workloads)),
    polls,
    canWrite: () => manager.canWrite(),
    onBuildFinished: ({ kind, result, seconds }) => {
      buildsTotal.inc({ kind, result });
      for (const [phase, value] of Object.entries(seconds)) phaseSeconds.observe({ kind, phase }, value);
    },
    onWrite: (verb, resource) => {
      writeCounter.inc({ verb, resource });
      writes.set(`${verb} ${resource}`, (writes.get(`${verb} ${resource}`) ?? 0) + 1);
    },
  });
  const enqueueAll = () => {
    for (const image of images.list()) queue.add(objectKey(image));
  };
  const queue = manager.controller("niximage", {
    reconcile: (key, context) => reconciler.reconcile(key, context),
    concurrency: config.concurrency.reconcilers,
    onLeading: enqueueAll,
  });
  manager.leaderTask("revision-polls", (signal) => polls.run(signal, (key) => queue.add(key)));

  // Event mappers: every event only enqueues the key of the NixImage it concerns.
  const enqueueImage = (obj: KubernetesObject) => queue.add(objectKey(obj));
  const enqueueOwner = (obj: KubernetesObject) => {
    const image = obj.metadata?.labels?.[labels.image];
    if (image) queue.add(`${obj.metadata?.namespace}/${image}`);
  };
  // A finished build frees a store volume: everyone waiting in that namespace may start now.
  const enqueueNamespaceOnFinish = (old: V1Job, job: V1Job) => {
    if (jobView(old, []).state === "Running" && jobView(job, []).state !== "Running") {
      for (const image of images.list(job.metadata?.namespace)) enqueueImage(image);
    }
  };
  for (const set of sets) {
    set.images.addEventHandler({ add: enqueueImage, update: (_old, obj) => enqueueImage(obj), delete: enqueueImage });
    set.jobs.addEventHandler({ add: enqueueOwner, update: (old, job) => (enqueueOwner(job), enqueueNamespaceOnFinish(old, job)), delete: enqueueOwner });
    set.pods.addEventHandler({ add: enqueueOwner, update: (_old, pod) => enqueueOwner(pod), delete: enqueueOwner });
    // A workload that opts in, changes its mind or changes its status wakes its NixImage.
    for (const informer of set.workloads) {
      informer.addEventHandler({
        add: (w) => fromKey(w).forEach((k) => queue.add(k)),
        update: (old, w) => new Set([...fromKey(old), ...fromKey(w)]).forEach((k) => queue.add(k)),
        delete: (w) => fromKey(w).forEach((k) => queue.add(k)),
      });
    }
  }

  await manager.start();
  // Every replica receives webhooks (the Service spreads them); the request goes through the API
  // server (an annotation) so the leader acts on it.
  // Loaded only when enabled: a controller pays for no code it does not run.
  const receiver = config.webhook.enabled ? await import("../webhook/webhook-receiver.ts") : undefined;
  const webhook = receiver
    ? await receiver.startWebhookReceiver({
        kc: manager.kc,
        config: config.webhook,
        port: options.webhookPort,
        images: () => receiver.followingImages(images.list()),
        metrics,
        logger: log,
        clock: manager.clock,
      })
    : undefined;
  return {
    metrics,
    get health() {
      const port = manager.healthPort;
      return port === undefined ? undefined : { port };
    },
    webhook,
    identity: manager.identity,
    writes,
    isLeader: () => manager.isLeader(),
    enqueueAll,
    idle: () => manager.idle(),
    stop: async () => {
      await webhook?.close();
      await manager.stop();
    },
  };
}

/** A read view over the same resource's informers in several namespaces. */
function mergeInformers<T extends KubernetesObject>(informers: Informer<T>[]): InformerView<T> {
  if (informers.length === 1) return informers[0]!;
  return {
    get: (name, namespace) => informers.map((i) => i.get(name, namespace)).find(Boolean),
    getByKey: (key) => informers.map((i) => i.getByKey(key)).find(Boolean),
    list: (namespace) => informers.flatMap((i) => i.list(namespace)),
    byIndex: (name, value) => informers.flatMap((i) => i.byIndex(name, value)),
  };
}
