import type { V1Container, V1Job, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import type { NixImage } from "../api/niximage.ts";
import { parseDuration } from "../api/duration.ts";
import type { OperatorConfig } from "../config/operator-config.ts";
import { annotations, buildJobName, labels, managedByValue } from "./names.ts";
import { stepResources } from "./step-resources.ts";

/**
 * The builder Job of one build (design.md sections 3 and 10): pure, so its exact shape is pinned
 * by snapshot tests. One function per step; the steps of one pod, in order:
 *
 *   prepare (init, builder image)  seeds the store volume from the image's own /nix on first use
 *   fetch   (init, builder image)  private sources only: the one step with the source credential;
 *                                  fetches the flake and its inputs into the store, runs no flake code
 *   build   (init, builder image)  runs the untrusted flake: no Secret, no service account token
 *   push    (main, operator image) reads the result and the store read-only, pushes with the Secret
 *   stream  (main, builder image)  image builds: runs a streamLayeredImage script for push, no Secret
 *   report  (main, builder image)  warm builds, instead of push/stream: reports what was built
 *   cache   (main, builder image)  with config.binaryCache: copies the closure with the signing key
 *
 * Each step's last log lines become its termination message on failure, which the controller
 * copies into status; the push step writes its JSON result there on success.
 *
 * Posture (docs/security.md): every step drops ALL capabilities, has no privilege escalation, the
 * runtime's default seccomp profile, a read-only root filesystem and the same requests/limits
 * (operator config, spec.build.resources over it); emptyDirs have size limits. push and report
 * run as uid 65532 and meet Pod Security `restricted`. prepare runs as root with CHOWN only: it
 * seeds a root-owned store (Nix's store belongs to root, build users must not own it) and hands
 * the layer cache directory to uid 65532. build runs Nix as root with the capabilities it needs to
 * build as the nixbld build users (config builder.buildCapabilities).
 */

export interface BuilderJobInput {
  image: NixImage;
  kind: "Image" | "Warm";
  number: number;
  reasons: string[];
  /** Flake ref to build, pinned to the polled revision when there is one. */
  flake: string;
  storeVolume: string;
  specHash: string;
  builderHash: string;
  rebuildToken?: string;
  /** The controller's time when it decided on this build (RFC 3339). */
  requestedAt?: string;
  /** The image in use and the Nix output it was made from: the push step skips an identical output. */
  unchangedIf?: { outPath: string; digest: string };
  config: OperatorConfig;
}

const paths = {
  storeMount: "/nix",
  seedMount: "/nix-volume",
  work: "/work",
  result: "/work/result",
  pushSecret: "/var/run/niximage/push",
  cacheKey: "/var/run/niximage/cache-key",
  cacheCredentials: "/var/run/niximage/cache-credentials",
  signingKey: "/var/run/niximage/signing",
  layerCache: "/var/cache/niximage",
  tmp: "/tmp",
  stream: "/var/run/niximage/stream",
  sourceCredentials: "/var/run/niximage/source",
  fetchHome: "/fetch-home",
  fetchResult: "/work/fetch",
  caBundle: "/etc/niximage/ca",
};

/** The stream step's user: not root, not the push step's (which owns the layer cache). */
const streamUid = 65534;

/**
 * What lives where on a store volume: the Nix tree (mounted at /nix) and, beside it, the push
 * step's layer cache. The build step runs flake code as root on /nix, so the cache must not be
 * inside that tree: a forged entry could make the push step mount another repository's blob.
 */
const volumeLayout = { nix: "nix", layerCache: "layer-cache" } as const;

/** The push step's user (the operator image's): the prepare step gives it the layer cache. */
const pushUid = 65532;

const restricted = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
  readOnlyRootFilesystem: true,
};
const nonRoot = { runAsNonRoot: true, runAsUser: pushUid, runAsGroup: pushUid };

/** What every step function reads, and the pod's volumes, which the steps add to in pod order. */
interface StepContext {
  input: BuilderJobInput;
  spec: NixImage["spec"];
  config: OperatorConfig;
  jobName: string;
  volumes: V1Volume[];
  /** The pod-wide defaults of a step container (pull policy, termination message, resources). */
  step: (container: V1Container) => V1Container;
  /** The registry config of spec.image.repository's host, if any. */
  registry: OperatorConfig["registries"][number] | undefined;
  /** A corporate CA bundle mounted into the steps that talk TLS (fetch, build, push). */
  ca: { file: string; mounts: V1VolumeMount[] } | undefined;
}

