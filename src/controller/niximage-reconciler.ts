import type { CoreV1Event, CoreV1EventList, KubernetesObject, V1Job, V1PersistentVolumeClaim, V1Pod } from "@kubernetes/client-node";
import type { KubeAccess } from "../runtime/kube-config.ts";
import { makeNixImageSchema, type NixImage, type NixImageStatus } from "../api/niximage.ts";
import { describeZodError } from "../api/describe-issues.ts";
import { parseDuration } from "../api/duration.ts";
import type { OperatorConfig } from "../config/operator-config.ts";
import type { Logger } from "../log/logger.ts";
import type { Clock } from "../runtime/clock.ts";
import type { InformerView } from "../runtime/informer.ts";
import { KubeHttpError, kubeRequestJson } from "../runtime/kube-request.ts";
import type { ReconcileContext, ReconcileResult } from "../runtime/workers.ts";
import { crashPoint } from "../runtime/crash-point.ts";
import { conditionsFor, mergeConditions, reasons, type Reason } from "./conditions.ts";
import { applyBody, patchApplied, rolloutAnnotations, workloadPath, type ContainerPatch, type Refusal, type Workload } from "../rollout/rollout-plan.ts";
import { decide, type Action, type Observed } from "./decide.ts";
import { buildBlocker, type BlockerInput } from "./build-blockers.ts";
import { cacheCopyFailedMessage, controllerOf, jobView, newestOwnPod, type JobView } from "./job-outcome.ts";
import { annotations, fieldManager, labels } from "./names.ts";
import { builderNetworkPolicy } from "./builder-network-policy.ts";
import { pushSecretConsent } from "./push-secret-consent.ts";
import type { RevisionPolls } from "./revision-polls.ts";
import { classifyError, NotLeaderError, StaleCacheError } from "./reconcile-errors.ts";
import { mergePatch } from "./status-patch.ts";
import { summarize, type RolloutOutcome } from "./summarize.ts";
import { storeVolumeView, volumeHolders } from "./store-pool.ts";
import { imageManagers } from "./rollout-contest.ts";
import { warmState } from "./warm-schedule.ts";

/**
 * gather (the only reader: informer caches and the revision poller's last answer) ->
 * decide (pure) -> apply (the only writer) -> status, written once and only when it changed.
 */

export interface ReconcilerDeps {
  kc: KubeAccess;
  config: OperatorConfig;
  clock: Clock;
  logger: Logger;
  images: InformerView<KubernetesObject>;
  jobs: InformerView<V1Job>;
  pods: InformerView<V1Pod>;
  volumes: InformerView<V1PersistentVolumeClaim>;
  /** Deployments, StatefulSets, DaemonSets and CronJobs, indexed by `niximage.io/from`. */
  workloads: InformerView<Workload>;
  polls: RevisionPolls;
  /** Counts API writes by verb and resource (metrics, and tests that assert "no writes"). */
  onWrite?: (verb: string, resource: string) => void;
  /**
   * Whether this replica may write (holds the leader lease). Checked before every API write; a
   * false answer throws NotLeaderError and nothing is written. Absent: always allowed.
   */
  canWrite?: () => boolean;
  /** A build finished (counted once, after its status was written): for metrics. */
  onBuildFinished?: (build: { kind: "Image" | "Warm"; result: "Succeeded" | "Failed" | "Unchanged"; seconds: Record<string, number> }) => void;
}

const finishedBuildEvents: Record<string, { kind: "Image" | "Warm"; result: "Succeeded" | "Failed" | "Unchanged" }> = {
  BuildSucceeded: { kind: "Image", result: "Succeeded" },
  BuildUnchanged: { kind: "Image", result: "Unchanged" },
  BuildFailed: { kind: "Image", result: "Failed" },
  WarmBuildSucceeded: { kind: "Warm", result: "Succeeded" },
  WarmBuildFailed: { kind: "Warm", result: "Failed" },
};

export const indexes = { jobsByImage: "image", podsByJob: "job", workloadsByImage: "from" } as const;

/** How long a write the API server refused waits before it is tried again (permissions may be fixed). */
const permanentRetryMs = 10 * 60_000;

const isRunning = (job: V1Job) => jobView(job, []).state === "Running";

