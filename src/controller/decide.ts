import { buildSlotFor } from "./build-slots.ts";
import type { V1Job, V1PersistentVolumeClaim } from "@kubernetes/client-node";
import type { BuildRecord, NixImage, NixImageStatus } from "../api/niximage.ts";
import type { OperatorConfig } from "../config/operator-config.ts";
import { withRevision, formatFlakeRef, parseFlakeRef } from "../flake/flake-ref.ts";
import { builderJob } from "./builder-job.ts";
import { builderHash, specHash } from "./build-inputs.ts";
import { buildReasons } from "./build-reasons.ts";
import { reasons, type Phase, type Reason, type Summary } from "./conditions.ts";
import type { JobView } from "./job-outcome.ts";
import { parseDuration } from "../api/duration.ts";
import { annotations } from "./names.ts";
import { chooseStoreVolume, leaseAnnotations, storeVolumeClaim, type StoreVolumeView } from "./store-pool.ts";
import type { WarmState } from "./warm-schedule.ts";
import { boundReapplies } from "./rollout-contest.ts";
import { planRollout, type ContainerPatch, type Refusal, type Workload } from "../rollout/rollout-plan.ts";

/**
 * The NixImage reconciler's brain: observed state and the time in, actions, the new status and
 * when to look again out. No I/O, no clock of its own: every branch is a table-driven test.
 */

export interface Observed {
  image: NixImage;
  now: Date;
  config: OperatorConfig;
  /** This NixImage's builder Jobs. */
  jobs: readonly JobView[];
  /** Every builder Job in the namespace (any NixImage), name -> still holds its store volume (runs, or a pod of it has not finished). */
  namespaceJobs: ReadonlyMap<string, boolean>;
  /** Builder Jobs running in all namespaces (plus ones this process just created). */
  runningBuildsEverywhere: number;
  /** The same per namespace, and namespaces with a build waiting for a slot: the cap's fair share (build-slots.ts). */
  runningBuildsByNamespace?: ReadonlyMap<string, number>;
  namespacesWaitingForBuilds?: ReadonlySet<string>;
  storeVolumes: readonly StoreVolumeView[];
  /** The branch's current commit, when polling is on and it was resolved. */
  polledRevision?: string;
  /** The full ref name it was found under (refs/heads/main). */
  polledRefName?: string;
  /** Why polling failed, when it did. */
  pollError?: string;
  /** Why spec.triggers.interval cannot poll this flake ref at all: said in the Ready condition. */
  pollUnavailable?: string;
  /** Whether the push Secret exists; undefined when not checked (no build pending). */
  pushSecretFound?: boolean;
  /** Whether the signing key Secret exists; undefined when not checked. */
  signingKeySecretFound?: boolean;
  /** The source credential Secrets (sshKeySecretRef, sourceCredentialsSecretRef) that do not exist; undefined when not checked. */
  sourceSecretsMissing?: string[];
  /** Why this NixImage may not push with the Secret (it has not opted in to it), when it may not. */
  pushSecretRefused?: string;
  /** Where the NixImage stands on its warm schedule (warm-schedule.ts), when spec.warm applies. */
  warm?: WarmState;
  /** When the next revision poll is due, if polling is on. */
  nextPollInMs?: number;
  /** Workloads in the namespace that name this NixImage in `niximage.io/from`. */
  workloads?: readonly Workload[];
  /** Jobs and pods labelled for this NixImage that are not its own (by controller UID): ignored, reported. */
  foreign?: readonly { kind: string; name: string; uid: string }[];
  /** The API server refused this generation's last build start (JobRejected...): no new try until then. */
  rejected?: { reason: Reason; message: string; retryInMs: number };
}

export type Action =
  | {
      type: "createJob";
      job: V1Job;
      lease: { volume: string; resourceVersion: string; annotations: Record<string, string> } | { create: V1PersistentVolumeClaim };
    }
  | { type: "deleteJob"; name: string }
  | {
      type: "event";
      eventType: "Normal" | "Warning";
      reason: string;
      message: string;
      /** Said once per process under this key. */
      once?: string;
      /** The object it is about when not the NixImage (a workload). */
      about?: { apiVersion: string; kind: string; name?: string; namespace?: string; uid?: string };
    }
  /** Sets one container's image; the status that records it is written before it is sent. */
  | { type: "rollout"; patch: ContainerPatch }
  /** Tells a workload (once per problem) why it is not updated. */
  | { type: "refuse"; refusal: Refusal };

