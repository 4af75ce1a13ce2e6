import { readFile } from "node:fs/promises";
import { z } from "zod";
import { DENIED_ADDRESS_RANGES } from "../flake/address-policy.ts";
import { defaultFlakeRefPolicy, FlakeRefPolicySchema } from "../flake/flake-ref-policy.ts";
import { durationPattern } from "../api/duration.ts";
import { quantityPattern, substituterPattern, trustedPublicKeyPattern } from "../api/patterns.ts";
import { describeZodError } from "../api/describe-issues.ts";

/**
 * Operator configuration: one zod schema, defaults for everything, loaded from a YAML/JSON file
 * (`--config` or NIX_IMAGE_OPERATOR_CONFIG) with a few environment overrides for the common knobs.
 */
const duration = z.string().regex(new RegExp(durationPattern), "must be a duration like 15s or 1m");
const quantity = z.string().max(32).regex(new RegExp(quantityPattern), "must be a quantity like 500m, 2 or 4Gi");
const quantityMap = z.strictObject({ cpu: quantity.optional(), memory: quantity.optional() });

const cidr = z
  .string()
  .max(64)
  .regex(/^([0-9]{1,3}(\.[0-9]{1,3}){3}\/[0-9]{1,2}|[0-9a-fA-F:]+\/[0-9]{1,3})$/, "must be a CIDR like 10.0.0.0/8 or fd00::/8");

/**
 * Denied to builder pods by default: every range the flake ref policy refuses as an address
 * literal (private, CGNAT, loopback, link-local with the cloud metadata endpoint 169.254.169.254,
 * unspecified, multicast, reserved and their IPv6 counterparts), from the one list in
 * address-policy.ts. Admission cannot resolve a host name; a name that resolves into one of these
 * ranges (`10.0.0.1.nip.io`) is stopped here, by the network. Pod and service ranges, nodes and
 * load balancers of nearly every cluster live there.
 */
export const defaultDeniedCidrs: readonly string[] = DENIED_ADDRESS_RANGES.map((r) => r.cidr);

