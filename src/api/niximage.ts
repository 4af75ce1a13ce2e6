import { z } from "zod";
import { cronPattern, checkCronSchedule, isKnownTimeZone } from "./cron-schedule.ts";
import { durationPattern, parseDuration } from "./duration.ts";
import {
  dnsSubdomainPattern,
  envNamePattern,
  exposedPortPattern,
  labelKeyPattern,
  quantityPattern,
  repositoryPattern,
  substituterPattern,
  tagPattern,
  timeZonePattern,
  trustedPublicKeyPattern,
} from "./patterns.ts";
import { refineWith, withRules } from "./validation-rule.ts";
import { celString } from "./cel.ts";
import {
  ATTRIBUTE_REGEX_SOURCE,
  checkAttribute,
  checkFlakeRef,
  defaultFlakeRefPolicy,
  flakeRefAddressCelRegexes,
  flakeRefCelRegex,
  flakeRefSemanticCelRules,
  type FlakeRefPolicy,
} from "../flake/flake-ref-policy.ts";

/**
 * The NixImage API (niximage.io/v1alpha1), defined once. The same schema gives the TypeScript
 * types, runtime validation (CLI `validate`, controller) and the CRD's openAPIV3Schema
 * (`npm run gen:crd`). Every string and list has a bound: the API server needs them to
 * estimate the cost of CEL rules, and users need them to get a clear error instead of a
 * 3 MB object in etcd.
 */

export const group = "niximage.io";
export const version = "v1alpha1";
const apiVersion = `${group}/${version}`;
export const kind = "NixImage";
export const plural = "niximages";

const re = (pattern: string) => new RegExp(pattern);

const boundedString = (max: number) => z.string().max(max);
/** A string map with checked keys; the bound is the CRD's maxProperties, which CEL needs for its cost estimate. */
const boundedMap = (key: z.ZodString, value: z.ZodString, max = 64) =>
  z
    .record(key, value)
    .refine((map) => Object.keys(map).length <= max, `must have at most ${max} entries`)
    .meta({ maxProperties: max });
const objectName = z.string().min(1).max(253).regex(re(dnsSubdomainPattern), "must be a lowercase RFC 1123 name, like regcred");
const localObjectReference = z.strictObject({ name: objectName });

const duration = (what: string, min: string, max: string) =>
  withRules(z.string().max(32).regex(re(durationPattern), `must be a duration like 30s, 5m or 1h (${what})`), [
    {
      cel: `duration(self) >= duration('${min}') && duration(self) <= duration('${max}')`,
      check: (self) => parseDuration(self) >= parseDuration(min) && parseDuration(self) <= parseDuration(max),
      message: `must be between ${min} and ${max}`,
    },
  ]);

// The API server checks the pattern; `checkAttribute` says which character is wrong.
const attribute = refineWith(z.string().min(1).max(256), checkAttribute).meta({ pattern: ATTRIBUTE_REGEX_SOURCE });

export const imageConfigSchema = z
  .strictObject({
    entrypoint: z.array(boundedString(4096)).max(64).optional().describe("Image Entrypoint; default <out>/bin/<mainProgram or name> for a plain package."),
    cmd: z.array(boundedString(4096)).max(64).optional().describe("Image Cmd (arguments to the entrypoint)."),
    env: z
      .array(
        z.strictObject({
          name: z.string().min(1).max(256).regex(re(envNamePattern), "must be an environment variable name like APP_PORT"),
          value: boundedString(8192),
        }),
      )
      .max(128)
      .optional()
      .describe("Environment of the image; PATH and SSL_CERT_FILE are set when absent."),
    workingDir: boundedString(1024).optional(),
    user: z
      .string()
      .max(64)
      .regex(/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$/, "must be a user[:group] name or id, like 65532:65532")
      .optional(),
    exposedPorts: z
      .array(z.string().max(12).regex(re(exposedPortPattern), "must be a port 1-65535 with an optional protocol, like 8080 or 53/udp"))
      .max(64)
      .optional(),
    labels: boundedMap(
      z.string().max(253).regex(re(labelKeyPattern), "keys must be label keys like org.opencontainers.image.source"),
      boundedString(1024),
    ).optional(),
  })
  .describe("OCI image configuration for a plain package (ignored for prebuilt image formats except labels).");