export function builderJob(input: BuilderJobInput): V1Job {
  const { image, config } = input;
  const spec = image.spec;
  const resources = stepResources(config.builder.resources, spec.build.resources);
  const ctx: StepContext = {
    input,
    spec,
    config,
    jobName: buildJobName(image.metadata.name!, input.kind, input.number),
    volumes: [
      { name: "store", persistentVolumeClaim: { claimName: input.storeVolume } },
      { name: "work", emptyDir: { sizeLimit: config.builder.workSizeLimit } },
      { name: "tmp", emptyDir: { sizeLimit: config.builder.tmpSizeLimit } },
    ],
    step: (container) => ({ imagePullPolicy: config.builder.imagePullPolicy, terminationMessagePolicy: "FallbackToLogsOnError", resources, ...container }),
    registry: config.registries.find((r) => spec.image.repository.startsWith(`${r.host}/`)),
    ca: undefined,
  };
  // A corporate CA (issue 13 item 3): the NixImage's bundle, else its registry's (operator config).
  const ca = spec.build.caBundleRef ? { configMap: spec.build.caBundleRef.name, key: spec.build.caBundleRef.key } : ctx.registry?.caBundle;
  if (ca) {
    ctx.volumes.push({ name: "ca-bundle", configMap: { name: ca.configMap, items: [{ key: ca.key, path: "ca.crt" }] } });
    ctx.ca = { file: `${paths.caBundle}/ca.crt`, mounts: [{ name: "ca-bundle", mountPath: paths.caBundle, readOnly: true }] };
  }

  // Private sources (issue 13 item 2): the fetch step alone mounts the source credential and
  // fetches the flake and its locked inputs into the store; the build step builds from there.
  const sourceSecrets = [spec.sshKeySecretRef, spec.sourceCredentialsSecretRef].filter((r) => r !== undefined);
  const fetch = sourceSecrets.length > 0 ? fetchStep(ctx, sourceSecrets) : undefined;
  const initContainers = [prepareStep(ctx), ...(fetch ? [fetch] : []), buildStep(ctx, fetch !== undefined)];
  const containers = input.kind === "Image" ? pushAndStreamSteps(ctx) : [reportStep(ctx)];
  if (config.binaryCache) containers.push(cacheStep(ctx, config.binaryCache));
  return jobOf(ctx, initContainers, containers);
}

function prepareStep({ config, step }: StepContext): V1Container {
  return step({
    name: "prepare",
    image: config.builder.nixImage,
    // The push step runs as the operator image's non-root user and keeps its layer cache in its
    // own sub-directory of the volume, which the build step (flake code) never mounts.
    command: [
      "nix-image-operator",
      "prepare-store",
      "--volume",
      paths.seedMount,
      "--layer-cache",
      paths.layerCache,
      "--layer-cache-owner",
      String(pushUid),
      "--termination-message",
      "/dev/termination-log",
    ],
    volumeMounts: [
      { name: "store", mountPath: paths.seedMount, subPath: volumeLayout.nix },
      { name: "store", mountPath: paths.layerCache, subPath: volumeLayout.layerCache },
    ],
    // CHOWN only: --layer-cache-owner hands the layer cache directory to the push step's uid
    // (without it the step fails with EPERM in a real pod; seen on the e2e cluster).
    securityContext: { ...restricted, capabilities: { drop: ["ALL"], add: ["CHOWN"] } },
  });
}

function fetchStep({ input, config, volumes, step, ca }: StepContext, sourceSecrets: { name: string }[]): V1Container {
  const fetchArgs = ["fetch-step", "--flake", input.flake, "--out", paths.fetchResult, "--home", paths.fetchHome];
  const fetchMounts: V1VolumeMount[] = [
    { name: "store", mountPath: paths.storeMount, subPath: volumeLayout.nix },
    { name: "work", mountPath: paths.work },
    { name: "fetch-home", mountPath: paths.fetchHome },
    ...(ca?.mounts ?? []),
  ];
  volumes.push({ name: "fetch-home", emptyDir: { sizeLimit: config.builder.tmpSizeLimit } });
  sourceSecrets.forEach((ref, i) => {
    volumes.push({ name: `source-credentials-${i}`, secret: { secretName: ref.name, defaultMode: 0o400 } });
    fetchMounts.push({ name: `source-credentials-${i}`, mountPath: `${paths.sourceCredentials}/${i}`, readOnly: true });
    fetchArgs.push("--credentials-dir", `${paths.sourceCredentials}/${i}`);
  });
  if (ca) fetchArgs.push("--ca-file", ca.file);
  fetchArgs.push("--termination-message", "/dev/termination-log");
  return step({
    name: "fetch",
    image: config.builder.nixImage,
    command: ["nix-image-operator"],
    args: fetchArgs,
    // Its own HOME and temporary files (git clones, fetcher cache), which the build step never mounts.
    env: [
      { name: "HOME", value: paths.fetchHome },
      { name: "TMPDIR", value: paths.fetchHome },
      { name: "XDG_CACHE_HOME", value: `${paths.fetchHome}/.cache` },
    ],
    volumeMounts: fetchMounts,
    // Root on the root-owned store like the build step, with no capabilities: it builds nothing.
    securityContext: restricted,
  });
}