export type EventAction = Extract<Action, { type: "event" }>;

export interface Decision {
  actions: Action[];
  /** The status decided, without conditions: the status function adds them from `summary`. */
  status: NixImageStatus;
  summary: Summary;
  /** Look again after this long even without an event (polling, waiting for a volume). */
  requeueAfterMs?: number;
  /** Whether a pending build needs the push Secret checked before deciding again. */
  needsPushSecretCheck?: boolean;
}

const waitRetryMs = 10_000;

const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");

function recordOf(view: JobView): BuildRecord {
  // A warm build's start is the controller's time (requestedAt): the warm schedule counts from
  // it, and the Job's startTime (the API server's clock, set a moment later, or not yet) can lie
  // before the slot the build was for, which would start a second warm build in the same slot.
  const startTime = view.kind === "Warm" ? (view.requestedAt ?? view.startTime) : view.startTime;
  const record: BuildRecord = {
    job: view.name,
    number: view.number,
    kind: view.kind,
    reasons: view.reasons,
    result: view.state,
    ...(startTime ? { startTime } : {}),
    ...((view.completionTime ?? view.failedAt) ? { completionTime: view.completionTime ?? view.failedAt } : {}),
    ...(view.attempt !== undefined && view.attempt > 1 ? { attempt: view.attempt } : {}),
    ...(view.specHash ? { specHash: view.specHash } : {}),
    ...(view.builderHash ? { builderHash: view.builderHash } : {}),
    ...(view.rebuildToken !== undefined ? { rebuildToken: view.rebuildToken } : {}),
    ...(view.flake ? { flake: view.flake } : {}),
  };
  // The step results' schemas carry the status bounds: what parsed is copied as it is.
  if (view.result) {
    const { digest, revision, layers, bytesPushed, seconds, attestations, outPath, unchanged } = view.result;
    if (unchanged) record.result = "Unchanged";
    if (outPath) record.outPath = outPath;
    Object.assign(record, {
      digest,
      revision,
      layers: { pushed: layers.pushed, skipped: layers.skipped, mounted: layers.mounted },
      bytesPushed,
      durations: seconds,
      ...(attestations && Object.keys(attestations).length > 0 ? { attestations } : {}),
    });
  }
  if (view.warmResult) {
    if (view.warmResult.revision) record.revision = view.warmResult.revision;
    if (view.warmResult.seconds) record.durations = view.warmResult.seconds;
  }
  if (view.failure) record.failure = view.failure;
  return record;
}

/**
 * The flake ref a build uses: pinned to the polled commit when polling found one. A git ref
 * without ?ref= also gets the full ref name the commit was found under: Nix would otherwise
 * fetch `master`, which need not hold that commit.
 */
function flakeToBuild(image: NixImage, polledRevision: string | undefined, polledRefName: string | undefined): string {
  if (!polledRevision) return image.spec.flake;
  try {
    const ref = parseFlakeRef(image.spec.flake);
    const named = ref.type === "git" && !ref.ref && polledRefName && polledRefName !== "HEAD" ? { ...ref, ref: polledRefName } : ref;
    return formatFlakeRef(withRevision(named, polledRevision));
  } catch {
    return image.spec.flake;
  }
}

/**
 * Only a new commit can leave the image as it is: when nothing but the revision changed since
 * the image in use was made (same spec, same builder images), the push step is told its output
 * path and skips an identical one (BuildUnchanged). A spec change, a new builder or a rebuild
 * request always pushes.
 */
function unchangedIf(
  status: NixImageStatus,
  why: readonly string[],
  current: { specHash: string; builderHash: string },
): { unchangedIf?: { outPath: string; digest: string } } {
  const made = status.latestOutput;
  if (!made || why.length !== 1 || why[0] !== "RevisionChanged") return {};
  if (made.specHash !== current.specHash || made.builderHash !== current.builderHash) return {};
  if (!status.latestImage?.endsWith(`@${made.digest}`)) return {};
  return { unchangedIf: { outPath: made.outPath, digest: made.digest } };
}