export class NixImageReconciler {
  readonly #deps: ReconcilerDeps;
  readonly #schema: ReturnType<typeof makeNixImageSchema>;
  /** Jobs this process created that the informer may not show yet (for the global build cap). */
  readonly #justCreated = new Map<string, number>();
  /** Namespaces with a build told to wait for a slot, and when (refreshed by their retries; dropped after 30 s). */
  readonly #waitingForSlot = new Map<string, number>();
  /** Events said once per process (refusals: workload uid + message; foreign objects: their uid). */
  readonly #refusalsSent = new Set<string>();
  /** Per NixImage key: a build start the API server refused, for which generation, and when. */
  readonly #rejected = new Map<string, { generation: number; at: number; reason: Reason; message: string }>();
  /** Per NixImage key: the resourceVersion our last status write replaced (the cache is stale while it shows it). */
  readonly #replaced = new Map<string, string>();
  /** Per NixImage key: the warm slot this process saw due in time (it then waits for capacity without a deadline). */
  readonly #warmQueued = new Map<string, number>();
  /** Namespaces whose builder NetworkPolicy this process has written (once per namespace per start). */
  readonly #policyWritten = new Set<string>();

  constructor(deps: ReconcilerDeps) {
    this.#deps = deps;
    this.#schema = makeNixImageSchema(deps.config.flakeRefPolicy, deps.config.nixConfigAllowlist);
  }