function buildStep({ input, spec, config, step, ca }: StepContext, fetched: boolean): V1Container {
  const { image } = input;
  const buildArgs = [
    "build-step",
    "--flake",
    input.flake,
    "--attribute",
    spec.attribute,
    "--format",
    spec.format,
    "--out",
    paths.result,
    "--gc-root-dir",
    `/nix/var/nix/gcroots/niximage/${image.metadata.namespace}/${image.metadata.name}`,
    "--keep",
    String(config.store.keepSuccessful),
    "--gc-threshold-percent",
    String(config.store.gcThresholdPercent),
    "--termination-message",
    "/dev/termination-log",
  ];
  for (const url of spec.build.nixConfig?.substituters ?? []) buildArgs.push("--substituter", url);
  for (const key of spec.build.nixConfig?.trustedPublicKeys ?? []) buildArgs.push("--trusted-public-key", key);
  // The cluster binary cache (operator config): substituted from, with its keys trusted.
  const cache = config.binaryCache;
  if (cache) {
    buildArgs.push("--cluster-cache", cache.url);
    for (const key of cache.publicKeys) buildArgs.push("--trusted-public-key", key);
  }
  if (spec.build.allowImportFromDerivation) buildArgs.push("--allow-import-from-derivation");
  // With build capabilities the image builds as nixbld users: the step refuses to build as root (issue 12, item 2).
  if (config.builder.buildCapabilities.length > 0) buildArgs.push("--require-build-users");
  if (input.kind === "Warm") {
    for (const attribute of spec.warm?.attributes ?? []) buildArgs.push("--extra-attribute", attribute);
    if (spec.warm?.updateInputs) buildArgs.push("--update-inputs");
  }
  if (ca) buildArgs.push("--ca-file", ca.file);
  if (fetched) buildArgs.push("--fetched", `${paths.fetchResult}/fetch.json`);
  return step({
    name: "build",
    image: config.builder.nixImage,
    command: ["nix-image-operator"],
    args: buildArgs,
    // Untrusted code: argv only, no env from Secrets, no token (automount is off for the pod).
    // HOME (Nix's fetcher and eval caches) and TMPDIR (build directories) on the tmp emptyDir:
    // the root filesystem is read-only.
    env: [{ name: "HOME", value: paths.tmp }],
    volumeMounts: [
      { name: "store", mountPath: paths.storeMount, subPath: volumeLayout.nix },
      { name: "work", mountPath: paths.work },
      { name: "tmp", mountPath: paths.tmp },
      ...(ca?.mounts ?? []),
    ],
    securityContext: {
      ...restricted,
      capabilities: { drop: ["ALL"], ...(config.builder.buildCapabilities.length ? { add: [...config.builder.buildCapabilities] } : {}) },
    },
  });
}

