import type { KubeConfig, KubernetesObject, V1Job, V1PersistentVolumeClaim, V1Pod } from "@kubernetes/client-node";
import { makeNixImageSchema, type NixImage, type NixImageStatus } from "../api/niximage.ts";
import { describeZodError } from "../api/describe-issues.ts";
import { parseDuration } from "../api/duration.ts";
import type { OperatorConfig } from "../config/operator-config.ts";
import type { Logger } from "../log/logger.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Informer } from "../runtime/informer.ts";
import { KubeHttpError, kubeRequestJson } from "../runtime/kube-request.ts";
import type { ReconcileContext, ReconcileResult } from "../runtime/workers.ts";
import { conditionsFor, mergeConditions, reasons, rolledOutCondition } from "./conditions.ts";
import { applyBody, planRollout, rolloutAnnotations, workloadPath, type ContainerPatch, type Refusal, type Workload } from "../rollout/rollout-plan.ts";
import { decide, type Action, type Observed } from "./decide.ts";
import { jobView } from "./job-outcome.ts";
import { fieldManager, labels } from "./names.ts";
import type { RevisionPolls } from "./revision-polls.ts";
import { mergePatch } from "./status-patch.ts";
import { storeVolumeView } from "./store-pool.ts";
import { isWarmDue, nextWarmTime } from "./warm-schedule.ts";

/**
 * gather (the only reader: informer caches, plus the branch's commit when a poll is due) ->
 * decide (pure) -> apply (the only writer) -> status, written once and only when it changed.
 */

export interface ReconcilerDeps {
  kc: KubeConfig;
  config: OperatorConfig;
  clock: Clock;
  logger: Logger;
  images: Informer<KubernetesObject>;
  jobs: Informer<V1Job>;
  pods: Informer<V1Pod>;
  volumes: Informer<V1PersistentVolumeClaim>;
  /** Deployments, StatefulSets, DaemonSets and CronJobs, indexed by `niximage.io/from`. */
  workloads: Informer<Workload>;
  polls: RevisionPolls;
  /** Counts API writes by verb and resource (metrics, and tests that assert "no writes"). */
  onWrite?: (verb: string, resource: string) => void;
  /** A build finished (counted once, after its status was written): for metrics. */
  onBuildFinished?: (build: { kind: "Image" | "Warm"; result: "Succeeded" | "Failed"; seconds: Record<string, number> }) => void;
}

const finishedBuildEvents: Record<string, { kind: "Image" | "Warm"; result: "Succeeded" | "Failed" }> = {
  BuildSucceeded: { kind: "Image", result: "Succeeded" },
  BuildFailed: { kind: "Image", result: "Failed" },
  WarmBuildSucceeded: { kind: "Warm", result: "Succeeded" },
  WarmBuildFailed: { kind: "Warm", result: "Failed" },
};

export const indexes = { jobsByImage: "image", podsByJob: "job", workloadsByImage: "from" } as const;

const isRunning = (job: V1Job) => jobView(job, []).state === "Running";

export class NixImageReconciler {
  readonly #deps: ReconcilerDeps;
  readonly #schema: ReturnType<typeof makeNixImageSchema>;
  /** Jobs this process created that the informer may not show yet (for the global build cap). */
  readonly #justCreated = new Map<string, number>();
  /** Refusal events already sent (workload uid + message), so each is said once. */
  readonly #refusalsSent = new Set<string>();

  constructor(deps: ReconcilerDeps) {
    this.#deps = deps;
    this.#schema = makeNixImageSchema(deps.config.flakeRefPolicy);
  }

