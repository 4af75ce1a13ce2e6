// A tiny hostPath volume provisioner for the e2e node (what local-path-provisioner does, in the
// test process): a StorageClass `nio-e2e-hostpath` whose provisioner is this loop. Every second it
// gives each Pending claim of that class a PersistentVolume pre-bound to it (hostPath directory
// under the run directory, created by the kubelet), and deletes Released volumes with their
// directories. hostPath volumes do not support ReadWriteOncePod: claims use ReadWriteOnce.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { CoreV1Api, StorageV1Api, type KubeConfig, type V1PersistentVolume } from "@kubernetes/client-node";
import { removeTree } from "./host.ts";

export const storageClassName = "nio-e2e-hostpath";
const provisionerName = "niximage.io/e2e-hostpath";

export interface Provisioner {
  /** Volumes created so far. */
  created(): number;
  stop(): Promise<void>;
}

function statusOf(e: unknown): number | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

export async function startProvisioner(opts: { kc: KubeConfig; volumesDir: string; intervalMs?: number; log?: (m: string) => void }): Promise<Provisioner> {
  const core = opts.kc.makeApiClient(CoreV1Api);
  const storage = opts.kc.makeApiClient(StorageV1Api);
  mkdirSync(opts.volumesDir, { recursive: true });
  try {
    await storage.createStorageClass({
      body: {
        metadata: { name: storageClassName, annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
        provisioner: provisionerName,
        reclaimPolicy: "Delete",
        volumeBindingMode: "Immediate",
      },
    });
  } catch (e) {
    if (statusOf(e) !== 409) throw e;
  }
  let created = 0;
  let stopped = false;
  let lastError = "";
  const pass = async () => {
    const claims = await core.listPersistentVolumeClaimForAllNamespaces();
    for (const pvc of claims.items) {
      const ns = pvc.metadata?.namespace ?? "";
      const name = pvc.metadata?.name ?? "";
      const uid = pvc.metadata?.uid ?? "";
      if (pvc.spec?.storageClassName !== storageClassName || pvc.spec?.volumeName || pvc.status?.phase !== "Pending" || pvc.metadata?.deletionTimestamp)
        continue;
      const dir = join(opts.volumesDir, `${ns}-${name}-${uid.slice(0, 8)}`);
      const pv: V1PersistentVolume = {
        metadata: { name: `pvc-${uid}`, annotations: { "pv.kubernetes.io/provisioned-by": provisionerName } },
        spec: {
          capacity: { storage: pvc.spec?.resources?.requests?.storage ?? "1Gi" },
          accessModes: pvc.spec?.accessModes ?? ["ReadWriteOnce"],
          persistentVolumeReclaimPolicy: "Retain",
          storageClassName,
          volumeMode: "Filesystem",
          hostPath: { path: dir, type: "DirectoryOrCreate" },
          claimRef: { apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: ns, name, uid },
        },
      };
      try {
        await core.createPersistentVolume({ body: pv });
        created++;
        opts.log?.(`provisioned ${pv.metadata!.name} for ${ns}/${name} at ${dir}`);
      } catch (e) {
        if (statusOf(e) !== 409) throw e;
      }
    }
    const volumes = await core.listPersistentVolume();
    for (const pv of volumes.items) {
      if (pv.spec?.storageClassName !== storageClassName || pv.status?.phase !== "Released") continue;
      const path = pv.spec.hostPath?.path;
      await core.deletePersistentVolume({ name: pv.metadata!.name! }).catch((e: unknown) => {
        if (statusOf(e) !== 404) throw e;
      });
      if (path?.startsWith(`${opts.volumesDir}/`)) removeTree(path);
      opts.log?.(`deleted released volume ${pv.metadata!.name}`);
    }
  };
  const loop = (async () => {
    while (!stopped) {
      try {
        await pass();
        lastError = "";
      } catch (e) {
        const msg = (e as Error).message ?? String(e);
        if (msg !== lastError) opts.log?.(`provisioner: ${msg.split("\n")[0]}`);
        lastError = msg;
      }
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 1000));
    }
  })();
  return {
    created: () => created,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}