/** An image build's main containers: push (with the push Secret) and stream (the script, without). */
function pushAndStreamSteps({ input, spec, config, jobName, volumes, step, registry, ca }: StepContext): V1Container[] {
  const pushArgs = [
    "push-step",
    "--from",
    paths.result,
    "--image",
    spec.image.repository,
    "--max-layers",
    String(spec.image.maxLayers),
    "--compression",
    spec.image.compression,
    "--layer-cache",
    paths.layerCache,
    "--termination-message",
    "/dev/termination-log",
  ];
  for (const tag of spec.image.tags ?? []) pushArgs.push("--tag", tag);
  if (input.unchangedIf) pushArgs.push("--unchanged-out-path", input.unchangedIf.outPath, "--unchanged-digest", input.unchangedIf.digest);
  // Hand-off to an image updater (Flux, Argo CD Image Updater): a tag that sorts by build time.
  if (spec.rollout.policy === "Disabled" && input.requestedAt !== undefined) pushArgs.push("--sortable-tag-time", input.requestedAt);
  if (spec.image.config) pushArgs.push("--image-config", JSON.stringify(spec.image.config));
  if (registry?.plainHttp) pushArgs.push("--plain-http");
  if (ca) pushArgs.push("--ca-file", ca.file);
  // A streamLayeredImage script runs in the stream step and arrives through this socket.
  const socket = `${paths.stream}/archive.sock`;
  pushArgs.push("--stream-socket", socket);
  const pushMounts: V1VolumeMount[] = [
    { name: "store", mountPath: paths.storeMount, subPath: volumeLayout.nix, readOnly: true },
    { name: "store", mountPath: paths.layerCache, subPath: volumeLayout.layerCache },
    { name: "work", mountPath: paths.work, readOnly: true },
    { name: "stream", mountPath: paths.stream },
    ...(ca?.mounts ?? []),
  ];
  volumes.push({ name: "stream", emptyDir: { sizeLimit: "1Mi" } }, { name: "stream-tmp", emptyDir: { sizeLimit: config.builder.tmpSizeLimit } });

  if (spec.image.pushSecretRef) {
    volumes.push({
      name: "push-secret",
      // Default mode 0644 so the non-root push step can read it; streamLayeredImage scripts (flake
      // code) run in the stream step, which does not mount it.
      secret: { secretName: spec.image.pushSecretRef.name, items: [{ key: ".dockerconfigjson", path: "config.json" }] },
    });
    pushMounts.push({ name: "push-secret", mountPath: paths.pushSecret, readOnly: true });
    pushArgs.push("--auth-file", `${paths.pushSecret}/config.json`);
  }
  // SBOM, provenance and signatures of the pushed digest (the signing key only in this step).
  const attest = spec.image.attestations;
  if (attest?.sbom === false) pushArgs.push("--no-sbom");
  if (attest?.provenance === false) pushArgs.push("--no-provenance");
  pushArgs.push("--builder-image", config.builder.nixImage, "--job", jobName);
  if (attest?.signingKeySecretRef) {
    volumes.push({ name: "signing-key", secret: { secretName: attest.signingKeySecretRef.name } });
    pushMounts.push({ name: "signing-key", mountPath: paths.signingKey, readOnly: true });
    pushArgs.push("--sign-key", `${paths.signingKey}/cosign.key`, "--sign-key-password-file", `${paths.signingKey}/cosign.password`);
  }
  const push = step({
    name: "push",
    image: config.builder.pushImage,
    command: ["nix-image-operator"],
    args: pushArgs,
    volumeMounts: pushMounts,
    securityContext: { ...restricted, ...nonRoot },
  });
  // Flake code (issue 12, item 4): no Secret, no token, no layer cache, the store read-only, an
  // unprivileged uid; it exits at once unless the build made a streamLayeredImage script.
  const stream = step({
    name: "stream",
    image: config.builder.nixImage,
    command: ["nix-image-operator", "stream-step", "--from", paths.result, "--socket", socket, "--termination-message", "/dev/termination-log"],
    volumeMounts: [
      { name: "store", mountPath: paths.storeMount, subPath: volumeLayout.nix, readOnly: true },
      { name: "work", mountPath: paths.work, readOnly: true },
      { name: "stream", mountPath: paths.stream },
      { name: "stream-tmp", mountPath: paths.tmp },
    ],
    securityContext: { ...restricted, runAsNonRoot: true, runAsUser: streamUid, runAsGroup: streamUid },
    // Main containers run side by side, so their requests add up: the stream step gets the
    // config's defaults, not spec.build.resources, or every build would ask for twice that.
    resources: stepResources(config.builder.resources, undefined),
  });
  return [push, stream];
}

/** A warm build only fills the store; the pod still needs a main container to finish. */
function reportStep({ config, step }: StepContext): V1Container {
  return step({
    name: "report",
    image: config.builder.nixImage,
    command: ["nix-image-operator", "warm-report", "--from", paths.result, "--termination-message", "/dev/termination-log"],
    volumeMounts: [{ name: "work", mountPath: paths.work, readOnly: true }],
    securityContext: { ...restricted, ...nonRoot },
  });
}

