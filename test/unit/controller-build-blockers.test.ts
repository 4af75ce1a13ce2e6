// Why a running build is stuck (build-blockers.ts): one row per signal a user must see within
// seconds, shaped as the kubelet, the scheduler, the Job and volume controllers write them.
import type { CoreV1Event, V1PersistentVolumeClaim, V1Pod } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { blockerGraceMs, buildBlocker, type BlockerInput } from "../../src/controller/build-blockers.ts";

const now = new Date("2026-11-22T10:00:00.000Z");
const ago = (ms: number) => new Date(now.getTime() - ms).toISOString();

function pod(status: V1Pod["status"], spec: Partial<NonNullable<V1Pod["spec"]>> = {}): V1Pod {
  return {
    metadata: { name: "web-build-1-abcde", namespace: "shop" },
    spec: {
      initContainers: [
        { name: "prepare", image: "nix.test/nix:2.28" },
        { name: "build", image: "nix.test/nix:2.28" },
      ],
      containers: [{ name: "push", image: "operator.test/nio:0.1.0" }],
      ...spec,
    },
    status,
  };
}

const waiting = (name: string, reason: string, message: string) => ({
  phase: "Pending",
  initContainerStatuses: [{ name, ready: false, restartCount: 0, image: "", imageID: "", state: { waiting: { reason, message } } }],
});

const pvc = (phase: string, extra: Partial<NonNullable<V1PersistentVolumeClaim["spec"]>> = {}): V1PersistentVolumeClaim => ({
  metadata: { name: "niximage-store-0", namespace: "shop", uid: "pvc-uid" },
  spec: { accessModes: ["ReadWriteOncePod"], ...extra },
  status: { phase },
});

const event = (reason: string, message: string, type = "Warning", at = ago(1000)): CoreV1Event => ({
  metadata: { name: `e-${reason}` },
  involvedObject: {},
  type,
  reason,
  message,
  lastTimestamp: at as unknown as Date,
});

const unschedulable = {
  phase: "Pending",
  conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "0/3 nodes are available: 3 Insufficient memory." }],
};

interface Row {
  name: string;
  input: Omit<BlockerInput, "now">;
  reason?: string;
  says?: string[];
  needEvents?: { job?: boolean; volume?: boolean; pod?: boolean };
  recheck?: boolean;
}