  async reconcile(key: string, context: ReconcileContext): Promise<ReconcileResult> {
    const raw = this.#deps.images.getByKey(key);
    if (!raw || raw.metadata?.deletionTimestamp) {
      // Jobs are owned by the NixImage (garbage collected with it); leases end with their Jobs.
      // Workloads are left as they are: they keep running the last digest.
      this.#deps.polls.forget(key);
      this.#replaced.delete(key);
      this.#rejected.delete(key);
      this.#warmQueued.delete(key);
      if (!raw) await this.#refuseOrphans(key, context.log);
      return {};
    }
    // The cache still shows the object our last status write replaced: deciding from it would
    // undo that write. Nothing is written; the queue retries with backoff until the cache catches up.
    if (this.#replaced.get(key) === raw.metadata?.resourceVersion) throw new StaleCacheError(`the cache of ${key} does not show our last status write yet`);
    this.#replaced.delete(key);
    const now = this.#deps.clock.now();
    const parsed = this.#schema.safeParse(raw);
    if (!parsed.success) {
      const message = `the spec cannot be built under this operator's policy: ${describeZodError(parsed.error).join("; ")}`;
      const generation = raw.metadata?.generation ?? 0;
      const previous = (raw as { status?: NixImageStatus }).status ?? {};
      await this.#writeStatus(key, raw, previous, {
        ...previous,
        observedGeneration: generation,
        conditions: mergeConditions(previous.conditions, conditionsFor({ phase: "Stalled", reason: reasons.InvalidSpec, message }), generation, now),
      });
      return {};
    }
    const image = parsed.data;
    let observed = await this.#gather(image, now, context);
    let decision = this.#decide(observed);
    if (decision.needsPushSecretCheck) {
      const ns = image.metadata.namespace!;
      const push = image.spec.image.pushSecretRef;
      const signing = image.spec.image.attestations?.signingKeySecretRef;
      try {
        const pushSecret = push ? await this.#secretMetadata(ns, push.name) : undefined;
        const consent = push && pushSecret ? pushSecretConsent(push.name, pushSecret.annotations, image.metadata.name!) : undefined;
        observed = {
          ...observed,
          ...(push ? { pushSecretFound: pushSecret !== undefined } : {}),
          ...(consent && !consent.allowed ? { pushSecretRefused: consent.message } : {}),
          ...(signing ? { signingKeySecretFound: (await this.#secretMetadata(ns, signing.name)) !== undefined } : {}),
        };
        const sources = [image.spec.sshKeySecretRef?.name, image.spec.sourceCredentialsSecretRef?.name].filter((n) => n !== undefined);
        if (sources.length > 0) {
          const missing: string[] = [];
          for (const name of new Set(sources)) if ((await this.#secretMetadata(ns, name)) === undefined) missing.push(name);
          observed = { ...observed, sourceSecretsMissing: missing };
        }
      } catch (error) {
        // Cannot tell whether the Secret exists (e.g. 403: the operator may not read Secrets here):
        // say so in status, then let the queue retry.
        const shown = summarize({
          previous: image.status ?? {},
          decision,
          error: { error, what: "checking the Secrets named in the spec", reason: reasons.SecretNotReadable },
          generation: image.metadata.generation ?? 0,
          now,
        });
        await this.#writeStatus(key, raw, image.status ?? {}, shown.status);
        throw error;
      }
      decision = this.#decide(observed);
    }
    context.log.debug({ actions: decision.actions.map((a) => a.type), requeueAfterMs: decision.requeueAfterMs }, "decided");
    if (decision.summary.reason === reasons.WaitingForCapacity) this.#waitingForSlot.set(image.metadata.namespace!, now.getTime());
    const generation = image.metadata.generation ?? 0;
    const previous = image.status ?? {};

    // 1. Builds: leases, Jobs, history clean-up. An error stops here; it is shown in status.
    const failure = await this.#applyBuildActions(image, decision.actions, context.log);

    // 2. Rollouts: what they change is recorded in status BEFORE a patch is sent, so no crash
    // or lost write between the two can lose the previous image or send a rolled-back digest again.
    let written = { status: previous, resourceVersion: raw.metadata!.resourceVersion };
    const patches = decision.actions.filter((a): a is Extract<Action, { type: "rollout" }> => a.type === "rollout");
    const rollouts: RolloutOutcome[] = [];
    if (patches.length > 0) {
      const intent = summarize({ previous, decision, ...(failure ? { error: failure } : {}), generation, now });
      written = await this.#writeStatus(
        key,
        { ...raw, metadata: { ...raw.metadata, resourceVersion: written.resourceVersion } },
        written.status,
        intent.status,
      );
      for (const { patch } of patches) {
        try {
          const managers = await this.#applyContainerImage(patch);
          crashPoint("after-rollout-patch");
          rollouts.push({ patch, ...(managers.length > 0 ? { imageManagers: managers } : {}) });
        } catch (error) {
          if (error instanceof NotLeaderError) throw error;
          rollouts.push({ patch, error });
        }
      }
    }
    for (const action of decision.actions) if (action.type === "refuse") await this.#refuse(action.refusal, context.log);

    // 3. The one status function: decision + outcomes + error -> status, written once if changed.
    const result = summarize({ previous, decision, rollouts, ...(failure ? { error: failure } : {}), generation, now });
    await this.#writeStatus(key, { ...raw, metadata: { ...raw.metadata, resourceVersion: written.resourceVersion } }, written.status, result.status);
    for (const event of result.events) {
      if (event.once !== undefined) {
        if (this.#refusalsSent.has(event.once)) continue;
        this.#refusalsSent.add(event.once);
      }
      await (event.about ? this.#recordEventFor(event.about, event) : this.#recordEvent(image, event)).catch((error: unknown) => {
        if (error instanceof NotLeaderError) throw error;
        context.log.warn({ err: String(error) }, "could not record event");
      });
      const finished = finishedBuildEvents[event.reason];
      if (finished) {
        const record = finished.kind === "Image" ? result.status.lastBuild : result.status.lastWarmBuild;
        this.#deps.onBuildFinished?.({ ...finished, seconds: record?.durations ?? {} });
      }
    }

    await this.#reportCacheCopies(image, observed.jobs, context.log);

    // Transient errors go back to the work queue, which retries them with backoff; a refused
    // write waits for a change (or a slow retry: the operator's permissions may be fixed).
    if (failure) {
      if (classifyError(failure.error) === "permanent") {
        const stalled = result.status.conditions?.find((c) => c.type === "Stalled");
        if (failure.action.type === "createJob" && stalled) {
          this.#rejected.set(key, { generation, at: now.getTime(), reason: stalled.reason as Reason, message: stalled.message });
        }
        return { requeueAfterMs: permanentRetryMs };
      }
      throw failure.error;
    }
    const transient = rollouts.find((r) => r.error !== undefined && classifyError(r.error) !== "permanent");
    if (transient) throw transient.error;
    return decision.requeueAfterMs === undefined ? {} : { requeueAfterMs: decision.requeueAfterMs };
  }

  async #gather(image: NixImage, now: Date, context: ReconcileContext): Promise<Observed> {
    const { jobs, pods, volumes, config } = this.#deps;
    const namespace = image.metadata.namespace!;
    const name = image.metadata.name!;
    // Only our own objects count: a Job whose controller is this NixImage (by UID), a pod whose
    // controller is that Job (jobView checks). Labels only select; anything else is reported.
    const labelled = jobs.byIndex(indexes.jobsByImage, `${namespace}/${name}`);
    const own = labelled.filter((job) => image.metadata.uid !== undefined && controllerOf(job.metadata?.ownerReferences)?.uid === image.metadata.uid);
    const ownJobs = own.map((job) => jobView(job, pods.byIndex(indexes.podsByJob, `${namespace}/${job.metadata?.name}`)));
    for (const [i, job] of own.entries()) if (ownJobs[i]!.state === "Running") await this.#noteBlocker(job, ownJobs[i]!, now, context.log);
    const foreign = [
      ...labelled.filter((job) => !own.includes(job)).map((job) => ({ kind: "Job", name: job.metadata?.name ?? "", uid: job.metadata?.uid ?? "" })),
      ...ownJobs.flatMap((view) => (view.foreignPods ?? []).map((pod) => ({ kind: "Pod", name: pod, uid: `${view.name}/${pod}` }))),
    ];
    const podsActive = (jobName: string) =>
      pods.byIndex(indexes.podsByJob, `${namespace}/${jobName}`).some((p) => p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed");
    const storeVolumes = volumes.list(namespace).map(storeVolumeView);
    const namespaceJobs = volumeHolders(
      jobs
        .list(namespace)
        .filter((j) => j.metadata?.labels?.[labels.image])
        .map((j) => ({ name: j.metadata!.name!, running: isRunning(j) })),
      podsActive,
      storeVolumes,
    );

    const observed: Observed = {
      image,
      now,
      config,
      jobs: ownJobs,
      namespaceJobs,
      ...this.#buildCounts(now),
      storeVolumes,
      ...this.#stillRejected(`${namespace}/${name}`, image.metadata.generation ?? 0, now),
      workloads: this.#deps.workloads.byIndex(indexes.workloadsByImage, `${namespace}/${name}`),
      ...(foreign.length > 0 ? { foreign } : {}),
    };

    const interval = image.spec.triggers?.interval;
    if (interval && !image.spec.suspend) {
      const checkRequest = image.metadata.annotations?.[annotations.checkRevision];
      if (checkRequest) this.#deps.polls.requestCheck(`${namespace}/${name}`, checkRequest);
      // A private source is polled with its Secret (netrc / access-tokens; for git+ssh the key and known_hosts), read by
      // the poller at poll time only.
      const secretRef = image.spec.flake.startsWith("git+ssh:")
        ? (image.spec.sshKeySecretRef ?? image.spec.sourceCredentialsSecretRef)
        : image.spec.sourceCredentialsSecretRef;
      const secret = secretRef ? { namespace, name: secretRef.name } : undefined;
      // The last answer of the background poller (revision-polls.ts); it re-queues this key when the answer changes.
      // A NixImage that never built waits for its first answer, so that build is pinned to a known commit.
      const poll = image.status?.lastBuild
        ? this.#deps.polls.observe(`${namespace}/${name}`, image.spec.flake, parseDuration(interval), secret)
        : await this.#deps.polls.firstAnswer(`${namespace}/${name}`, image.spec.flake, parseDuration(interval), context.signal, secret);
      if (poll?.rev) observed.polledRevision = poll.rev;
      if (poll?.refName) observed.polledRefName = poll.refName;
      if (poll?.error) observed.pollError = poll.error;
      if (poll?.unpollable) observed.pollUnavailable = poll.unpollable;
      // A refused or missing credential will not pass by itself: the Ready message says so, not only an Event.
      else if (poll?.error && poll.needsAction) observed.pollUnavailable = poll.error;
    } else this.#deps.polls.forget(`${namespace}/${name}`);

    const warm = image.spec.warm;
    if (warm && !image.spec.suspend) {
      // The schedule applies from the first slot this controller announced in status.nextWarmBuild,
      // not from the NixImage's creation: a schedule added to an old NixImage (or resumed after
      // suspend) waits for its next slot instead of starting a warm build at once.
      const announced = image.status?.nextWarmBuild ? Date.parse(image.status.nextWarmBuild) : Number.NaN;
      const since = Number.isNaN(announced) ? now : new Date(announced - 1);
      const lastWarm = image.status?.lastWarmBuild?.startTime ? new Date(image.status.lastWarmBuild.startTime) : undefined;
      const key = `${namespace}/${name}`;
      const queued = this.#warmQueued.get(key);
      observed.warm = warmState(warm.schedule, warm.timeZone, lastWarm, since, now, {
        key,
        spreadMs: parseDuration(config.warm.spread),
        startingDeadlineMs: parseDuration(config.warm.startingDeadline),
        ...(queued !== undefined ? { queuedSlot: new Date(queued) } : {}),
      });
      // Seen due in time: it may wait for a build slot as long as it takes.
      if (observed.warm.due) this.#warmQueued.set(key, observed.warm.due.slot.getTime());
      else this.#warmQueued.delete(key);
    } else this.#warmQueued.delete(`${namespace}/${name}`);
    return observed;
  }

  /**
   * Running builds per namespace (with ones just created or about to be), and namespaces recently
   * told to wait: the fair share of the cap (build-slots.ts). Counted right before decide, with no
   * await in between, and a decided Job is reserved before the next await: two workers never
   * both take the last build slot.
   */
  #buildCounts(now: Date): Pick<Observed, "runningBuildsEverywhere" | "runningBuildsByNamespace" | "namespacesWaitingForBuilds"> {
    const { jobs } = this.#deps;
    for (const [jobName, at] of this.#justCreated) {
      if (now.getTime() - at > 60_000 || jobs.get(jobName.split("/")[1]!, jobName.split("/")[0])) this.#justCreated.delete(jobName);
    }
    const runningBuildsByNamespace = new Map<string, number>();
    const countRunning = (ns: string) => runningBuildsByNamespace.set(ns, (runningBuildsByNamespace.get(ns) ?? 0) + 1);
    for (const job of jobs.list()) if (job.metadata?.labels?.[labels.image] && isRunning(job)) countRunning(job.metadata.namespace ?? "");
    for (const jobKey of this.#justCreated.keys()) countRunning(jobKey.split("/")[0]!);
    for (const [ns, at] of this.#waitingForSlot) if (now.getTime() - at > 30_000) this.#waitingForSlot.delete(ns);
    return {
      runningBuildsEverywhere: [...runningBuildsByNamespace.values()].reduce((a, b) => a + b, 0),
      runningBuildsByNamespace,
      namespacesWaitingForBuilds: new Set(this.#waitingForSlot.keys()),
    };
  }

  /** Decides with the build counts of this moment and reserves the build slot of a Job it decides to create. */
  #decide(observed: Observed): ReturnType<typeof decide> {
    const decision = decide({ ...observed, ...this.#buildCounts(observed.now) });
    for (const action of decision.actions) {
      if (action.type === "createJob") this.#justCreated.set(`${action.job.metadata!.namespace}/${action.job.metadata!.name}`, observed.now.getTime());
    }
    return decision;
  }

  /** Why a running build is stuck, if it is (build-blockers.ts); Events are read only when nothing else can say. */
  async #noteBlocker(job: V1Job, view: JobView, now: Date, log: Logger): Promise<void> {
    const namespace = job.metadata!.namespace!;
    const storeVolume = view.storeVolume ? this.#deps.volumes.get(view.storeVolume, namespace) : undefined;
    const input: BlockerInput = {
      now,
      ...(view.requestedAt ? { requestedAt: view.requestedAt } : {}),
      pod: newestOwnPod(job, this.#deps.pods.byIndex(indexes.podsByJob, `${namespace}/${job.metadata?.name}`)),
      ...(storeVolume ? { storeVolume } : {}),
    };
    let check = buildBlocker(input);
    if (check.needEvents) {
      const [jobEvents, volumeEvents, podEvents] = await Promise.all([
        check.needEvents.job ? this.#eventsAbout(namespace, job.metadata?.uid, log) : undefined,
        check.needEvents.volume ? this.#eventsAbout(namespace, storeVolume?.metadata?.uid, log) : undefined,
        check.needEvents.pod ? this.#eventsAbout(namespace, input.pod?.metadata?.uid, log) : undefined,
      ]);
      check = buildBlocker({ ...input, ...(jobEvents ? { jobEvents } : {}), ...(volumeEvents ? { volumeEvents } : {}), ...(podEvents ? { podEvents } : {}) });
    }
    if (check.blocker) view.blocked = check.blocker;
    if (check.recheckInMs !== undefined) view.recheckInMs = check.recheckInMs;
  }

  /** Events about one object (by UID); none when they cannot be read (the status then says less). */
  async #eventsAbout(namespace: string, uid: string | undefined, log: Logger): Promise<CoreV1Event[]> {
    if (!uid) return [];
    try {
      const list = await kubeRequestJson<CoreV1EventList>(this.#deps.kc, "GET", `/api/v1/namespaces/${namespace}/events`, {
        query: { fieldSelector: `involvedObject.uid=${uid}`, limit: 50 },
      });
      return list.items ?? [];
    } catch (error) {
      log.info({ uid, err: String(error) }, "could not read events");
      return [];
    }
  }

  #stillRejected(key: string, generation: number, now: Date): Pick<Observed, "rejected"> {
    const rejected = this.#rejected.get(key);
    const retryInMs = rejected ? rejected.at + permanentRetryMs - now.getTime() : 0;
    if (!rejected || rejected.generation !== generation || retryInMs <= 0) {
      this.#rejected.delete(key);
      return {};
    }
    return { rejected: { reason: rejected.reason, message: rejected.message, retryInMs } };
  }

  /**
   * A Secret's metadata (annotations: the push Secret's consent), or undefined when it does not
   * exist. Metadata only: the API server sends no data, so credentials never reach the controller.
   */
  async #secretMetadata(namespace: string, name: string): Promise<{ annotations?: Record<string, string> } | undefined> {
    try {
      const secret = await kubeRequestJson<{ metadata?: { annotations?: Record<string, string> } }>(
        this.#deps.kc,
        "GET",
        `/api/v1/namespaces/${namespace}/secrets/${name}`,
        { accept: "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1" },
      );
      return secret.metadata ?? {};
    } catch (error) {
      if (error instanceof KubeHttpError && error.statusCode === 404) return undefined;
      throw error;
    }
  }

  /** Creates (or, once per process, updates) the namespace's builder NetworkPolicy (config.builder.networkPolicy). */
  async #ensureBuilderNetworkPolicy(namespace: string): Promise<void> {
    const policy = this.#deps.config.builder.networkPolicy;
    if (!policy.enabled || this.#policyWritten.has(namespace)) return;
    const desired = builderNetworkPolicy(namespace, policy);
    const base = `/apis/networking.k8s.io/v1/namespaces/${namespace}/networkpolicies`;
    try {
      await this.#write("POST", "networkpolicies", base, desired);
    } catch (error) {
      if (!(error instanceof KubeHttpError && error.statusCode === 409)) throw error;
      await this.#write("PATCH", "networkpolicies", `${base}/${desired.metadata!.name}`, {
        metadata: { labels: desired.metadata!.labels },
        spec: desired.spec,
      });
    }
    this.#policyWritten.add(namespace);
  }