  async reconcile(key: string, context: ReconcileContext): Promise<ReconcileResult> {
    const raw = this.#deps.images.getByKey(key);
    if (!raw || raw.metadata?.deletionTimestamp) {
      // Jobs are owned by the NixImage (garbage collected with it); leases end with their Jobs.
      // Workloads are left as they are: they keep running the last digest.
      this.#deps.polls.forget(key);
      if (!raw) await this.#refuseOrphans(key, context.log);
      return {};
    }
    const now = this.#deps.clock.now();
    const parsed = this.#schema.safeParse(raw);
    if (!parsed.success) {
      const message = `the spec cannot be built under this operator's policy: ${describeZodError(parsed.error).join("; ")}`;
      const generation = raw.metadata?.generation ?? 0;
      const previous = (raw as { status?: NixImageStatus }).status ?? {};
      await this.#writeStatus(raw, previous, {
        ...previous,
        observedGeneration: generation,
        conditions: mergeConditions(previous.conditions, conditionsFor({ phase: "Stalled", reason: reasons.InvalidSpec, message }), generation, now),
      });
      return {};
    }
    const image = parsed.data;
    let observed = await this.#gather(image, now, context);
    let decision = decide(observed);
    if (decision.needsPushSecretCheck) {
      observed = { ...observed, pushSecretFound: await this.#secretExists(image) };
      decision = decide(observed);
    }
    context.log.debug({ actions: decision.actions.map((a) => a.type), requeueAfterMs: decision.requeueAfterMs }, "decided");
    const lostRace = await this.#apply(image, decision.actions, context.log);
    // A lost race for a store volume means the decided status (a build started) is not true.
    if (lostRace) return { requeueAfterMs: 500 };

    // Rollout to the workloads that opted in, from the status just decided.
    const status = decision.status;
    const plan = planRollout({ image: { ...image, status }, workloads: this.#deps.workloads.byIndex(indexes.workloadsByImage, key) });
    const events = decision.actions.filter((a): a is Extract<Action, { type: "event" }> => a.type === "event");
    for (const patch of plan.patches) {
      const target = plan.targets.find((t) => t.kind === patch.workload.kind && t.name === patch.workload.metadata?.name && t.container === patch.container)!;
      const what = `${patch.workload.kind}/${patch.workload.metadata?.name} container ${patch.container}`;
      try {
        await this.#applyContainerImage(patch);
        target.image = patch.image;
        target.ready = false;
        events.push(
          patch.rollback
            ? { type: "event", eventType: "Warning", reason: "RolledBack", message: `${what}: rollout of ${patch.previous} failed; restored ${patch.image}` }
            : {
                type: "event",
                eventType: "Normal",
                reason: "RolledOut",
                message: `${what} set to ${patch.image}${patch.revision ? ` (revision ${patch.revision.slice(0, 12)})` : ""}`,
              },
        );
      } catch (error) {
        target.message = `could not update ${what}: ${(error as Error).message}`;
        events.push({ type: "event", eventType: "Warning", reason: "RolloutFailed", message: target.message });
      }
    }
    for (const refusal of plan.refusals) await this.#refuse(refusal, context.log);
    if (plan.targets.length > 0) status.rollout = plan.targets;
    else delete status.rollout;
    const rolledOut = rolledOutCondition(plan.targets, status.latestImage);
    status.conditions = [
      ...(status.conditions ?? []).filter((c) => c.type !== "RolledOut"),
      ...(rolledOut ? mergeConditions(image.status?.conditions, [rolledOut], image.metadata.generation ?? 0, this.#deps.clock.now()) : []),
    ];

    // A stale cache means another reconcile already wrote what we saw: write nothing,
    // announce nothing, and decide again from fresh caches.
    if (!(await this.#writeStatus(raw, image.status ?? {}, status))) return { requeueAfterMs: 500 };
    for (const event of events) {
      await this.#recordEvent(image, event).catch((error: unknown) => context.log.warn({ err: String(error) }, "could not record event"));
      const finished = finishedBuildEvents[event.reason];
      if (finished) {
        const record = finished.kind === "Image" ? status.lastBuild : status.lastWarmBuild;
        this.#deps.onBuildFinished?.({ ...finished, seconds: record?.durations ?? {} });
      }
    }
    return decision.requeueAfterMs === undefined ? {} : { requeueAfterMs: decision.requeueAfterMs };
  }

  async #gather(image: NixImage, now: Date, context: ReconcileContext): Promise<Observed> {
    const { jobs, pods, volumes, config } = this.#deps;
    const namespace = image.metadata.namespace!;
    const name = image.metadata.name!;
    const ownJobs = jobs
      .byIndex(indexes.jobsByImage, `${namespace}/${name}`)
      .map((job) => jobView(job, pods.byIndex(indexes.podsByJob, `${namespace}/${job.metadata?.name}`)));
    const namespaceJobs = new Map(
      jobs
        .list(namespace)
        .filter((j) => j.metadata?.labels?.[labels.image])
        .map((j) => [j.metadata!.name!, isRunning(j)]),
    );

    for (const [jobName, at] of this.#justCreated) {
      if (now.getTime() - at > 60_000 || jobs.get(jobName.split("/")[1]!, jobName.split("/")[0])) this.#justCreated.delete(jobName);
    }
    const runningEverywhere = jobs.list().filter((j) => j.metadata?.labels?.[labels.image] && isRunning(j)).length + this.#justCreated.size;

    const observed: Observed = {
      image,
      now,
      config,
      jobs: ownJobs,
      namespaceJobs,
      runningBuildsEverywhere: runningEverywhere,
      storeVolumes: volumes.list(namespace).map(storeVolumeView),
      warmDue: false,
    };

    const interval = image.spec.triggers?.interval;
    if (interval && !image.spec.suspend) {
      const poll = await this.#deps.polls.poll(`${namespace}/${name}`, image.spec.flake, parseDuration(interval), now, context.signal);
      if (poll.rev) observed.polledRevision = poll.rev;
      if (poll.refName) observed.polledRefName = poll.refName;
      if (poll.error) observed.pollError = poll.error;
      observed.nextPollInMs = poll.nextInMs;
    }

    const warm = image.spec.warm;
    if (warm && !image.spec.suspend) {
      // The schedule applies from the first slot this controller announced in status.nextWarmBuild,
      // not from the NixImage's creation: a schedule added to an old NixImage (or resumed after
      // suspend) waits for its next slot instead of starting a warm build at once.
      const announced = image.status?.nextWarmBuild ? Date.parse(image.status.nextWarmBuild) : Number.NaN;
      const since = Number.isNaN(announced) ? now : new Date(announced - 1);
      const lastWarm = image.status?.lastWarmBuild?.startTime ? new Date(image.status.lastWarmBuild.startTime) : undefined;
      observed.warmDue = isWarmDue(warm.schedule, warm.timeZone, lastWarm, since, now);
      observed.nextWarm = nextWarmTime(warm.schedule, warm.timeZone, now);
    }
    return observed;
  }

  async #secretExists(image: NixImage): Promise<boolean> {
    const name = image.spec.image.pushSecretRef!.name;
    try {
      // Only the name is read: the body (the credentials) is dropped unseen.
      await kubeRequestJson<unknown>(this.#deps.kc, "GET", `/api/v1/namespaces/${image.metadata.namespace}/secrets/${name}`);
      return true;
    } catch (error) {
      if (error instanceof KubeHttpError && error.statusCode === 404) return false;
      throw error;
    }
  }

  /** Carries out the actions; true when a lost race means "look again soon". */
  async #apply(image: NixImage, actions: readonly Action[], log: Logger): Promise<boolean> {
    const namespace = image.metadata.namespace!;
    let retrySoon = false;
    for (const action of actions) {
      switch (action.type) {
        case "createJob": {
          const jobName = action.job.metadata!.name!;
          try {
            if ("create" in action.lease) {
              await this.#write("POST", "persistentvolumeclaims", `/api/v1/namespaces/${namespace}/persistentvolumeclaims`, action.lease.create);
            } else {
              // The resourceVersion makes this a compare-and-swap: two builds never lease one volume.
              await this.#write("PATCH", "persistentvolumeclaims", `/api/v1/namespaces/${namespace}/persistentvolumeclaims/${action.lease.volume}`, {
                metadata: { resourceVersion: action.lease.resourceVersion, annotations: action.lease.annotations },
              });
            }
          } catch (error) {
            if (error instanceof KubeHttpError && error.statusCode === 409) {
              log.info({ job: jobName }, "store volume taken by another build meanwhile; trying again");
              retrySoon = true;
              return retrySoon;
            }
            throw error;
          }
          try {
            await this.#write("POST", "jobs", `/apis/batch/v1/namespaces/${namespace}/jobs`, action.job);
            this.#justCreated.set(`${namespace}/${jobName}`, this.#deps.clock.now().getTime());
            log.info({ job: jobName }, "builder job created");
          } catch (error) {
            // A Job of this name exists: a previous run of ours made it; it is adopted, not doubled.
            if (!(error instanceof KubeHttpError && error.statusCode === 409)) throw error;
            log.info({ job: jobName }, "builder job exists already; adopting it");
          }
          break;
        }
        case "deleteJob":
          try {
            await this.#write("DELETE", "jobs", `/apis/batch/v1/namespaces/${namespace}/jobs/${action.name}`, { propagationPolicy: "Background" });
          } catch (error) {
            if (!(error instanceof KubeHttpError && error.statusCode === 404)) throw error;
          }
          break;
        case "event":
          break; // after the status write, so a stale reconcile announces nothing
      }
    }
    return retrySoon;
  }

  /**
   * Sets one container's image by server-side apply as field manager nix-image-operator: the
   * operator owns that one field and nothing else of the workload. `force` takes the field over
   * from a manager that set it before (the workload asked for this by opting in).
   */
  async #applyContainerImage(patch: ContainerPatch): Promise<void> {
    const { kind, metadata } = patch.workload;
    this.#deps.onWrite?.("PATCH", kind.toLowerCase());
    await kubeRequestJson(this.#deps.kc, "PATCH", workloadPath(kind, metadata!.namespace!, metadata!.name!), {
      body: applyBody(patch),
      contentType: "application/apply-patch+yaml",
      query: { fieldManager, force: "true" },
    });
  }

  /** Tells a workload (once per problem) why it is not updated. */
  async #refuse(refusal: Refusal, log: Logger): Promise<void> {
    const { workload, message } = refusal;
    const once = `${workload.metadata?.uid}:${message}`;
    if (this.#refusalsSent.has(once)) return;
    this.#refusalsSent.add(once);
    log.warn({ workload: `${workload.kind}/${workload.metadata?.name}`, reason: message }, "rollout refused");
    const ref = {
      apiVersion: workload.apiVersion ?? (workload.kind === "CronJob" ? "batch/v1" : "apps/v1"),
      kind: workload.kind,
      name: workload.metadata?.name,
      namespace: workload.metadata?.namespace,
      uid: workload.metadata?.uid,
    };
    await this.#recordEventFor(ref, { type: "event", eventType: "Warning", reason: "RolloutRefused", message }).catch(() => undefined);
  }

  /** Workloads that name a NixImage that does not exist (or one in another namespace). */
  async #refuseOrphans(key: string, log: Logger): Promise<void> {
    for (const workload of this.#deps.workloads.byIndex(indexes.workloadsByImage, key)) {
      const named = workload.metadata?.annotations?.[rolloutAnnotations.from] ?? "";
      const message = named.includes("/")
        ? `${rolloutAnnotations.from}: "${named}" names a NixImage in another namespace; only a NixImage in this namespace (${workload.metadata?.namespace}) can update this workload`
        : `${rolloutAnnotations.from}: NixImage "${named}" does not exist in namespace ${workload.metadata?.namespace}`;
      await this.#refuse({ workload, message }, log);
    }
  }

  async #recordEvent(image: NixImage, event: Extract<Action, { type: "event" }>): Promise<void> {
    await this.#recordEventFor(
      { apiVersion: image.apiVersion, kind: image.kind, name: image.metadata.name, namespace: image.metadata.namespace, uid: image.metadata.uid },
      event,
    );
  }

  async #recordEventFor(
    involved: { apiVersion?: string; kind?: string; name?: string; namespace?: string; uid?: string },
    event: Extract<Action, { type: "event" }>,
  ): Promise<void> {
    const now = this.#deps.clock.now().toISOString();
    const namespace = involved.namespace!;
    await this.#write("POST", "events", `/api/v1/namespaces/${namespace}/events`, {
      metadata: { generateName: `${involved.name}.`, namespace },
      involvedObject: involved,
      type: event.eventType,
      reason: event.reason,
      message: event.message.slice(0, 1024),
      source: { component: fieldManager },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
  }

  /** False when the cached object was stale (someone wrote since): nothing was written. */
  async #writeStatus(raw: KubernetesObject, previous: NixImageStatus, next: NixImageStatus): Promise<boolean> {
    const patch = mergePatch(previous, next);
    if (patch === undefined) return true;
    const { namespace, name, resourceVersion } = raw.metadata!;
    try {
      // The resourceVersion makes the patch conditional on what this reconcile saw.
      await this.#write("PATCH", "niximages/status", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/${name}/status`, {
        metadata: { resourceVersion },
        status: patch,
      });
      return true;
    } catch (error) {
      if (error instanceof KubeHttpError && error.statusCode === 409) return false;
      throw error;
    }
  }

  async #write(verb: "POST" | "PATCH" | "DELETE", resource: string, path: string, body: unknown): Promise<void> {
    this.#deps.onWrite?.(verb, resource);
    await kubeRequestJson(this.#deps.kc, verb, path, {
      body,
      contentType: verb === "PATCH" ? "application/merge-patch+json" : "application/json",
      query: verb === "DELETE" ? undefined : { fieldManager },
    });
  }
}
