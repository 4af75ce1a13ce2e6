import type { V1PersistentVolumeClaim } from "@kubernetes/client-node";
import type { OperatorConfig } from "../config/operator-config.ts";
import { annotations, labels, managedByValue, storeVolumeName } from "./names.ts";

/**
 * The per-namespace pool of Nix store volumes. A writable store is never shared by two pods,
 * so a build leases one volume, and the lease lives on the PVC itself (annotations written
 * with the PVC's resourceVersion as a precondition), not only in this process: a restarted or
 * second controller sees it too. A lease ends when its Job is finished or gone; a fresh lease
 * whose Job is not visible yet is honoured for a grace period.
 */

export const leaseGraceMs = 120_000;

export interface StoreVolumeView {
  name: string;
  resourceVersion: string;
  holder?: string;
  leasedAt?: string;
}

export function storeVolumeView(pvc: V1PersistentVolumeClaim): StoreVolumeView {
  return {
    name: pvc.metadata?.name ?? "",
    resourceVersion: pvc.metadata?.resourceVersion ?? "",
    holder: pvc.metadata?.annotations?.[annotations.leaseHolder] || undefined,
    leasedAt: pvc.metadata?.annotations?.[annotations.leaseTime] || undefined,
  };
}

export type VolumeChoice = { kind: "lease"; volume: StoreVolumeView } | { kind: "create"; name: string } | { kind: "wait"; message: string };

/**
 * Picks a volume for a new build. `jobs` are the namespace's builder Jobs (any NixImage's) and
 * whether each still runs. A volume the same image used before is preferred: its store is warm.
 */
export function chooseStoreVolume(
  volumes: readonly StoreVolumeView[],
  jobs: ReadonlyMap<string, boolean>,
  poolSize: number,
  now: Date,
  preferred?: string,
): VolumeChoice {
  const free = volumes.filter((v) => isFree(v, jobs, now)).sort((a, b) => a.name.localeCompare(b.name));
  const pick = free.find((v) => v.name === preferred) ?? free[0];
  if (pick) return { kind: "lease", volume: pick };
  const taken = new Set(volumes.map((v) => v.name));
  for (let i = 0; i < poolSize; i++) {
    if (!taken.has(storeVolumeName(i))) return { kind: "create", name: storeVolumeName(i) };
  }
  return { kind: "wait", message: `all ${poolSize} store volumes of this namespace are in use by other builds; this build starts when one is free` };
}

/** Free when unleased, or its holder Job has finished, or the holder never appeared in time. */
export function isFree(volume: StoreVolumeView, jobs: ReadonlyMap<string, boolean>, now: Date): boolean {
  if (!volume.holder) return true;
  const running = jobs.get(volume.holder);
  if (running !== undefined) return !running;
  const since = volume.leasedAt ? Date.parse(volume.leasedAt) : Number.NaN;
  return !(now.getTime() - since < leaseGraceMs);
}

/**
 * Which builder Jobs still hold their store volume: name -> true while the Job runs or any pod of
 * it has not finished (a Job is marked failed before its pod is gone: the pod may still write to
 * the store), false once done. Holders of a lease whose Job is gone count while pods remain.
 */
export function volumeHolders(
  jobs: readonly { name: string; running: boolean }[],
  podsActive: (job: string) => boolean,
  volumes: readonly StoreVolumeView[],
): Map<string, boolean> {
  const holders = new Map(jobs.map((j) => [j.name, j.running || podsActive(j.name)]));
  for (const volume of volumes) {
    if (volume.holder && !holders.has(volume.holder) && podsActive(volume.holder)) holders.set(volume.holder, true);
  }
  return holders;
}

export function leaseAnnotations(holder: string, now: Date): Record<string, string> {
  return { [annotations.leaseHolder]: holder, [annotations.leaseTime]: now.toISOString() };
}

/** A new store volume, created already leased to `holder` (creation is the acquisition). */
export function storeVolumeClaim(namespace: string, name: string, holder: string, now: Date, config: OperatorConfig): V1PersistentVolumeClaim {
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: {
      name,
      namespace,
      labels: { [labels.store]: "true", [labels.managedBy]: managedByValue },
      annotations: leaseAnnotations(holder, now),
    },
    spec: {
      accessModes: [config.store.accessMode],
      resources: { requests: { storage: config.store.size } },
      ...(config.store.storageClassName ? { storageClassName: config.store.storageClassName } : {}),
    },
  };
}
