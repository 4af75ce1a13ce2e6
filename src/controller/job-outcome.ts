import type { V1ContainerStatus, V1Job, V1Pod } from "@kubernetes/client-node";
import { z } from "zod";
import { annotations, labels } from "./names.ts";

/**
 * What the controller needs to know about one builder Job, read from the Job and its pods.
 * The push step's termination message carries the result; a failed step's termination
 * message carries its last log lines (terminationMessagePolicy FallbackToLogsOnError).
 */

/** The push step's JSON result (<= 4096 bytes), as the push-step command writes it. */
export const pushResultSchema = z.object({
  image: z.string(),
  digest: z.string().regex(/^sha256:[a-f0-9]{64}$/),
  tags: z.array(z.string()).default([]),
  revision: z.object({ url: z.string(), rev: z.string().optional(), lastModified: z.number().optional(), narHash: z.string().optional() }).optional(),
  layers: z.object({ pushed: z.number(), skipped: z.number(), mounted: z.number().optional() }),
  bytesPushed: z.number(),
  seconds: z.record(z.string(), z.number()).optional(),
  attestations: z
    .object({
      sbom: z
        .string()
        .regex(/^sha256:[a-f0-9]{64}$/)
        .optional(),
      provenance: z
        .string()
        .regex(/^sha256:[a-f0-9]{64}$/)
        .optional(),
      signature: z
        .string()
        .regex(/^sha256:[a-f0-9]{64}$/)
        .optional(),
      attestations: z
        .string()
        .regex(/^sha256:[a-f0-9]{64}$/)
        .optional(),
    })
    .optional(),
  outPath: z.string().optional(),
  /** The output was that of the image in use: nothing was pushed (issue 14, exact no-op). */
  unchanged: z.boolean().optional(),
});
export type PushResult = z.output<typeof pushResultSchema>;

/** The warm report step's JSON result. */
export const warmResultSchema = z.object({
  revision: pushResultSchema.shape.revision,
  closureDiff: z
    .object({
      added: z.array(z.object({ name: z.string(), to: z.string().optional() })),
      removed: z.array(z.object({ name: z.string(), from: z.string().optional() })),
      changed: z.array(z.object({ name: z.string(), from: z.string().optional(), to: z.string().optional() })),
    })
    .optional(),
  seconds: z.record(z.string(), z.number()).optional(),
});
export type WarmResult = z.output<typeof warmResultSchema>;

export interface StepFailure {
  step: string;
  exitCode?: number;
  reason?: string;
  message: string;
}

export interface JobView {
  name: string;
  kind: "Image" | "Warm";
  number: number;
  state: "Running" | "Succeeded" | "Failed";
  reasons: string[];
  specHash?: string;
  builderHash?: string;
  rebuildToken?: string;
  flake?: string;
  storeVolume?: string;
  /** When the controller started the build, by its clock (the Job's startTime is the API server's). */
  requestedAt?: string;
  startTime?: string;
  completionTime?: string;
  result?: PushResult;
  warmResult?: WarmResult;
  failure?: StepFailure;
}

function jobState(job: V1Job): JobView["state"] {
  for (const condition of job.status?.conditions ?? []) {
    if (condition.status !== "True") continue;
    if (condition.type === "Complete" || condition.type === "SuccessCriteriaMet") return "Succeeded";
    if (condition.type === "Failed" || condition.type === "FailureTarget") return "Failed";
  }
  return "Running";
}

const asTime = (t: Date | string | undefined) => (t === undefined ? undefined : typeof t === "string" ? t : t.toISOString());

/** The step that failed: the first init container or container that terminated non-zero. */
export function failedStep(pod: V1Pod): StepFailure | undefined {
  const statuses: V1ContainerStatus[] = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  for (const status of statuses) {
    const terminated = status.state?.terminated ?? status.lastState?.terminated;
    if (terminated && terminated.exitCode !== 0) {
      return {
        step: status.name,
        exitCode: terminated.exitCode,
        reason: terminated.reason,
        message: (terminated.message ?? "").trim().slice(-4000) || `step ${status.name} exited with code ${terminated.exitCode}`,
      };
    }
  }
  return undefined;
}

function terminationMessage(pod: V1Pod, container: string): string | undefined {
  const status = pod.status?.containerStatuses?.find((s) => s.name === container);
  return status?.state?.terminated?.exitCode === 0 ? status.state.terminated.message : undefined;
}

/** The kubelet keeps at most 4096 bytes of a termination message; anything longer was not written by our step. */
const MAX_TERMINATION_MESSAGE = 4096;

function parseJson<T>(schema: z.ZodType<T>, text: string | undefined): T | undefined {
  if (!text || text.length > MAX_TERMINATION_MESSAGE) return undefined;
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Newest pod first: with podReplacementPolicy Failed, the last pod tells the story. */
function newestPod(pods: readonly V1Pod[]): V1Pod | undefined {
  return [...pods].sort((a, b) => String(asTime(b.metadata?.creationTimestamp)).localeCompare(String(asTime(a.metadata?.creationTimestamp))))[0];
}

export function jobView(job: V1Job, pods: readonly V1Pod[]): JobView {
  const meta = job.metadata ?? {};
  const kind = meta.labels?.[labels.buildKind] === "Warm" ? "Warm" : "Image";
  const state = jobState(job);
  const pod = newestPod(pods);
  const view: JobView = {
    name: meta.name ?? "",
    kind,
    number: Number(meta.labels?.[labels.buildNumber] ?? 0),
    state,
    reasons: (meta.annotations?.[annotations.reasons] ?? "").split(",").filter(Boolean),
    specHash: meta.annotations?.[annotations.specHash],
    builderHash: meta.annotations?.[annotations.builderHash],
    rebuildToken: meta.annotations?.[annotations.rebuildToken],
    flake: meta.annotations?.[annotations.revision],
    storeVolume: job.spec?.template.spec?.volumes?.find((v) => v.name === "store")?.persistentVolumeClaim?.claimName,
    requestedAt: meta.annotations?.[annotations.requestedAt],
    startTime: asTime(job.status?.startTime),
    completionTime: asTime(job.status?.completionTime),
  };
  if (state === "Succeeded" && pod) {
    if (kind === "Image") {
      view.result = parseJson(pushResultSchema, terminationMessage(pod, "push"));
      if (!view.result) {
        view.state = "Failed";
        view.failure = { step: "push", message: "the push step finished without a readable result in its termination message" };
      }
    } else {
      view.warmResult = parseJson(warmResultSchema, terminationMessage(pod, "report"));
    }
  }
  if (view.state === "Failed" && !view.failure) {
    const deadline = job.status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");
    view.failure = (pod && failedStep(pod)) ?? {
      step: "job",
      reason: deadline?.reason,
      message: deadline?.message ?? "the builder Job failed",
    };
  }
  return view;
}
