// Asks the leading controller replica to check NixImages' revisions now, from any replica: the
// receiver sets the annotation niximage.io/check-revision on each NixImage (Flux's
// reconcile.fluxcd.io/requestedAt works the same way). The watch delivers the change to the
// leader, whose next reconcile of that key polls at once. So a delivery that reached a standby
// replica (the Service spreads them) is not lost, and `kubectl annotate` does the same by hand.
import type { KubeAccess } from "../runtime/kube-config.ts";
import { group, plural, version } from "../api/niximage.ts";
import { annotations, fieldManager } from "../controller/names.ts";
import { KubeHttpError, kubeRequestJson } from "../runtime/kube-request.ts";

export function revisionCheckRequester(kc: KubeAccess, onWrite?: (verb: string, resource: string) => void): (keys: string[], value: string) => Promise<void> {
  return async (keys, value) => {
    for (const key of keys) {
      const [namespace, name] = key.split("/") as [string, string];
      onWrite?.("PATCH", plural);
      try {
        await kubeRequestJson(kc, "PATCH", `/apis/${group}/${version}/namespaces/${namespace}/${plural}/${name}`, {
          body: { metadata: { annotations: { [annotations.checkRevision]: value } } },
          contentType: "application/merge-patch+json",
          query: { fieldManager },
        });
      } catch (error) {
        // Deleted since the cache saw it: nothing to check.
        if (!(error instanceof KubeHttpError && error.statusCode === 404)) throw error;
      }
    }
  };
}