/** Every builder step gets these unless the NixImage's spec.build.resources says otherwise. */
const defaultStepResources = { requests: { cpu: "100m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } };

/**
 * What Nix running as root needs in the build step to build as the nixbld build users (sandbox
 * off): SETUID/SETGID to switch a builder to its build user; CHOWN to hand the build directory to
 * it and take the outputs back for root; FOWNER to fix modes and times of files the build user
 * made; DAC_OVERRIDE to read and delete what the build user left in directories it owns; KILL to
 * stop a build user's processes after a timeout. Nothing else of the runtime's defaults (NET_RAW,
 * MKNOD, SETFCAP, SETPCAP, SYS_CHROOT, AUDIT_WRITE, FSETID, NET_BIND_SERVICE) is needed.
 */
export const defaultBuildCapabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"] as const;
const buildCapabilityNames = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID", "FSETID"] as const;

const secretName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "must be a Secret name");
const secretKey = z
  .string()
  .max(253)
  .regex(/^[-._a-zA-Z0-9]+$/, "must be a Secret key");

export const registryConfigSchema = z.strictObject({
  host: z.string().min(1).describe("host[:port] as in image references"),
  plainHttp: z.boolean().default(false).describe("Talk plain HTTP to this registry (tests, local registries only)"),
  caFile: z.string().optional().describe("PEM bundle to trust for this registry's TLS certificate"),
  caBundle: z
    .strictObject({ configMap: secretName, key: secretKey.default("ca.crt") })
    .optional()
    .describe(
      "A ConfigMap of this name in each NixImage's namespace (as trust-manager distributes bundles) with a PEM CA bundle: builds pushing to this registry trust it in the push, fetch and build steps",
    ),
});

/**
 * The cluster binary cache (issue 14): builds substitute from it, and after a successful build a
 * separate step (signing key and credentials, no flake code) copies the closure to it. The
 * Secrets are read in each NixImage namespace (a pod can mount only its own namespace's Secrets).
 */
export const binaryCacheConfigSchema = z.strictObject({
  url: z
    .string()
    .max(1024)
    .regex(/^(https|s3|http):\/\/[^\s@]+$/, "must be an https://, s3:// or http:// URL without credentials")
    .describe("Nix binary cache builds substitute from: https://, s3://, or http:// inside the cluster (signatures are checked either way)"),
  uploadUrl: z
    .string()
    .max(1024)
    .regex(/^(https|s3|http|file):\/\/[^\s@]+$/, "must be an https://, s3://, http:// or file:// URL without credentials")
    .optional()
    .describe("Where the cache step copies closures (nix copy --to); default url. Store parameters like ?compression=zstd go here"),
  publicKeys: z
    .array(z.string().regex(/^[A-Za-z0-9._-]{1,100}:[A-Za-z0-9+/]{20,100}={0,2}$/, "must be name:base64key"))
    .min(1)
    .max(8)
    .describe("Keys builds trust for it (nix key convert-secret-to-public)"),
  signingKeySecret: z
    .strictObject({ name: secretName, key: secretKey.default("secret-key") })
    .describe("Secret (in each NixImage namespace) with the key from nix key generate-secret; mounted only in the cache step"),
  credentialsSecret: z
    .strictObject({
      name: secretName,
      key: secretKey.default("credentials"),
      type: z.enum(["aws", "netrc"]).describe("aws: an AWS shared credentials file (s3://); netrc: a netrc file (https:// uploads)"),
    })
    .optional()
    .describe("Upload credentials, mounted only in the cache step"),
});
export type BinaryCacheConfig = z.output<typeof binaryCacheConfigSchema>;

export const operatorConfigSchema = z.strictObject({
  namespaces: z.array(z.string()).default([]).describe("Namespaces to watch; empty means all"),
  concurrency: z
    .strictObject({
      builds: z.number().int().min(1).max(1000).default(4).describe("Builds running at once, all namespaces together"),
      reconcilers: z.number().int().min(1).max(64).default(4).describe("Concurrent reconcile workers"),
    })
    .prefault({}),
  store: z
    .strictObject({
      poolSize: z.number().int().min(1).max(32).default(2).describe("Store volumes per namespace = builds at once per namespace"),
      size: z.string().default("20Gi"),
      storageClassName: z.string().optional(),
      accessMode: z.enum(["ReadWriteOncePod", "ReadWriteOnce"]).default("ReadWriteOncePod"),
      gcThresholdPercent: z.number().int().min(1).max(99).default(80),
      keepSuccessful: z.number().int().min(1).max(100).default(5).describe("GC roots kept per image"),
    })
    .prefault({}),
  builder: z
    .strictObject({
      nixImage: z.string().default("ghcr.io/niximage/nix-builder:2.28").describe("Image of the prepare and build steps (Nix, git, CA certs)"),
      pushImage: z.string().default("ghcr.io/niximage/nix-image-operator:0.1.0").describe("Image of the push step (this operator)"),
      imagePullPolicy: z.enum(["Always", "IfNotPresent", "Never"]).default("IfNotPresent"),
      serviceAccountName: z.string().optional().describe("ServiceAccount of builder pods; its token is never mounted"),
      resources: z
        .strictObject({ requests: quantityMap.optional(), limits: quantityMap.optional() })
        .default(defaultStepResources)
        .describe("Requests/limits of every builder step; a NixImage's spec.build.resources is laid over them key by key"),
      buildCapabilities: z
        .array(z.enum(buildCapabilityNames))
        .default([...defaultBuildCapabilities])
        .describe(
          "Capabilities the build step keeps (all others are dropped): what Nix as root needs to run builds as nixbld build users. [] for a single-user builder image (build-users-group empty)",
        ),
      workSizeLimit: quantity.default("1Gi").describe("sizeLimit of the emptyDir the steps hand results over in (/work)"),
      tmpSizeLimit: quantity.default("10Gi").describe("sizeLimit of the build step's /tmp emptyDir (HOME, Nix's fetcher cache, build directories)"),
      networkPolicy: z
        .strictObject({
          enabled: z.boolean().default(true).describe("Apply the builder NetworkPolicy in each namespace before its first build (needs an enforcing CNI)"),
          deniedCidrs: z
            .array(cidr)
            .default([...defaultDeniedCidrs])
            .describe("Destinations builder pods may not reach (beyond DNS): the cluster's pod/service ranges, nodes, cloud metadata"),
          allowedCidrs: z.array(cidr).default([]).describe("Destinations allowed even inside deniedCidrs, e.g. an in-cluster registry's range"),
          ports: z
            .array(z.strictObject({ port: z.number().int().min(1).max(65535), protocol: z.enum(["TCP", "UDP"]).default("TCP") }))
            .default([])
            .describe("Destination ports builder pods may use (DNS aside); empty: all"),
        })
        .prefault({}),
    })
    .prefault({}),
  build: z
    .strictObject({
      retry: z
        .strictObject({
          limit: z
            .number()
            .int()
            .min(0)
            .max(20)
            .default(3)
            .describe("Retries of a build that failed transiently (registry outage, evicted pod, lost result); 0: none"),
          baseDelay: duration.default("30s").describe("Wait before the first retry; doubled for each further one"),
          maxDelay: duration.default("10m").describe("Longest wait between retries"),
        })
        .prefault({}),
    })
    .prefault({}),
  warm: z
    .strictObject({
      startingDeadline: duration
        .default("1h")
        .describe(
          "A warm build whose start no controller saw within this long after its time (the operator was down or not leading) is skipped with a WarmBuildSkipped Event instead of run late; one waiting for a build slot is not skipped",
        ),
      spread: duration
        .default("10m")
        .describe("Warm builds of one slot start spread over this long, at a fixed offset per NixImage (at most half the time to the next slot)"),
    })
    .prefault({}),
  flakeRefPolicy: FlakeRefPolicySchema.default(defaultFlakeRefPolicy),
  nixConfigAllowlist: z
    .strictObject({
      substituters: z
        .array(z.string().max(512).regex(new RegExp(substituterPattern)))
        .max(64)
        .default([])
        .describe("Binary caches NixImages may add"),
      trustedPublicKeys: z
        .array(z.string().max(128).regex(new RegExp(trustedPublicKeyPattern)))
        .max(64)
        .default([])
        .describe("Signing keys NixImages may trust"),
    })
    .prefault({})
    .describe("What spec.build.nixConfig may pick from (store volumes are shared in a namespace); anything else is refused at reconcile"),
  registries: z.array(registryConfigSchema).default([]),
  metrics: z.strictObject({ address: z.string().default("0.0.0.0:8080") }).prefault({}),
  webhook: z
    .strictObject({
      enabled: z.boolean().default(false).describe("Serve the forge webhook receiver (push-triggered revision checks)"),
      address: z.string().default("0.0.0.0:8081").describe("HOST:PORT of the receiver (plain HTTP: terminate TLS at the Ingress)"),
      path: z
        .string()
        .regex(/^\/[A-Za-z0-9._~/-]*$/, "must be an absolute URL path")
        .default("/webhook"),
      secretFile: z
        .string()
        .default("/var/run/niximage/webhook/secret")
        .describe("File holding the shared secret (a mounted Secret key); read per delivery, never logged"),
      maxBodyBytes: z
        .number()
        .int()
        .min(1024)
        .max(25 * 1024 * 1024)
        .default(4 * 1024 * 1024)
        .describe("Larger bodies get 413 (GitHub sends at most 25 MB; a push of many commits is a few MB)"),
      rememberDeliveries: z.number().int().min(0).max(1_000_000).default(10_000).describe("Delivery ids kept to refuse replays (409)"),
    })
    .prefault({}),
  leaderElection: z
    .strictObject({
      enabled: z.boolean().default(true),
      namespace: z.string().default("nix-image-operator"),
      leaseName: z.string().default("nix-image-operator"),
      leaseDuration: duration.default("15s"),
      renewDeadline: duration.default("10s"),
      retryPeriod: duration.default("2s"),
    })
    .prefault({}),
  binaryCache: binaryCacheConfigSchema.optional().describe("Cluster binary cache; off when absent"),
  resyncPeriod: duration.default("10m").describe("Full re-reconcile of every NixImage even without events"),
  logLevel: z.enum(["trace", "debug", "info", "warn", "error", "fatal"]).default("info"),
});

export type OperatorConfig = z.output<typeof operatorConfigSchema>;
export type OperatorConfigInput = z.input<typeof operatorConfigSchema>;

/** Environment variables that override single settings (container-friendly). */
const envOverrides: { env: string; apply: (config: Record<string, unknown>, value: string) => void }[] = [
  { env: "LOG_LEVEL", apply: (c, v) => (c.logLevel = v) },
  {
    env: "WATCH_NAMESPACES",
    apply: (c, v) =>
      (c.namespaces = v
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)),
  },
  { env: "METRICS_ADDRESS", apply: (c, v) => (c.metrics = { ...(c.metrics as object), address: v }) },
  { env: "WEBHOOK_ADDRESS", apply: (c, v) => (c.webhook = { ...(c.webhook as object), address: v }) },
  { env: "LEADER_ELECTION_NAMESPACE", apply: (c, v) => (c.leaderElection = { ...(c.leaderElection as object), namespace: v }) },
];

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Validates raw config; the error lists every problem as `field: message`. */
export function parseOperatorConfig(raw: unknown, source = "config"): OperatorConfig {
  const result = operatorConfigSchema.safeParse(raw ?? {});
  if (!result.success) {
    throw new ConfigError(
      `invalid ${source}:\n${describeZodError(result.error)
        .map((line) => `  ${line}`)
        .join("\n")}`,
    );
  }
  return result.data;
}

export interface LoadConfigOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
}

/** Reads the file (if any), applies environment overrides, validates. */
export async function loadOperatorConfig(options: LoadConfigOptions = {}): Promise<OperatorConfig> {
  const env = options.env ?? process.env;
  const file = options.file ?? env.NIX_IMAGE_OPERATOR_CONFIG;
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      throw new ConfigError(`cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
    // yaml is loaded only when there is a file to parse (steps mostly run without one).
    const { parse: parseYaml } = await import("yaml");
    try {
      raw = (parseYaml(text) as Record<string, unknown> | null) ?? {};
    } catch (error) {
      // The YAML error names the line; it does not echo the whole file.
      throw new ConfigError(`config file ${file} is not valid YAML: ${(error as Error).message.split("\n")[0]}`);
    }
    if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(`config file ${file} must hold a mapping`);
  }
  for (const override of envOverrides) {
    const value = env[override.env];
    if (value !== undefined && value !== "") override.apply(raw, value);
  }
  return parseOperatorConfig(raw, file ? `config file ${file}` : "config");
}