const imageSchema = z
  .strictObject({
    repository: z
      .string()
      .max(255)
      .regex(re(repositoryPattern), "must be a repository with an explicit registry host and no tag or digest, like registry.example.com/team/web")
      .describe("Repository to push to, e.g. registry.example.com/acme/web."),
    tags: z
      .array(z.string().regex(re(tagPattern), "must be a tag: letters, digits, _ . - (up to 128, not starting with . or -)"))
      .max(16)
      .optional()
      .describe("Extra tags; an immutable tag per revision is always pushed."),
    pushSecretRef: localObjectReference.optional().describe("A kubernetes.io/dockerconfigjson Secret in the same namespace, mounted only in the push step."),
    config: imageConfigSchema.optional(),
    maxLayers: z.number().int().min(1).max(125).default(100).describe("Upper bound on image layers (the app's own paths are always last)."),
    compression: z.enum(["none", "gzip"]).default("none").describe("Layer compression; none gives digests equal to diff_ids and stable across tools."),
    attestations: z
      .strictObject({
        sbom: z.boolean().default(true).describe("Attach a CycloneDX 1.6 SBOM of the image's runtime closure as an OCI referrer."),
        provenance: z.boolean().default(true).describe("Attach a SLSA v1 provenance (in-toto statement) as an OCI referrer."),
        signingKeySecretRef: localObjectReference
          .optional()
          .describe(
            "A Secret with `cosign.key` (ECDSA P-256 PEM, plain or cosign-encrypted) and optionally `cosign.password`, as `cosign generate-key-pair k8s://NS/NAME` makes it; mounted only in the push step. The image and the attestations are then signed (cosign .sig/.att).",
          ),
      })
      .optional()
      .describe("Proof attached to the pushed digest (the image digest itself does not change). SBOM and provenance are on when absent."),
  })
  .describe("Where and how the image is pushed.");

const triggersSchema = z.strictObject({
  interval: duration("revision polling interval", "30s", "168h")
    .optional()
    .describe("Poll the flake ref for a new revision this often; no build when it is unchanged."),
});

const warmSchema = withRules(
  z.strictObject({
    schedule: refineWith(z.string().max(128), checkCronSchedule).meta({ pattern: cronPattern }).describe("When to run the warm build (cron, 5 fields)."),
    timeZone: z
      .string()
      .max(64)
      .regex(re(timeZonePattern), "must be an IANA time zone like Europe/Berlin")
      .refine(isKnownTimeZone, "is not a known IANA time zone (like Europe/Berlin or UTC)")
      // CEL has no "is this a zone" test, but evaluating a time in an unknown zone is an error
      // the API server reports as a rejection.
      .meta({
        "x-kubernetes-validations": [
          { rule: "timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0", message: "is not a known IANA time zone (like Europe/Berlin or UTC)" },
        ],
      })
      .optional()
      .describe("IANA time zone of the schedule; UTC when absent."),
    attributes: z.array(attribute).max(32).optional().describe("Extra flake outputs to keep warm in the store."),
    updateInputs: z.boolean().default(false).describe("Build against freshly updated inputs and report the closure difference; never rolls out."),
  }),
  [
    {
      cel: "!has(self.attributes) || self.attributes.all(a, self.attributes.exists_one(b, b == a))",
      check: (self) => new Set(self.attributes ?? []).size === (self.attributes ?? []).length,
      message: "must not list an attribute twice",
      field: ".attributes",
      reason: "FieldValueDuplicate",
    },
  ],
).describe("Scheduled cache-warm builds.");