/** Counts of a warm build's closure diff, and where the rest is when status holds only part of it. */
function closureDiffSummary(diff: NonNullable<NonNullable<NixImageStatus["lastWarmBuild"]>["closureDiff"]>, logs: string): string {
  const totals = diff.totals ?? { added: diff.added.length, removed: diff.removed.length, changed: diff.changed.length };
  const counts = `${totals.added} packages would be added, ${totals.removed} removed, ${totals.changed} changed`;
  const cut = diff.added.length < totals.added || diff.removed.length < totals.removed || diff.changed.length < totals.changed;
  return cut
    ? `${counts} (status.lastWarmBuild.closureDiff lists ${diff.added.length}/${diff.removed.length}/${diff.changed.length} of them; the full diff: ${logs})`
    : counts;
}

function decideBuild(observed: Observed): Decision {
  const { image, now, config } = observed;
  const generation = image.metadata.generation ?? 0;
  const previous = image.status ?? {};
  const actions: Action[] = [];
  const status: NixImageStatus = { ...previous };
  delete status.conditions;
  let requeueAfterMs: number | undefined;
  const requeue = (ms: number) => (requeueAfterMs = requeueAfterMs === undefined ? ms : Math.min(requeueAfterMs, ms));
  const finish = (phase: Phase, reason: Reason, message: string): Decision => {
    status.observedGeneration = generation;
    return { actions, status, summary: { phase, reason, message }, ...(requeueAfterMs !== undefined ? { requeueAfterMs } : {}) };
  };
  /** The conditions the image's own state calls for, when no image build is running or due. */
  const settled = (): Decision => {
    if (status.lastBuild?.result === "Failed") {
      const f = status.lastBuild.failure;
      const kept = status.latestImage ? ` ${status.latestImage} stays in use.` : "";
      const failed = `build ${status.lastBuild.job} failed in step ${f?.step ?? "?"}: ${(f?.message ?? "").slice(-600)}.`;
      const retry = retryOf(status.lastBuild, config, now);
      if (retry && !retry.exhausted) {
        // Not Ready: the image in use is not the one these inputs make.
        requeue(Math.max(0, retry.dueInMs));
        return finish(
          "Retrying",
          reasons.RetryingBuild,
          `${failed} This may pass: attempt ${retry.attempt} of ${config.build.retry.limit + 1} starts at ${rfc3339(new Date(now.getTime() + Math.max(0, retry.dueInMs)))}.${kept}`,
        );
      }
      const n = status.lastBuild.attempt ?? 1;
      const tries = retry?.exhausted ? ` It failed ${n === 1 ? "once" : `${n} times`} for reasons that may pass; no more automatic retries.` : "";
      const todo =
        f?.reason === reasons.StoreIncompatible
          ? `Delete that PVC (the operator makes a new one and seeds it from the builder image) or set the builder image back to the Nix that wrote it, then annotate ${annotations.rebuild}=<new value> to retry.`
          : `Fix the flake and push a commit, change the spec, or annotate ${annotations.rebuild}=<new value> to retry.`;
      return finish("Stalled", f?.reason === reasons.StoreIncompatible ? reasons.StoreIncompatible : reasons.BuildFailed, `${failed}${tries}${kept} ${todo}`);
    }
    const notPolled = observed.pollUnavailable ? `; spec.triggers.interval does not poll this source: ${observed.pollUnavailable}` : "";
    if (status.latestImage) return finish("Ready", reasons.Succeeded, `${status.latestImage} is the latest build${notPolled}`);
    return finish("InProgress", reasons.NotBuilt, `no build yet${notPolled}`);
  };

  for (const f of observed.foreign ?? []) {
    actions.push({
      type: "event",
      eventType: "Warning",
      reason: reasons.ForeignObjectIgnored,
      message: `${f.kind} ${f.name} carries this NixImage's labels but is not the operator's own (its controller is not ${f.kind === "Job" ? "this NixImage" : "its Job"}): ignored. Someone else created it; check who can create Jobs and pods in this namespace.`,
      once: `foreign:${f.uid}`,
    });
  }

  // 1. What the Jobs say: the newest of each kind is the build of record. Image and warm builds
  // are numbered separately: web-build-7 is the seventh image build, however many nights warmed
  // the store in between, and web-warm-3 the third warm build.
  const imageJobs = observed.jobs.filter((j) => j.kind === "Image");
  const warmJobs = observed.jobs.filter((j) => j.kind === "Warm");
  const newest = (jobs: readonly JobView[]) => [...jobs].sort((a, b) => b.number - a.number)[0];
  const imageJob = newest(imageJobs);
  const warmJob = newest(warmJobs);
  const highest = Math.max(previous.buildCount ?? 0, ...imageJobs.map((j) => j.number));
  const highestWarm = Math.max(previous.lastWarmBuild?.number ?? 0, ...warmJobs.map((j) => j.number));
  status.buildCount = highest;
  if (imageJob && (!previous.lastBuild || imageJob.number >= previous.lastBuild.number)) {
    const record = recordOf(imageJob);
    status.lastBuild = record;
    const finishedNow = previous.lastBuild?.job !== record.job || previous.lastBuild.result !== record.result;
    if (record.result === "Unchanged") {
      // Exact no-op: the image in use stays, only the revision it stands for moves on.
      if (record.revision) status.latestRevision = record.revision;
      if (finishedNow)
        actions.push({
          type: "event",
          eventType: "Normal",
          reason: "BuildUnchanged",
          message: `revision ${record.revision?.rev?.slice(0, 12) ?? "?"} builds the same Nix output as ${status.latestImage ?? "the image in use"}; nothing pushed or rolled out`,
        });
    } else if (record.result === "Succeeded" && record.digest) {
      status.latestImage = `${image.spec.image.repository}@${record.digest}`;
      if (record.outPath) status.latestOutput = { outPath: record.outPath, digest: record.digest, specHash: record.specHash, builderHash: record.builderHash };
      else delete status.latestOutput;
      if (record.revision) status.latestRevision = record.revision;
      if (finishedNow)
        actions.push({
          type: "event",
          eventType: "Normal",
          reason: "BuildSucceeded",
          message: `pushed ${status.latestImage} (${record.layers?.pushed ?? 0} layers pushed, ${record.layers?.skipped ?? 0} already there)`,
        });
    } else if (record.result === "Failed" && finishedNow) {
      const f = record.failure;
      actions.push({
        type: "event",
        eventType: "Warning",
        reason: "BuildFailed",
        message: `build ${record.job} failed in step ${f?.step ?? "?"}${f?.exitCode !== undefined ? ` (exit ${f.exitCode})` : ""}: ${(f?.message ?? "").slice(-900)}`,
      });
    }
  }
  if (warmJob && (!previous.lastWarmBuild || warmJob.number >= previous.lastWarmBuild.number)) {
    const record = recordOf(warmJob);
    const diff = warmJob.warmResult?.closureDiff;
    status.lastWarmBuild = { ...record, ...(diff ? { closureDiff: diff } : {}) };
    const finishedNow = previous.lastWarmBuild?.job !== record.job || previous.lastWarmBuild.result !== record.result;
    if (record.result === "Succeeded" && finishedNow) {
      const summary = diff
        ? `; with updated inputs ${closureDiffSummary(diff, `kubectl logs -n ${image.metadata.namespace} job/${record.job} -c report`)}`
        : "";
      actions.push({ type: "event", eventType: "Normal", reason: "WarmBuildSucceeded", message: `warm build ${record.job} filled the store${summary}` });
    } else if (record.result === "Failed" && finishedNow) {
      const f = record.failure;
      actions.push({
        type: "event",
        eventType: "Warning",
        reason: "WarmBuildFailed",
        message: `warm build ${record.job} failed in step ${f?.step ?? "?"}${f?.exitCode !== undefined ? ` (exit ${f.exitCode})` : ""}: ${(f?.message ?? "").slice(-900)}`,
      });
    }
  }
  if (observed.warm) {
    // The slot announced stays the one not yet served (a due build waiting for a slot keeps it),
    // so the schedule counts from it again on the next reconcile, in this process or the next.
    const { due, missed, upcoming } = observed.warm;
    status.nextWarmBuild = rfc3339((due ?? upcoming).slot);
    requeue(Math.max(0, upcoming.startAt.getTime() - now.getTime()));
    if (missed) {
      actions.push({
        type: "event",
        eventType: "Warning",
        reason: "WarmBuildSkipped",
        message: `warm build for the slot ${rfc3339(missed.slot)} skipped: its start (${rfc3339(missed.startAt)}) was not seen before the starting deadline ${rfc3339(missed.deadline)} (config.warm.startingDeadline ${config.warm.startingDeadline}): the controller was not running or not leading then; the next slot is ${rfc3339(upcoming.slot)}`,
        once: `${image.metadata.uid}:WarmBuildSkipped:${missed.slot.getTime()}`,
      });
    }
  } else delete status.nextWarmBuild;
  if (observed.nextPollInMs !== undefined && !image.spec.suspend) requeue(observed.nextPollInMs);

  // 2. Old Jobs beyond the history limits go (per kind); the builds of record stay.
  const keep = { Succeeded: image.spec.historyLimit.successful, Failed: image.spec.historyLimit.failed };
  const ofRecord = new Set([status.lastBuild?.job, status.lastWarmBuild?.job]);
  for (const jobs of [imageJobs, warmJobs]) {
    const finished = jobs.filter((j) => j.state !== "Running").sort((a, b) => b.number - a.number);
    const seen = { Succeeded: 0, Failed: 0 };
    for (const job of finished) {
      const state = job.state as "Succeeded" | "Failed";
      if (++seen[state] > keep[state] && !ofRecord.has(job.name)) actions.push({ type: "deleteJob", name: job.name });
    }
  }

  // A running image build is the image being reconciled. A running warm build is not: it only
  // fills the store, so the conditions stay what the image's state says (a Ready image stays
  // Ready overnight), but no other build of this image starts until it is done.
  const running = observed.jobs.find((j) => j.state === "Running");
  // A running build that cannot progress (pull error, unschedulable, volume Pending, pod refused,
  // missing Secret) stays Running: the Job's deadline ends it; status and one Event say why.
  for (const job of observed.jobs) {
    if (job.state !== "Running") continue;
    if (job.recheckInMs !== undefined) requeue(job.recheckInMs);
    if (job.kind === "Warm" && job.blocked) {
      actions.push({
        type: "event",
        eventType: "Warning",
        reason: job.blocked.reason,
        message: `warm build ${job.name}: ${job.blocked.message}`,
        once: `${job.name}:${job.blocked.reason}`,
      });
    }
  }
  if (running && running.kind === "Image" && running.blocked) {
    const { reason, message } = running.blocked;
    if (previous.conditions?.find((c) => c.type === "Reconciling")?.reason !== reason) {
      actions.push({ type: "event", eventType: "Warning", reason, message: `build ${running.name}: ${message}` });
    }
    return finish("InProgress", reason, `build ${running.name} is running but cannot progress: ${message}`);
  }
  if (running && running.kind === "Image") {
    return finish("InProgress", reasons.Building, `build ${running.name} is running (${running.reasons.join(", ") || "no reason recorded"})`);
  }
  if (image.spec.suspend) return finish("Suspended", reasons.Suspended, "spec.suspend is true: no polling and no new builds");

  // 3. Does anything call for a build?
  const current = { specHash: specHash(image), builderHash: builderHash(config) };
  const rebuildToken = image.metadata.annotations?.[annotations.rebuild];
  const interval = image.spec.triggers?.interval;
  const buildFor = buildReasons({
    ...current,
    rebuildToken,
    polledRevision: observed.polledRevision,
    last: status.lastBuild,
  });
  // A transient failure of the build of record: the same inputs again, with backoff, up to the limit.
  const retry = buildFor.length === 0 ? retryOf(status.lastBuild, config, now) : undefined;
  const retryNow = retry !== undefined && !retry.exhausted && retry.dueInMs <= 0;
  const imageWanted: string[] = buildFor.length > 0 ? buildFor : retryNow ? ["Retry"] : [];
  const attempt = retryNow ? retry.attempt : 1;
  const warmWanted = observed.warm?.due !== undefined && image.spec.warm !== undefined;
  if (interval && observed.pollError && imageWanted.length === 0) {
    // Keep the last image; say why we cannot see new revisions.
    actions.push({ type: "event", eventType: "Warning", reason: reasons.RevisionUnavailable, message: observed.pollError });
  }

  if (running && imageWanted.length > 0) {
    return finish("InProgress", reasons.Building, `waiting for warm build ${running.name} to finish, then building (${imageWanted.join(", ")})`);
  }
  if (!running && (imageWanted.length > 0 || warmWanted) && observed.rejected) {
    // The same write would be refused again: wait, and keep saying why.
    requeue(observed.rejected.retryInMs);
    return finish("Stalled", observed.rejected.reason, observed.rejected.message);
  }
  if (!running && (imageWanted.length > 0 || warmWanted)) {
    const kind = imageWanted.length > 0 ? "Image" : "Warm";
    const why = kind === "Image" ? imageWanted : ["WarmSchedule"];
    const signingKey = image.spec.image.attestations?.signingKeySecretRef;
    const sourceSecrets = image.spec.sshKeySecretRef !== undefined || image.spec.sourceCredentialsSecretRef !== undefined;
    if (
      (kind === "Image" &&
        ((image.spec.image.pushSecretRef && observed.pushSecretFound === undefined) || (signingKey && observed.signingKeySecretFound === undefined))) ||
      (sourceSecrets && observed.sourceSecretsMissing === undefined)
    ) {
      return { ...finish("InProgress", reasons.Building, "checking the Secrets the build needs"), needsPushSecretCheck: true };
    }
    // Only the fetch step mounts it; without it the pod would wait for the mount until the deadline.
    if (observed.sourceSecretsMissing !== undefined && observed.sourceSecretsMissing.length > 0) {
      requeue(30_000);
      return finish(
        "Stalled",
        reasons.SourceSecretNotFound,
        `Secret ${observed.sourceSecretsMissing.join(", ")} (spec.sshKeySecretRef / spec.sourceCredentialsSecretRef) does not exist in namespace ${image.metadata.namespace}: create it with the keys the source needs (netrc, access-tokens, or ssh-privatekey and known_hosts), e.g. \`kubectl create secret generic NAME --from-file=netrc=./netrc\``,
      );
    }
    // A missing Secret volume would leave the builder pod waiting for its mount until the deadline.
    if (kind === "Image" && signingKey && observed.signingKeySecretFound === false) {
      requeue(30_000);
      return finish(
        "Stalled",
        reasons.SigningKeySecretNotFound,
        `Secret ${signingKey.name} (spec.image.attestations.signingKeySecretRef) does not exist in namespace ${image.metadata.namespace}: create it with \`cosign generate-key-pair k8s://${image.metadata.namespace}/${signingKey.name}\` (or a Secret with the key cosign.key)`,
      );
    }
    if (kind === "Image" && observed.pushSecretFound === false) {
      requeue(30_000);
      return finish(
        "Stalled",
        reasons.PushSecretNotFound,
        `Secret ${image.spec.image.pushSecretRef!.name} (spec.image.pushSecretRef) does not exist in namespace ${image.metadata.namespace}: create it with \`kubectl create secret docker-registry\``,
      );
    }
    if (kind === "Image" && observed.pushSecretRefused) {
      requeue(30_000);
      return finish("Stalled", reasons.PushSecretNotAllowed, observed.pushSecretRefused);
    }
    const slot = buildSlotFor(image.metadata.namespace ?? "", {
      cap: config.concurrency.builds,
      running: observed.runningBuildsEverywhere,
      runningByNamespace: observed.runningBuildsByNamespace ?? new Map(),
      waitingNamespaces: observed.namespacesWaitingForBuilds ?? new Set(),
    });
    if (!slot.ok) {
      requeue(waitRetryMs);
      // A warm build waits quietly: it is no change to the image.
      if (kind === "Warm") return settled();
      return finish("InProgress", reasons.WaitingForCapacity, slot.message);
    }
    const number = (kind === "Image" ? highest : highestWarm) + 1;
    // The volume this image's most recent build used has the warmest store for it.
    const startedAt = (j: JobView) => Date.parse(j.requestedAt ?? j.startTime ?? "") || 0;
    const preferred = observed.jobs.filter((j) => j.storeVolume).sort((a, b) => startedAt(b) - startedAt(a) || b.number - a.number)[0]?.storeVolume;
    const job = builderJob({
      image,
      kind,
      number,
      reasons: why,
      flake: flakeToBuild(image, observed.polledRevision, observed.polledRefName),
      storeVolume: "",
      ...current,
      ...(rebuildToken !== undefined ? { rebuildToken } : {}),
      requestedAt: rfc3339(now),
      ...(kind === "Image" ? unchangedIf(status, why, current) : {}),
      config,
    });
    const jobName = job.metadata!.name!;
    if (kind === "Image" && attempt > 1) job.metadata!.annotations = { ...job.metadata!.annotations, [annotations.attempt]: String(attempt) };
    const choice = chooseStoreVolume(observed.storeVolumes, observed.namespaceJobs, config.store.poolSize, now, preferred);
    if (choice.kind === "wait") {
      requeue(waitRetryMs);
      if (kind === "Warm") return settled();
      return finish("InProgress", reasons.WaitingForStoreVolume, choice.message);
    }
    const volume = choice.kind === "lease" ? choice.volume.name : choice.name;
    job.spec!.template.spec!.volumes!.find((v) => v.name === "store")!.persistentVolumeClaim!.claimName = volume;
    actions.push({
      type: "createJob",
      job,
      lease:
        choice.kind === "lease"
          ? { volume, resourceVersion: choice.volume.resourceVersion, annotations: leaseAnnotations(jobName, now) }
          : { create: storeVolumeClaim(image.metadata.namespace!, volume, jobName, now, config) },
    });
    actions.push({ type: "event", eventType: "Normal", reason: "BuildStarted", message: `started ${jobName} on store volume ${volume} (${why.join(", ")})` });
    if (kind === "Image") status.buildCount = number;
    status.lastBuild =
      kind === "Image"
        ? {
            job: jobName,
            number,
            kind,
            reasons: why,
            result: "Running",
            ...current,
            ...(rebuildToken !== undefined ? { rebuildToken } : {}),
            flake: flakeToBuild(image, observed.polledRevision, observed.polledRefName),
            ...(attempt > 1 ? { attempt } : {}),
          }
        : status.lastBuild;
    if (kind === "Warm") {
      status.lastWarmBuild = { job: jobName, number, kind, reasons: why, result: "Running", startTime: rfc3339(now) };
      if (observed.warm) status.nextWarmBuild = rfc3339(observed.warm.upcoming.slot);
    }
    if (kind === "Warm") return settled();
    return finish("InProgress", reasons.Building, `started ${jobName} (${why.join(", ")})`);
  }

  return settled();
}

