// What the informer caches keep of each object (applied before caching): only what the controller
// reads. The API server's bookkeeping (managedFields, kubectl's last-applied copy of the whole
// object) goes everywhere; a workload that did not opt in (no niximage.io/from) is kept as a stub
// with its name and our annotations, since most workloads of a cluster are not ours to touch.
import type { KubernetesObject } from "@kubernetes/client-node";
import { rolloutAnnotations, type Workload } from "../rollout/rollout-plan.ts";

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration";

/** The object without managedFields and kubectl's last-applied annotation (a new object; the input is not changed). */
export function withoutBookkeeping<T extends KubernetesObject>(obj: T): T {
  const metadata = obj.metadata;
  if (!metadata || (metadata.managedFields === undefined && metadata.annotations?.[lastApplied] === undefined)) return obj;
  const { managedFields: _managed, ...rest } = metadata;
  let annotations = metadata.annotations;
  if (annotations?.[lastApplied] !== undefined) {
    const { [lastApplied]: _applied, ...others } = annotations;
    annotations = others;
  }
  return { ...obj, metadata: { ...rest, ...(annotations ? { annotations } : {}) } };
}

/**
 * A workload as the controller needs it: whole (minus bookkeeping) when it opted in to updates
 * from a NixImage; otherwise only kind, name, namespace, uid, resourceVersion and our annotations,
 * which is all the event mappers look at (an opt-in arrives as an update with the full object).
 */
export function workloadProjection(obj: Workload): Workload {
  const annotations = obj.metadata?.annotations;
  if (annotations?.[rolloutAnnotations.from] !== undefined) return withoutBookkeeping(obj);
  const ours = Object.entries(annotations ?? {}).filter(([key]) => key.startsWith("niximage.io/"));
  // Already a stub (the informer may see an object twice): keep it.
  if (obj.spec === undefined && obj.status === undefined && obj.metadata?.managedFields === undefined && ours.length === Object.keys(annotations ?? {}).length)
    return obj;
  const { name, namespace, uid, resourceVersion, generation } = obj.metadata ?? {};
  return {
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: { name, namespace, uid, resourceVersion, generation, ...(ours.length > 0 ? { annotations: Object.fromEntries(ours) } : {}) },
  };
}