const rolloutSchema = withRules(
  z.strictObject({
    policy: z.enum(["Automatic", "Disabled"]).default("Automatic").describe("Automatic patches opted-in workloads; Disabled only builds and pushes."),
    rollbackOnFailure: z
      .boolean()
      .default(false)
      .describe(
        "Restore the previous digest when a rollout fails: a Deployment reports ProgressDeadlineExceeded, a StatefulSet or DaemonSet is not ready within progressDeadline.",
      ),
    progressDeadline: duration("rollout progress deadline", "10s", "24h")
      .default("10m")
      .describe(
        "How long a StatefulSet or DaemonSet may take to run a new digest ready before its rollout counts as failed (Deployments use their own progressDeadlineSeconds).",
      ),
  }),
  [
    {
      // Guarded with has(): the API server also checks the rule against the `{}` default.
      cel: "!(has(self.policy) && self.policy == 'Disabled' && has(self.rollbackOnFailure) && self.rollbackOnFailure)",
      check: (self) => !(self.policy === "Disabled" && self.rollbackOnFailure),
      message: "rollbackOnFailure needs policy Automatic: with Disabled nothing is rolled out",
      field: ".rollbackOnFailure",
    },
  ],
);

const quantity = z.string().max(32).regex(re(quantityPattern), "must be a quantity like 500m, 2 or 4Gi");
const quantityMap = z.strictObject({ cpu: quantity.optional(), memory: quantity.optional(), "ephemeral-storage": quantity.optional() });

const buildSchema = z.strictObject({
  timeout: duration("build timeout", "1m", "24h").default("1h").describe("Deadline of the builder Job (activeDeadlineSeconds)."),
  resources: z.strictObject({ requests: quantityMap.optional(), limits: quantityMap.optional() }).optional(),
  nodeSelector: boundedMap(z.string().max(317).regex(re(labelKeyPattern), "keys must be label keys like kubernetes.io/arch"), z.string().max(63)).optional(),
  tolerations: z
    .array(
      z.strictObject({
        key: z.string().max(317).optional(),
        operator: z.enum(["Exists", "Equal"]).optional(),
        value: z.string().max(63).optional(),
        effect: z.enum(["NoSchedule", "PreferNoSchedule", "NoExecute"]).optional(),
        tolerationSeconds: z.number().int().min(0).max(31_536_000).optional(),
      }),
    )
    .max(32)
    .optional(),
  nixConfig: z
    .strictObject({
      substituters: z
        .array(z.string().max(512).regex(re(substituterPattern), "must be an https:// binary cache URL"))
        .max(16)
        .optional(),
      trustedPublicKeys: z
        .array(z.string().max(128).regex(re(trustedPublicKeyPattern), "must be name:base64-key, like cache.example.org-1:AbC...="))
        .max(16)
        .optional(),
    })
    .optional()
    .describe("Extra binary caches; only these two settings are accepted (no arbitrary nix.conf)."),
  caBundleRef: z
    .strictObject({
      name: objectName,
      key: z
        .string()
        .max(253)
        .regex(/^[-._a-zA-Z0-9]+$/, "must be a ConfigMap key")
        .default("ca.crt"),
    })
    .optional()
    .describe(
      "ConfigMap in this namespace with a PEM CA bundle (e.g. one trust-manager distributes), trusted by the fetch and build steps' Nix (ssl-cert-file) and git and by the push step's registry client; wins over the operator's per-registry bundle. It replaces the default trust store: include the public CAs too if builds reach public hosts.",
    ),
  allowImportFromDerivation: z
    .boolean()
    .default(false)
    .describe("Allow import-from-derivation during evaluation (off by default: it runs builds at eval time)."),
});

const historyLimitSchema = z.strictObject({
  successful: z.number().int().min(0).max(100).default(5),
  failed: z.number().int().min(0).max(100).default(5),
});

const formatSchema = z
  .enum(["auto", "package", "docker-archive", "stream-layered", "nix2container"])
  .default("auto")
  .describe("What the attribute builds: a package (image made from its closure) or an image some tools already make; auto detects it.");