  /**
   * Leases, Jobs and clean-ups, in order. Returns the error that stopped them (shown in status),
   * or nothing. A lost race for a store volume (409 on the lease) means the decision was made
   * from a stale cache: it is thrown, and the queue decides again with backoff, writing nothing.
   */
  async #applyBuildActions(image: NixImage, actions: readonly Action[], log: Logger): Promise<{ error: unknown; action: Action; lease?: boolean } | undefined> {
    const namespace = image.metadata.namespace!;
    for (const action of actions) {
      switch (action.type) {
        case "createJob": {
          const jobName = action.job.metadata!.name!;
          // Its build slot was reserved when it was decided; not created, the slot is free again.
          let created = false;
          try {
            // Fail closed: no builder pod without its NetworkPolicy.
            try {
              await this.#ensureBuilderNetworkPolicy(namespace);
            } catch (error) {
              if (error instanceof NotLeaderError) throw error;
              return { error, action };
            }
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
                log.info({ job: jobName }, "store volume taken by another build meanwhile; deciding again");
                throw new StaleCacheError(`store volume for ${jobName} was taken meanwhile`);
              }
              if (error instanceof NotLeaderError) throw error;
              return { error, action, lease: true };
            }
            crashPoint("after-lease");
            try {
              await this.#write("POST", "jobs", `/apis/batch/v1/namespaces/${namespace}/jobs`, action.job);
              this.#justCreated.set(`${namespace}/${jobName}`, this.#deps.clock.now().getTime());
              created = true;
              log.info({ job: jobName }, "builder job created");
            } catch (error) {
              // A Job of this name exists: a previous run of ours made it; it is adopted, not doubled.
              if (error instanceof KubeHttpError && error.statusCode === 409) {
                log.info({ job: jobName }, "builder job exists already; adopting it");
                created = true;
              } else if (error instanceof NotLeaderError) throw error;
              else {
                await this.#releaseLease(namespace, "create" in action.lease ? action.lease.create.metadata!.name! : action.lease.volume, jobName, log);
                return { error, action };
              }
            }
            crashPoint("after-job-post");
          } finally {
            if (!created) this.#justCreated.delete(`${namespace}/${jobName}`);
          }
          break;
        }
        case "deleteJob":
          try {
            await this.#write("DELETE", "jobs", `/apis/batch/v1/namespaces/${namespace}/jobs/${action.name}`, { propagationPolicy: "Background" });
          } catch (error) {
            if (error instanceof NotLeaderError) throw error;
            if (!(error instanceof KubeHttpError && error.statusCode === 404)) return { error, action };
          }
          break;
        case "event": // after the status write, so a stale reconcile announces nothing
        case "rollout": // after the status write that records them
        case "refuse":
          break;
      }
    }
    return undefined;
  }

  /** Gives back a volume leased for a Job that was not created (only if the lease is still that Job's). */
  async #releaseLease(namespace: string, volume: string, holder: string, log: Logger): Promise<void> {
    const pvc = this.#deps.volumes.get(volume, namespace);
    try {
      await this.#write("PATCH", "persistentvolumeclaims", `/api/v1/namespaces/${namespace}/persistentvolumeclaims/${volume}`, {
        metadata: {
          ...(pvc?.metadata?.annotations?.[annotations.leaseHolder] === holder && pvc.metadata.resourceVersion
            ? { resourceVersion: pvc.metadata.resourceVersion }
            : {}),
          annotations: { [annotations.leaseHolder]: null, [annotations.leaseTime]: null },
        },
      });
    } catch (error) {
      if (error instanceof NotLeaderError) throw error;
      // The lease then ends by itself after its grace period (its Job never appears).
      log.info({ volume, err: String(error) }, "could not release the store volume lease");
    }
  }

  /**
   * Sets one container's image by server-side apply as field manager nix-image-operator: the
   * operator owns that one field and nothing else of the workload. `force` takes the field over
   * from a manager that set it before (the workload asked for this by opting in).
   */
  async #applyContainerImage(patch: ContainerPatch): Promise<string[]> {
    const { kind, metadata } = patch.workload;
    const path = workloadPath(kind, metadata!.namespace!, metadata!.name!);
    // Decided from the cache; read the live object so a patch whose reply was lost, or one the
    // cache does not show yet, is not sent twice (and a deleted workload is not re-created by apply).
    const live = await kubeRequestJson<Workload>(this.#deps.kc, "GET", path).catch((error: unknown) => {
      if (error instanceof KubeHttpError && error.statusCode === 404) return undefined;
      throw error;
    });
    if (!live || patchApplied(live, patch)) return [];
    this.#fence(`${kind}/${metadata?.name}`);
    this.#deps.onWrite?.("PATCH", kind.toLowerCase());
    await kubeRequestJson(this.#deps.kc, "PATCH", path, {
      body: applyBody(patch),
      contentType: "application/apply-patch+yaml",
      query: { fieldManager, force: "true" },
    });
    // Who owned the image before we took it (the cache has no managedFields): names the writer when it keeps setting it back.
    return imageManagers(live, patch.container, patch.init);
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

  /**
   * One Warning Event CacheCopyFailed per build whose cache step did not copy the closure (the
   * newest build of each kind). Its name is fixed per Job: a replica or a restarted process that
   * finds it said already (409) says nothing again.
   */
  async #reportCacheCopies(image: NixImage, jobs: readonly JobView[], log: Logger): Promise<void> {
    const namespace = image.metadata.namespace!;
    for (const kind of ["Image", "Warm"] as const) {
      const newest = jobs.filter((j) => j.kind === kind).sort((a, b) => b.number - a.number)[0];
      const message = newest && cacheCopyFailedMessage(newest, namespace);
      const once = `cache-copy:${namespace}/${newest?.name}`;
      if (!message || this.#refusalsSent.has(once)) continue;
      try {
        await this.#recordEvent(image, { type: "event", eventType: "Warning", reason: "CacheCopyFailed", message }, `${newest.name}.cache-copy-failed`);
        this.#refusalsSent.add(once);
      } catch (error) {
        if (error instanceof NotLeaderError) throw error;
        if (error instanceof KubeHttpError && error.statusCode === 409) this.#refusalsSent.add(once);
        else log.warn({ job: newest.name, err: String(error) }, "could not record the CacheCopyFailed event");
      }
    }
  }

  async #recordEvent(image: NixImage, event: Extract<Action, { type: "event" }>, name?: string): Promise<void> {
    await this.#recordEventFor(
      { apiVersion: image.apiVersion, kind: image.kind, name: image.metadata.name, namespace: image.metadata.namespace, uid: image.metadata.uid },
      event,
      name,
    );
  }

  async #recordEventFor(
    involved: { apiVersion?: string; kind?: string; name?: string; namespace?: string; uid?: string },
    event: Extract<Action, { type: "event" }>,
    name?: string,
  ): Promise<void> {
    const now = this.#deps.clock.now().toISOString();
    const namespace = involved.namespace!;
    await this.#write("POST", "events", `/api/v1/namespaces/${namespace}/events`, {
      metadata: { ...(name !== undefined ? { name } : { generateName: `${involved.name}.` }), namespace },
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

  /**
   * Writes the status if it changed, conditional on the resourceVersion this reconcile saw, and
   * returns what the API server now has. A conflict (someone wrote since) throws StaleCacheError:
   * nothing was written, and the work queue decides again with backoff.
   */
  async #writeStatus(
    key: string,
    raw: KubernetesObject,
    previous: NixImageStatus,
    next: NixImageStatus,
  ): Promise<{ status: NixImageStatus; resourceVersion: string | undefined }> {
    const { namespace, name, resourceVersion } = raw.metadata!;
    const patch = mergePatch(previous, next);
    if (patch === undefined) return { status: previous, resourceVersion };
    crashPoint("before-status-write");
    try {
      const written = await this.#write<KubernetesObject>(
        "PATCH",
        "niximages/status",
        `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/${name}/status`,
        { metadata: { resourceVersion }, status: patch },
      );
      if (resourceVersion !== undefined) this.#replaced.set(key, resourceVersion);
      return { status: next, resourceVersion: written?.metadata?.resourceVersion };
    } catch (error) {
      if (error instanceof KubeHttpError && error.statusCode === 409) throw new StaleCacheError(`status of ${key} changed since it was read`);
      throw error;
    }
  }

  /** Every write asks first: a replica that does not hold the leader lease writes nothing. */
  #fence(what: string): void {
    if (this.#deps.canWrite && !this.#deps.canWrite()) throw new NotLeaderError(what);
  }

  async #write<R = unknown>(verb: "POST" | "PATCH" | "DELETE", resource: string, path: string, body: unknown): Promise<R> {
    this.#fence(`${verb} ${resource}`);
    this.#deps.onWrite?.(verb, resource);
    return kubeRequestJson<R>(this.#deps.kc, verb, path, {
      body,
      contentType: verb === "PATCH" ? "application/merge-patch+json" : "application/json",
      query: verb === "DELETE" ? undefined : { fieldManager },
    });
  }
}
