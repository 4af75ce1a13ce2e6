/** Labels, annotations and names the operator puts on objects, in one place. */

export const fieldManager = "nix-image-operator";

export const labels = {
  managedBy: "app.kubernetes.io/managed-by",
  /** NixImage name on its Jobs and their pods. */
  image: "niximage.io/image",
  /** Image (a regular build) or Warm. */
  buildKind: "niximage.io/build-kind",
  buildNumber: "niximage.io/build-number",
  /** Marks a PVC of the store volume pool. */
  store: "niximage.io/store",
} as const;

export const annotations = {
  /** Set to any new value to request a rebuild. */
  rebuild: "niximage.io/rebuild",
  /** Set to any new value (the webhook receiver writes the time) to check the branch for a new commit now. */
  checkRevision: "niximage.io/check-revision",
  /** Comma-separated build reasons on a Job. */
  reasons: "niximage.io/reasons",
  specHash: "niximage.io/spec-hash",
  builderHash: "niximage.io/builder-hash",
  rebuildToken: "niximage.io/rebuild-token",
  revision: "niximage.io/revision",
  /** Which try of the same inputs a build is (1, 2, ... after transient failures). */
  attempt: "niximage.io/attempt",
  /** When the controller started the build, by its own clock (warm schedules count from it). */
  requestedAt: "niximage.io/requested-at",
  /** On a store PVC: the Job that holds it, and since when. */
  leaseHolder: "niximage.io/lease-holder",
  leaseTime: "niximage.io/lease-time",
} as const;

export const managedByValue = "nix-image-operator";

/** Job names feed the pods' job-name label, which is capped at 63 characters. */
export function buildJobName(imageName: string, kind: "Image" | "Warm", number: number): string {
  const suffix = `-${kind === "Warm" ? "warm" : "build"}-${number}`;
  return `${imageName.slice(0, 63 - suffix.length).replace(/[-.]+$/, "")}${suffix}`;
}

export function storeVolumeName(index: number): string {
  return `niximage-store-${index}`;
}