export function makeNixImageSpecSchema(policy: FlakeRefPolicy) {
  const flakeRegex = flakeRefCelRegex(policy);
  const address = flakeRefAddressCelRegexes(policy);
  const flakeProblem = (value: string) => {
    const verdict = checkFlakeRef(value, policy, { hasSshKey: true });
    return verdict.ok ? undefined : verdict.reason;
  };
  const flake = refineWith(z.string().min(1).max(1024), flakeProblem)
    .meta({
      "x-kubernetes-validations": [
        { rule: "!self.contains('#')", message: "must not contain a #fragment: put the output in spec.attribute" },
        {
          rule: `self.matches(${celString(flakeRegex)})`,
          message: `is not an allowed flake ref: use ${policy.allowedSchemes.join(", ")} (an operator admin can widen flakeRefPolicy.allowedSchemes)`,
        },
        {
          rule: `!self.matches(${celString(address.denied)}) || self.matches(${celString(address.allowed)})`,
          message:
            "names a host by an IP address in a loopback, private, link-local, unspecified, multicast or reserved range (in any spelling), or localhost: flake refs must not reach the cluster's own networks (SSRF); use a public host name (an operator admin can allow a range in flakeRefPolicy.allowedAddressRanges)",
        },
        ...flakeRefSemanticCelRules().map(({ denied, message }) => ({ rule: `!self.matches(${celString(denied)})`, message })),
      ],
    })
    .describe("Flake reference without fragment, e.g. github:acme/shop?ref=main. Untrusted input: checked against the operator's flake ref policy.");

  return withRules(
    z.strictObject({
      flake,
      attribute: attribute.default("default").describe("Flake output to build, like `nix build REF#attribute`."),
      format: formatSchema,
      sshKeySecretRef: localObjectReference
        .optional()
        .describe("Secret with ssh-privatekey and known_hosts (host keys are checked) for git+ssh flake refs and inputs; mounted in the fetch step only."),
      sourceCredentialsSecretRef: localObjectReference
        .optional()
        .describe(
          "Secret for private flake sources and inputs, mounted in the fetch step only (the build step runs without it). Keys, each optional: netrc (git+https, https, tarball+https), access-tokens (Nix's format: github.com=TOKEN gitlab.example.com=PAT:TOKEN), ssh-privatekey and known_hosts (git+ssh).",
        ),
      image: imageSchema,
      triggers: triggersSchema.optional(),
      warm: warmSchema.optional(),
      rollout: rolloutSchema.prefault({}),
      build: buildSchema.prefault({}),
      suspend: z.boolean().default(false).describe("Stop polling, scheduling and starting builds; a running build finishes."),
      historyLimit: historyLimitSchema.prefault({}).describe("How many finished builder Jobs to keep."),
    }),
    [
      {
        cel: "!self.flake.startsWith('git+ssh://') || has(self.sshKeySecretRef) || has(self.sourceCredentialsSecretRef)",
        check: (self) => !self.flake.startsWith("git+ssh://") || self.sshKeySecretRef !== undefined || self.sourceCredentialsSecretRef !== undefined,
        message: "a git+ssh flake ref needs sshKeySecretRef or sourceCredentialsSecretRef (a Secret with ssh-privatekey and known_hosts)",
        field: ".sshKeySecretRef",
        reason: "FieldValueRequired",
      },
    ],
  );
}

// ---- status -------------------------------------------------------------------------------

const time = z.string().max(64).describe("RFC 3339 time");
const digest = z
  .string()
  .max(80)
  .regex(/^sha256:[a-f0-9]{64}$/);

const conditionSchema = z.strictObject({
  type: z.string().max(316),
  status: z.enum(["True", "False", "Unknown"]),
  observedGeneration: z.number().int().min(0).optional(),
  lastTransitionTime: time,
  reason: z.string().max(1024),
  message: z.string().max(32768),
});

const revisionSchema = z.strictObject({
  url: z.string().max(2048).describe("Locked flake ref"),
  rev: z.string().max(64).optional(),
  lastModified: z.number().int().optional(),
  narHash: z.string().max(128).optional(),
});