/**
 * Copies the closure to the cluster cache, signed: the only step with the signing key and the
 * upload credentials; it runs `nix copy`, no flake code. Beside the push/report step.
 */
function cacheStep({ config, volumes, step }: StepContext, cache: NonNullable<OperatorConfig["binaryCache"]>): V1Container {
  const cacheArgs = ["cache-step", "--from", paths.result, "--to", cache.uploadUrl ?? cache.url, "--secret-key-file", `${paths.cacheKey}/secret-key`];
  const cacheMounts: V1VolumeMount[] = [
    // nix copy takes temporary GC roots and the store lock: the Nix tree read-write.
    { name: "store", mountPath: paths.storeMount, subPath: volumeLayout.nix },
    { name: "work", mountPath: paths.work, readOnly: true },
    { name: "cache-key", mountPath: paths.cacheKey, readOnly: true },
    // Nix's narinfo cache and temporary files (the root filesystem is read-only).
    { name: "cache-tmp", mountPath: "/tmp" },
  ];
  volumes.push({ name: "cache-tmp", emptyDir: {} });
  volumes.push({
    name: "cache-key",
    secret: { secretName: cache.signingKeySecret.name, items: [{ key: cache.signingKeySecret.key, path: "secret-key" }], defaultMode: 0o400 },
  });
  if (cache.credentialsSecret) {
    volumes.push({
      name: "cache-credentials",
      secret: { secretName: cache.credentialsSecret.name, items: [{ key: cache.credentialsSecret.key, path: "credentials" }], defaultMode: 0o400 },
    });
    cacheMounts.push({ name: "cache-credentials", mountPath: paths.cacheCredentials, readOnly: true });
    cacheArgs.push(cache.credentialsSecret.type === "aws" ? "--aws-credentials-file" : "--netrc-file", `${paths.cacheCredentials}/credentials`);
  }
  cacheArgs.push("--termination-message", "/dev/termination-log");
  return step({
    name: "cache",
    image: config.builder.nixImage,
    command: ["nix-image-operator"],
    args: cacheArgs,
    env: [
      { name: "HOME", value: "/tmp" },
      { name: "TMPDIR", value: "/tmp" },
      { name: "XDG_CACHE_HOME", value: "/tmp/.cache" },
    ],
    volumeMounts: cacheMounts,
    // Root like the build step (the store is root's), without capabilities.
    securityContext: restricted,
  });
}

function jobOf({ input, spec, config, jobName, volumes }: StepContext, initContainers: V1Container[], containers: V1Container[]): V1Job {
  const { image } = input;
  const podLabels = {
    [labels.managedBy]: managedByValue,
    [labels.image]: image.metadata.name!,
    [labels.buildKind]: input.kind,
    [labels.buildNumber]: String(input.number),
  };
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: jobName,
      namespace: image.metadata.namespace,
      labels: podLabels,
      annotations: {
        [annotations.reasons]: input.reasons.join(","),
        [annotations.specHash]: input.specHash,
        [annotations.builderHash]: input.builderHash,
        ...(input.rebuildToken !== undefined ? { [annotations.rebuildToken]: input.rebuildToken } : {}),
        [annotations.revision]: input.flake,
        ...(input.requestedAt !== undefined ? { [annotations.requestedAt]: input.requestedAt } : {}),
      },
      ownerReferences: [
        {
          apiVersion: image.apiVersion,
          kind: image.kind,
          name: image.metadata.name!,
          uid: image.metadata.uid!,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      // A failed build is not retried blindly: the same inputs fail the same way. A pod lost to
      // node trouble (eviction, preemption, drain) does not count as a failure and is replaced.
      backoffLimit: 0,
      podFailurePolicy: { rules: [{ action: "Ignore", onPodConditions: [{ type: "DisruptionTarget", status: "True" }] }] },
      // Never two pods of one build at once: they would share the store volume.
      podReplacementPolicy: "Failed",
      activeDeadlineSeconds: Math.round(parseDuration(spec.build.timeout) / 1000),
      template: {
        metadata: { labels: podLabels },
        spec: {
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(config.builder.serviceAccountName ? { serviceAccountName: config.builder.serviceAccountName } : {}),
          securityContext: { seccompProfile: { type: "RuntimeDefault" } },
          nodeSelector: spec.build.nodeSelector,
          tolerations: spec.build.tolerations,
          initContainers,
          containers,
          volumes,
        },
      },
    },
  };
}
