// What the builder steps hand the controller through their pods' termination messages (at most
// 4096 bytes, kubelet's limit): one zod schema per result, used by the step that writes it (its
// type is z.infer of the schema) and by the controller that reads it (parse). The bounds of the
// NixImage status are part of the schemas, so what parses can be copied into status as it is.
// A failed step writes a short plain-text message instead; its exit code says whether the
// failure may pass (TRANSIENT_EXIT_CODE): the controller retries those builds with backoff.
import { z } from "zod";
import { imageFormats, revisionSchema } from "./step-files.ts";

export const TERMINATION_MESSAGE_LIMIT = 4096;

/**
 * Exit code of a push step whose failure may pass (sysexits' EX_TEMPFAIL): the registry answered
 * 5xx/429, timed out, or the network failed. Any other non-zero code is a failure that the same
 * inputs would repeat. Only the push step's code is believed: it runs no flake code.
 */
export const TRANSIENT_EXIT_CODE = 75;

/**
 * Exit code of a prepare step that refused the store volume (sysexits' EX_CONFIG): its Nix
 * database was written by a Nix of another schema version. Every build on that volume would fail
 * the same way until the volume is replaced or the builder image changes.
 */
export const STORE_INCOMPATIBLE_EXIT_CODE = 78;

/** Bounds of the status fields these results are copied into. */
export const resultBounds = { url: 2048, phases: 32, phaseName: 32, closureChanges: 256, packageName: 256, version: 128, tags: 64, tag: 128 } as const;

const count = z.number().int().min(0);
const digest = z.string().regex(/^sha256:[a-f0-9]{64}$/);

/** Seconds per phase (lock, build, push, ...): status.lastBuild.durations. */
const durationsSchema = z
  .record(z.string().max(resultBounds.phaseName), z.number().min(0))
  .refine((d) => Object.keys(d).length <= resultBounds.phases, `at most ${resultBounds.phases} phases`);

/** The push step's result: the pushed image and how it got there. */
export const pushResultSchema = z.object({
  image: z.string().max(512),
  digest,
  tags: z.array(z.string().max(resultBounds.tag)).max(resultBounds.tags),
  format: z.enum(imageFormats),
  revision: revisionSchema,
  layers: z.object({ total: count, pushed: count, skipped: count, mounted: count }),
  bytesPushed: count,
  seconds: durationsSchema,
  /** Digests of the SBOM / provenance referrers and the cosign signature / attestation manifests. */
  attestations: z.object({ sbom: digest.optional(), provenance: digest.optional(), signature: digest.optional(), attestations: digest.optional() }).optional(),
  /** The Nix output the image was made from. */
  outPath: z.string().max(512).optional(),
  /** The output was that of the image in use (--unchanged-out-path): nothing was pushed, `digest` is that image's. */
  unchanged: z.boolean().optional(),
});
export type PushStepResult = z.infer<typeof pushResultSchema>;

const closureChange = z.object({
  name: z.string().max(resultBounds.packageName),
  from: z.string().max(resultBounds.version).optional(),
  to: z.string().max(resultBounds.version).optional(),
});
const changes = z.array(closureChange).max(resultBounds.closureChanges);
const closureTotals = z.object({ added: count, removed: count, changed: count });

/** The warm build's report step: the revision it built and, with updated inputs, the closure diff. */
export const warmResultSchema = z.object({
  revision: revisionSchema.optional(),
  closureDiff: z
    .object({
      added: changes,
      removed: changes,
      changed: changes,
      /** The full counts: the lists may be cut to fit the termination message; these never are. */
      totals: closureTotals.optional(),
    })
    .optional(),
  seconds: durationsSchema.optional(),
});
export type WarmResult = z.infer<typeof warmResultSchema>;

/**
 * The cache step's result (config.binaryCache): whether the closure reached the cluster binary
 * cache. A failed copy is a result too (`copied: false` with the reason, exit code 0): the cache
 * is an optimisation, the build's image does not depend on it.
 */
export const cacheResultSchema = z.object({
  /** The cache URL without query parameters (never the key path or credentials). */
  cache: z.string().max(resultBounds.url),
  outPath: z.string().max(512),
  /** Store paths in the closure (the cache skips those it has). */
  closurePaths: count,
  copied: z.boolean(),
  seconds: z.number().min(0),
  error: z.string().max(2000).optional(),
});
export type CacheStepResult = z.infer<typeof cacheResultSchema>;

/** Parses a termination message as one of the results; undefined when it is not one. */
export function parseStepResult<T>(schema: z.ZodType<T>, text: string | undefined): T | undefined {
  // The kubelet keeps at most 4096 bytes of a termination message; anything longer was not written by our step.
  if (!text || text.length > TERMINATION_MESSAGE_LIMIT) return undefined;
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    // Not JSON (a failure message): the error would echo the input, so it is dropped.
    return undefined;
  }
}

/** PURE: seconds per phase cut to the status bounds (the writer's side of durationsSchema). */
export function boundDurations(seconds: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(seconds)
      .filter(([k, v]) => k.length <= resultBounds.phaseName && Number.isFinite(v) && v >= 0)
      .slice(0, resultBounds.phases),
  );
}

/** PURE: a locked URL cut to the status bound (the build step's schema already keeps it there). */
export function boundUrl(url: string): string {
  return url.length <= resultBounds.url ? url : `${url.slice(0, resultBounds.url - 1)}…`;
}