const buildRecordSchema = z.strictObject({
  job: z.string().max(253),
  number: z.number().int().min(0),
  kind: z.enum(["Image", "Warm"]).optional(),
  reasons: z.array(z.string().max(64)).max(16),
  startTime: time.optional(),
  completionTime: time.optional(),
  result: z
    .enum(["Running", "Succeeded", "Failed", "Unchanged"])
    .describe("Unchanged: the revision evaluated to the Nix output of the image in use; nothing was pushed or rolled out"),
  digest: digest.optional(),
  outPath: z.string().max(512).optional().describe("Nix store path the image was made from"),
  revision: revisionSchema.optional(),
  layers: z.strictObject({ pushed: z.number().int(), skipped: z.number().int(), mounted: z.number().int().optional() }).optional(),
  bytesPushed: z.number().int().optional(),
  attestations: z
    .strictObject({ sbom: digest.optional(), provenance: digest.optional(), signature: digest.optional(), attestations: digest.optional() })
    .optional()
    .describe("Manifest digests of the SBOM and provenance referrers and of the cosign signature (.sig) and attestation (.att) manifests"),
  durations: z.record(z.string().max(32), z.number()).optional().describe("Seconds per phase"),
  specHash: z.string().max(64).optional().describe("Hash of the spec fields that shape the image"),
  builderHash: z.string().max(64).optional().describe("Hash of the builder images"),
  rebuildToken: z.string().max(256).optional().describe(`Value of the rebuild annotation this build answered`),
  flake: z.string().max(2048).optional().describe("Flake ref built, pinned to the polled revision"),
  attempt: z.number().int().min(1).optional().describe("Which try of the same inputs this build is, when not the first (after transient failures)"),
  failure: z
    .strictObject({
      step: z.string().max(63),
      exitCode: z.number().int().optional(),
      reason: z.string().max(256).optional(),
      message: z.string().max(4096),
      transient: z.boolean().optional().describe("The failure may pass (registry outage, evicted pod, lost result): retried with backoff"),
    })
    .optional(),
});

const rolloutTargetSchema = z.strictObject({
  kind: z.enum(["Deployment", "StatefulSet", "DaemonSet", "CronJob"]),
  name: z.string().max(253),
  container: z.string().max(63),
  image: z.string().max(512).optional(),
  ready: z.boolean().optional(),
  updatedReplicas: z.number().int().optional(),
  readyReplicas: z.number().int().optional(),
  message: z.string().max(1024).optional(),
  previousImage: z.string().max(512).optional().describe("Image before the operator's last patch (for rollback)"),
  rolledBackFrom: z.string().max(512).optional().describe("Digest rolled back after a failed rollout; not rolled out again"),
  patchedAt: time.optional().describe("When the operator set this image (its own progress deadline for StatefulSets and DaemonSets counts from here)"),
  contest: z
    .strictObject({
      by: z.string().max(512).optional().describe("Field manager(s) that set the image back (from the workload's managedFields)"),
      reverts: z.number().int().min(1).describe("Times the image was set back in this window"),
      since: time.describe("The first set-back of this window"),
      lastAt: time.describe("The latest set-back seen"),
    })
    .optional()
    .describe("Another writer sets this container's image back: the operator applies it again a few times per window, then waits (RolloutContested)"),
});

const closureChangeSchema = z.strictObject({
  name: z.string().max(256),
  from: z.string().max(128).optional(),
  to: z.string().max(128).optional(),
});

export const nixImageStatusSchema = z.strictObject({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: z
    .array(conditionSchema)
    .max(16)
    .optional()
    .meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] }),
  latestImage: z.string().max(512).optional(),
  latestRevision: revisionSchema.optional(),
  latestOutput: z
    .strictObject({
      outPath: z.string().max(512),
      digest,
      specHash: z.string().max(64).optional(),
      builderHash: z.string().max(64).optional(),
    })
    .optional()
    .describe("What latestImage was made from: a new revision with the same Nix output, spec and builder images is an exact no-op (Unchanged)"),
  lastBuild: buildRecordSchema.optional(),
  buildCount: z.number().int().min(0).optional(),
  rollout: z.array(rolloutTargetSchema).max(256).optional(),
  nextWarmBuild: time.optional(),
  lastWarmBuild: buildRecordSchema
    .extend({
      closureDiff: z
        .strictObject({
          added: z.array(closureChangeSchema).max(256),
          removed: z.array(closureChangeSchema).max(256),
          changed: z.array(closureChangeSchema).max(256),
          totals: z
            .strictObject({ added: z.number().int().min(0), removed: z.number().int().min(0), changed: z.number().int().min(0) })
            .optional()
            .describe("How many entries the full diff has: the lists hold as many as fit; the rest is in the report step's log"),
        })
        .optional(),
    })
    .optional(),
  lastPolledRevision: z.strictObject({ rev: z.string().max(64), time }).optional(),
});