const rows: Row[] = [
  {
    name: "image pull error of an init step",
    input: { requestedAt: ago(2000), pod: pod(waiting("prepare", "ErrImagePull", 'failed to pull "nix.test/nix:2.28": not found')) },
    reason: "BuilderImagePullFailed",
    says: ["step prepare", "nix.test/nix:2.28", "ErrImagePull", "not found", "builder.nixImage"],
  },
  {
    name: "ImagePullBackOff of the push container",
    input: {
      pod: pod({
        phase: "Pending",
        containerStatuses: [
          {
            name: "push",
            ready: false,
            restartCount: 0,
            image: "",
            imageID: "",
            state: { waiting: { reason: "ImagePullBackOff", message: "Back-off pulling image" } },
          },
        ],
      }),
    },
    reason: "BuilderImagePullFailed",
    says: ["step push", "operator.test/nio:0.1.0"],
  },
  {
    name: "invalid image reference",
    input: { pod: pod(waiting("build", "InvalidImageName", 'couldn\'t parse image name "Bad Image"')) },
    reason: "BuilderImagePullFailed",
  },
  {
    name: "a missing Secret (CreateContainerConfigError)",
    input: { pod: pod(waiting("build", "CreateContainerConfigError", 'secret "ca-bundle" not found')) },
    reason: "BuilderConfigError",
    says: ['secret "ca-bundle" not found', "namespace shop"],
  },
  {
    name: "unschedulable, with the scheduler's message",
    input: { requestedAt: ago(1000), pod: pod(unschedulable), storeVolume: pvc("Bound") },
    reason: "BuilderUnschedulable",
    says: ["Insufficient memory", "spec.build.resources.requests"],
  },
  { name: "a pod still being started is not stuck", input: { pod: pod(waiting("prepare", "PodInitializing", "")) } },
  { name: "a running pod is not stuck", input: { pod: pod({ phase: "Running" }, { nodeName: "node-1" }), storeVolume: pvc("Bound") } },
  {
    name: "store volume Pending within its grace period: look again when it ends",
    input: { requestedAt: ago(2000), pod: pod({ phase: "Pending" }), storeVolume: pvc("Pending") },
    recheck: true,
  },
  {
    name: "store volume Pending past its grace period: the Events are asked for",
    input: { requestedAt: ago(blockerGraceMs.volumePending + 1), pod: pod({ phase: "Pending" }), storeVolume: pvc("Pending") },
    needEvents: { volume: true },
  },
  {
    name: "store volume Pending past its grace period, with the volume controller's word",
    input: {
      requestedAt: ago(blockerGraceMs.volumePending + 1),
      pod: pod(unschedulable),
      storeVolume: pvc("Pending"),
      volumeEvents: [event("FailedBinding", "no persistent volumes available for this claim and no storage class is set", "Normal")],
    },
    reason: "StoreVolumePending",
    says: ["niximage-store-0", "no storage class", "ReadWriteOncePod", "no persistent volumes available", "store.storageClassName", "store.accessMode"],
    recheck: true,
  },
  {
    name: "a Pending volume of a pod already on a node is the kubelet's business (WaitForFirstConsumer binds after scheduling): its Events are asked for",
    input: { requestedAt: ago(60_000), pod: pod({ phase: "Pending" }, { nodeName: "node-1" }), storeVolume: pvc("Pending") },
    needEvents: { pod: true },
  },
  {
    name: "a pod on a node, still Pending within the grace period: look again",
    input: { requestedAt: ago(2000), pod: pod({ phase: "Pending" }, { nodeName: "node-1" }), storeVolume: pvc("Bound") },
    recheck: true,
  },
  {
    name: "a pod on a node that cannot mount a missing ConfigMap (the kubelet's FailedMount): BuilderConfigError",
    input: {
      requestedAt: ago(blockerGraceMs.podStarting + 1),
      pod: pod({ phase: "Pending" }, { nodeName: "node-1" }),
      storeVolume: pvc("Bound"),
      podEvents: [event("FailedMount", 'MountVolume.SetUp failed for volume "ca-bundle" : configmap "corp-ca" not found')],
    },
    reason: "BuilderConfigError",
    says: ['configmap "corp-ca" not found', "spec.build.caBundleRef"],
    recheck: true,
  },
  {
    name: "a pod on a node still pulling its image (no FailedMount): look again",
    input: {
      requestedAt: ago(blockerGraceMs.podStarting + 1),
      pod: pod({ phase: "Pending" }, { nodeName: "node-1" }),
      storeVolume: pvc("Bound"),
      podEvents: [event("Pulling", 'Pulling image "nix.test/nix:2.28"', "Normal")],
    },
    recheck: true,
  },

  { name: "no pod yet, just created: look again", input: { requestedAt: ago(500) }, recheck: true },
  { name: "no pod past the grace period: the Job's Events are asked for", input: { requestedAt: ago(blockerGraceMs.noPod + 1) }, needEvents: { job: true } },
  {
    name: "no pod and a FailedCreate from the Job controller (ResourceQuota)",
    input: {
      requestedAt: ago(blockerGraceMs.noPod + 1),
      jobEvents: [
        event("SuccessfulCreate", "Created pod: old", "Normal", ago(5000)),
        event(
          "FailedCreate",
          'Error creating: pods "web-build-1-x" is forbidden: exceeded quota: builds, requested: limits.memory=2Gi, used: limits.memory=0, limited: limits.memory=1Gi',
        ),
      ],
    },
    reason: "BuilderPodRejected",
    says: ["exceeded quota", "ResourceQuota", "spec.build.resources", "Pod Security"],
    recheck: true,
  },
  {
    name: "no pod and a Pending volume past both grace periods: both Events are asked for",
    input: { requestedAt: ago(blockerGraceMs.volumePending + 1), storeVolume: pvc("Pending") },
    needEvents: { job: true, volume: true },
  },
  {
    name: "no pod and a Pending volume: the pod's rejection (Pod Security) comes first",
    input: {
      requestedAt: ago(blockerGraceMs.volumePending + 1),
      storeVolume: pvc("Pending"),
      jobEvents: [
        event("FailedCreate", 'Error creating: pods "web-build-1-x" is forbidden: violates PodSecurity "restricted:latest": unrestricted capabilities'),
      ],
      volumeEvents: [event("FailedBinding", "no persistent volumes available for this claim and no storage class is set", "Normal")],
    },
    reason: "BuilderPodRejected",
    says: ["violates PodSecurity", "pod-security.kubernetes.io/enforce"],
    recheck: true,
  },
  { name: "no pod and no Event yet: look again", input: { requestedAt: ago(blockerGraceMs.noPod + 1), jobEvents: [] }, recheck: true },
];

describe("buildBlocker", () => {
  it.each(rows)("$name", (row) => {
    const check = buildBlocker({ now, ...row.input });
    expect(check.blocker?.reason).toBe(row.reason);
    for (const text of row.says ?? []) expect(check.blocker?.message).toContain(text);
    expect(check.needEvents).toEqual(row.needEvents);
    expect(check.recheckInMs !== undefined).toBe(row.recheck === true);
    if (check.recheckInMs !== undefined) expect(check.recheckInMs).toBeGreaterThan(0);
  });
});
