// Plays the kubelet for builder pods in the fault suite (the integration tier has no kubelet), as
// test/support/operator-harness.ts finishBuildPod does, but on its own: it polls the builder pods
// of the given namespaces and, after a hold time (a build that takes a while), finishes each new
// pod with a push result whose digest is a function of the NixImage and the revision its Job
// builds. So a rebuild of the same revision gives the same digest, and a test knows which image
// every NixImage must end up with. It counts every pod it finished per NixImage: more than one
// for the same revision is a duplicate build.
import { createHash } from "node:crypto";
import type { V1Pod } from "@kubernetes/client-node";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { kubeClients } from "./kube.ts";
import { pushResult } from "./operator-harness.ts";
import { sleep } from "./process.ts";

export const fakeRepository = "127.0.0.1:5000/faults/app";

/** The digest hex the fake kubelet reports for a NixImage built at `rev`. */
function digestHexFor(namespace: string, image: string, rev: string): string {
  return createHash("sha256").update(`${namespace}/${image}@${rev}`).digest("hex");
}

export function imageFor(namespace: string, image: string, rev: string): string {
  return `${fakeRepository}@sha256:${digestHexFor(namespace, image, rev)}`;
}

interface FinishedBuild {
  namespace: string;
  image: string;
  job: string;
  pod: string;
  rev: string;
  at: number;
}

type PodOutcome = "succeed" | { fail: { step?: "build" | "push"; exitCode: number; message: string } } | { evict: string };

export interface FakeKubelet {
  /** Every pod finished so far, in order. */
  readonly finished: FinishedBuild[];
  /** Finished builds per "namespace/image". */
  buildsOf(namespace: string, image: string): FinishedBuild[];
  /** Stops finishing pods (pods stay as they are: a paused node). */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

export interface FakeKubeletOptions {
  namespaces: string[];
  /** How long a build "runs" before its pod finishes (ms); default 0. */
  holdMs?: () => number;
  /**
   * The outcome of one pod (`earlier`: pods of the same NixImage finished before); default success.
   * A failure is the push step's unless `step` says "build"; "evict" is the kubelet evicting the pod.
   */
  outcome?: (pod: V1Pod, earlier: number) => PodOutcome;
  intervalMs?: number;
  /** The revision a Job builds when its annotation pins none (a NixImage without revision polling). */
  defaultRev?: () => string;
}

const terminated = (name: string, exitCode: number, message?: string) => ({
  name,
  ready: false,
  restartCount: 0,
  image: `${name}.test/image:1`,
  imageID: "",
  state: {
    terminated: {
      exitCode,
      reason: exitCode === 0 ? "Completed" : "Error",
      ...(message ? { message } : {}),
      startedAt: new Date().toISOString(),
      finishedAt: new Date().toISOString(),
    },
  },
});

function revOf(flake: string | undefined): string | undefined {
  return /[?&]rev=([0-9a-f]{40})/.exec(flake ?? "")?.[1];
}

export function startFakeKubelet(opts: FakeKubeletOptions): FakeKubelet {
  const { core, batch, kc } = kubeClients();
  const seen = new Set<string>();
  const finished: FinishedBuild[] = [];
  let paused = false;
  let stopped = false;
  const pending = new Set<Promise<void>>();

  const finish = async (pod: V1Pod) => {
    const namespace = pod.metadata!.namespace!;
    const image = pod.metadata!.labels!["niximage.io/image"]!;
    const jobName = pod.metadata!.labels!["batch.kubernetes.io/job-name"] ?? pod.metadata!.labels!["job-name"]!;
    await sleep(opts.holdMs?.() ?? 0);
    while (paused && !stopped) await sleep(100);
    if (stopped) return;
    // A pod deleted meanwhile (Terminating) is not run to completion: its node is gone.
    const fresh = await core.readNamespacedPod({ namespace, name: pod.metadata!.name! }).catch(() => undefined);
    if (!fresh || fresh.metadata?.deletionTimestamp) return;
    const job = await batch.readNamespacedJob({ namespace, name: jobName }).catch(() => undefined);
    if (!job) return; // deleted meanwhile: nothing to finish
    const rev = revOf(job.metadata?.annotations?.["niximage.io/revision"]) ?? opts.defaultRev?.() ?? "0".repeat(40);
    const outcome = opts.outcome?.(pod, finished.filter((f) => f.namespace === namespace && f.image === image).length) ?? "succeed";
    const main = pod.spec?.containers[0]?.name ?? "push";
    let status: Record<string, unknown>;
    if (outcome === "succeed") {
      status = {
        phase: "Succeeded",
        initContainerStatuses: [terminated("prepare", 0), terminated("build", 0)],
        containerStatuses: [terminated(main, 0, pushResult(fakeRepository, digestHexFor(namespace, image, rev), rev))],
      };
    } else if ("evict" in outcome) {
      status = { phase: "Failed", reason: "Evicted", message: outcome.evict };
    } else if (outcome.fail.step === "build") {
      status = {
        phase: "Failed",
        initContainerStatuses: [terminated("prepare", 0), terminated("build", outcome.fail.exitCode, outcome.fail.message)],
        containerStatuses: [{ ...terminated(main, 0), state: { waiting: { reason: "PodInitializing" } } }],
      };
    } else {
      status = {
        phase: "Failed",
        initContainerStatuses: [terminated("prepare", 0), terminated("build", 0)],
        containerStatuses: [terminated(main, outcome.fail.exitCode, outcome.fail.message)],
      };
    }
    try {
      await kubeRequestJson(kc, "PATCH", `/api/v1/namespaces/${namespace}/pods/${pod.metadata!.name}/status`, {
        body: { status },
        contentType: "application/merge-patch+json",
      });
      finished.push({ namespace, image, job: jobName, pod: pod.metadata!.name!, rev, at: Date.now() });
    } catch {
      seen.delete(pod.metadata!.uid!); // try again next round (e.g. the API server restarted)
    }
  };

  const loop = (async () => {
    while (!stopped) {
      for (const namespace of opts.namespaces) {
        const pods = await core.listNamespacedPod({ namespace, labelSelector: "niximage.io/image" }).catch(() => undefined);
        for (const pod of pods?.items ?? []) {
          const uid = pod.metadata?.uid;
          if (!uid || seen.has(uid) || pod.metadata?.deletionTimestamp) continue;
          if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") continue;
          seen.add(uid);
          const p = finish(pod).catch(() => void seen.delete(uid));
          pending.add(p);
          void p.finally(() => pending.delete(p));
        }
      }
      await sleep(opts.intervalMs ?? 200);
    }
  })();

  return {
    finished,
    buildsOf: (namespace, image) => finished.filter((f) => f.namespace === namespace && f.image === image),
    pause: () => void (paused = true),
    resume: () => void (paused = false),
    async stop() {
      stopped = true;
      await loop;
      await Promise.allSettled([...pending]);
    },
  };
}