const objectMeta = z
  .object({
    name: z.string().max(253).optional(),
    namespace: z.string().max(63).optional(),
    generation: z.number().optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    labels: z.record(z.string(), z.string()).optional(),
    uid: z.string().optional(),
    resourceVersion: z.string().optional(),
    deletionTimestamp: z.string().optional(),
    finalizers: z.array(z.string()).optional(),
  })
  .loose();

/**
 * The operator's allowlist of binary caches (operator config `nixConfigAllowlist`). Store volumes
 * are shared by the NixImages of a namespace, so a substituter or key one NixImage adds would feed
 * paths to all of them: a NixImage may only pick from what the operator allows (issue 12, item 2).
 */
export interface NixConfigAllowlist {
  substituters: readonly string[];
  trustedPublicKeys: readonly string[];
}

const withoutTrailingSlash = (url: string) => url.replace(/\/+$/, "");

/** PURE: the spec's nixConfig entries that the allowlist does not contain, as zod issues. */
function checkNixConfigAllowed(
  spec: { build: { nixConfig?: { substituters?: string[] | undefined; trustedPublicKeys?: string[] | undefined } | undefined } },
  allow: NixConfigAllowlist,
  ctx: z.RefinementCtx,
): void {
  const subs = new Set(allow.substituters.map(withoutTrailingSlash));
  const keys = new Set(allow.trustedPublicKeys);
  const listed = (items: readonly string[]) => (items.length ? items.join(", ") : "none");
  (spec.build.nixConfig?.substituters ?? []).forEach((url, i) => {
    if (!subs.has(withoutTrailingSlash(url))) {
      ctx.addIssue({
        code: "custom",
        path: ["build", "nixConfig", "substituters", i],
        message: `${url} is not a binary cache this operator allows (nixConfigAllowlist.substituters: ${listed(allow.substituters)}); store volumes are shared in the namespace, so an operator admin must allow a cache before a NixImage may use it`,
      });
    }
  });
  (spec.build.nixConfig?.trustedPublicKeys ?? []).forEach((key, i) => {
    if (!keys.has(key)) {
      ctx.addIssue({
        code: "custom",
        path: ["build", "nixConfig", "trustedPublicKeys", i],
        message: `${key.split(":")[0]} is not a signing key this operator allows (nixConfigAllowlist.trustedPublicKeys); an operator admin must allow a key before a NixImage may trust it`,
      });
    }
  });
}

export function makeNixImageSchema(policy: FlakeRefPolicy = defaultFlakeRefPolicy, nixConfigAllowlist?: NixConfigAllowlist) {
  const spec = makeNixImageSpecSchema(policy);
  return z.strictObject({
    apiVersion: z.literal(apiVersion),
    kind: z.literal(kind),
    metadata: objectMeta,
    spec: nixConfigAllowlist ? spec.superRefine((value, ctx) => checkNixConfigAllowed(value, nixConfigAllowlist, ctx)) : spec,
    status: nixImageStatusSchema.optional(),
  });
}

export const nixImageSchema = makeNixImageSchema(defaultFlakeRefPolicy);

/** A NixImage after defaulting: what the controller works with. */
export type NixImage = z.output<typeof nixImageSchema>;
/** A NixImage as written by a user (defaults optional). */
export type NixImageInput = z.input<typeof nixImageSchema>;
export type NixImageStatus = z.output<typeof nixImageStatusSchema>;
export type Condition = z.output<typeof conditionSchema>;
export type BuildRecord = z.output<typeof buildRecordSchema>;
export type RolloutTarget = z.output<typeof rolloutTargetSchema>;