/**
 * The whole decision: builds first, then the rollout of the image they leave in status. The
 * rollout targets (previous image, rolled-back digest, patch time) are part of the status
 * decided here, so the reconciler can record them before it sends the patches.
 */
/**
 * The retry of a build of record that failed for a reason that may pass: which attempt it would
 * be and when it is due (base delay doubled per attempt, capped), or that the limit is reached.
 * Undefined when the build did not fail transiently.
 */
function retryOf(last: BuildRecord | undefined, config: OperatorConfig, now: Date): { attempt: number; dueInMs: number; exhausted: boolean } | undefined {
  if (last?.result !== "Failed" || last.failure?.transient !== true) return undefined;
  const attempt = (last.attempt ?? 1) + 1;
  const { limit, baseDelay, maxDelay } = config.build.retry;
  const delay = Math.min(parseDuration(baseDelay) * 2 ** (attempt - 2), parseDuration(maxDelay));
  const finished = Date.parse(last.completionTime ?? last.startTime ?? "");
  const dueInMs = Number.isNaN(finished) ? 0 : finished + delay - now.getTime();
  return { attempt, dueInMs, exhausted: attempt > limit + 1 };
}

export function decide(observed: Observed): Decision {
  const decision = decideBuild(observed);
  if (decision.needsPushSecretCheck) return decision;
  const { image, now } = observed;
  const plan = planRollout({ image: { ...image, status: decision.status }, workloads: observed.workloads ?? [], now });
  const contest = boundReapplies(plan, decision.status.rollout ?? [], decision.status.latestImage, now);
  for (const { workload, message } of contest.events) {
    const about = {
      apiVersion: workload.apiVersion ?? (workload.kind === "CronJob" ? "batch/v1" : "apps/v1"),
      kind: workload.kind,
      name: workload.metadata?.name,
      namespace: workload.metadata?.namespace,
      uid: workload.metadata?.uid,
    };
    const what = `${workload.kind}/${workload.metadata?.name}: ${message}`;
    decision.actions.push({ type: "event", eventType: "Warning", reason: reasons.RolloutContested, message: what, about });
    decision.actions.push({ type: "event", eventType: "Warning", reason: reasons.RolloutContested, message: what });
  }
  for (const refusal of plan.refusals) decision.actions.push({ type: "refuse", refusal });
  for (const patch of plan.patches) decision.actions.push({ type: "rollout", patch });
  if (plan.targets.length > 0) decision.status.rollout = plan.targets;
  else delete decision.status.rollout;
  for (const again of [plan.checkAgainInMs, contest.checkAgainInMs]) {
    if (again !== undefined) decision.requeueAfterMs = Math.min(decision.requeueAfterMs ?? Infinity, again);
  }
  return decision;
}
