// Who wrote what to a workload: a watch from before the object exists records every write (not
// status writes) with the image after it and the field managers that wrote, from managedFields.
// Used by the GitOps tests to count writes per manager (Flux or Argo CD, the operator, others).
import { Watch, type KubernetesObject, type V1Deployment, type V1ManagedFieldsEntry } from "@kubernetes/client-node";
import { expect } from "vitest";
import { kubeClients } from "./kube.ts";

/** One write to the Deployment (not its status): the image after it and who wrote. */
export interface Change {
  generation: number;
  image: string | undefined;
  managers: string[];
}

function entryKey(e: V1ManagedFieldsEntry) {
  return `${e.manager}|${e.operation}|${e.subresource ?? ""}`;
}

/**
 * The managers (of the resource, not its status) that wrote between two versions: entries that are
 * new or have a new time. A manager that only lost fields to a forced apply keeps its time.
 */
function movedManagers(before: V1ManagedFieldsEntry[], after: V1ManagedFieldsEntry[]): string[] {
  const old = new Map(before.map((e) => [entryKey(e), String(e.time)]));
  return after
    .filter((e) => !e.subresource && old.get(entryKey(e)) !== String(e.time))
    .map((e) => e.manager!)
    .sort();
}

/** The manager that owns `image` of container `name` in the Deployment's pod template. */
export function imageOwners(d: V1Deployment, name: string): string[] {
  return (d.metadata?.managedFields ?? [])
    .filter((e) => {
      const fields = e.fieldsV1 as Record<string, Record<string, Record<string, Record<string, Record<string, Record<string, unknown>>>>>> | undefined;
      const container = fields?.["f:spec"]?.["f:template"]?.["f:spec"]?.["f:containers"]?.[`k:{"name":"${name}"}`];
      return container !== undefined && "f:image" in container;
    })
    .map((e) => e.manager!);
}

/**
 * Watches one object from before it exists; records every version. resourceVersion "0" starts
 * from the API server's watch cache: without it, a watch on a kind with no recent writes waits
 * for a cache progress notification that etcd 3.4 never sends (504 "Too large resource version").
 * A watch that ends or reports an error fails the test when it stops.
 */
export async function watchObject<T extends KubernetesObject>(path: string, name: string, onVersion: (obj: T) => void): Promise<() => void> {
  let broken: string | undefined;
  const request = await new Watch(kubeClients().kc).watch(
    path,
    { fieldSelector: `metadata.name=${name}`, resourceVersion: "0" },
    (type, obj: T) => {
      if (type === "ADDED" || type === "MODIFIED") onVersion(obj);
      else if (type === "ERROR") broken ??= JSON.stringify(obj);
    },
    (err: unknown) => {
      broken ??= `watch of ${path} ended early: ${String(err)}`;
    },
  );
  return () => {
    const error = broken;
    broken = "stopped";
    request.abort();
    expect(error, `watch of ${path}`).toBeUndefined();
  };
}

/**
 * Records each write to Deployment shop-web (a version in which some manager's entry moved; status
 * writes do not count) with its image and who wrote it. A manager writing twice within one second
 * keeps its time, so such a second write is not seen: none of the writes counted here are that close.
 */
export async function recordDeployment(namespace: string): Promise<{ changes: Change[]; stop: () => void }> {
  const changes: Change[] = [];
  let previous: V1Deployment | undefined;
  const stop = await watchObject<V1Deployment>(`/apis/apps/v1/namespaces/${namespace}/deployments`, "shop-web", (d) => {
    const managers = movedManagers(previous?.metadata?.managedFields ?? [], d.metadata!.managedFields ?? []);
    if (managers.length) changes.push({ generation: d.metadata!.generation!, image: d.spec!.template.spec!.containers[0]!.image, managers });
    previous = d;
  });
  return { changes, stop };
}
