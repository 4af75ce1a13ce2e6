// Runs the controller in-process against the test bed, with exactly the RBAC of the Helm chart:
// the chart is rendered with the real helm, its ServiceAccount and roles are applied, and the
// controller talks to the API server with that ServiceAccount's token, so a verb missing from
// the chart fails a test. Also plays the kubelet's part for builder pods (there is no kubelet in
// this tier): it sets a pod's container statuses and termination messages, and the real Job
// controller in kube-controller-manager completes or fails the Job from there.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { KubeConfig, type V1Job, type V1Pod } from "@kubernetes/client-node";
import { pino } from "pino";
import { parseAllDocuments } from "yaml";
import { onTestFinished } from "vitest";
import { nixImageCrd } from "../../src/api/crd.ts";
import type { PushStepResult } from "../../src/builder/step-results.ts";
import { parseOperatorConfig, type OperatorConfigInput } from "../../src/config/operator-config.ts";
import { defaultFlakeRefPolicy } from "../../src/flake/flake-ref-policy.ts";
import { startOperator, type RunningOperator } from "../../src/controller/operator.ts";
import type { Clock } from "../../src/runtime/clock.ts";
import type { Logger } from "../../src/log/logger.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { kubeClients, kubectl, testbed, waitFor } from "./kube.ts";
import { run } from "./process.ts";

/** The CRD as an admin who allows git+http (the test bed's git server) would install it. */
export async function installTestCrd(): Promise<void> {
  const flakeRefPolicy = {
    ...defaultFlakeRefPolicy,
    allowedSchemes: [...defaultFlakeRefPolicy.allowedSchemes, "git+http"],
    allowedAddressRanges: ["127.0.0.0/8"],
  };
  await kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], { input: JSON.stringify(nixImageCrd({ flakeRefPolicy })) });
  await waitFor("NixImage CRD established", async () => {
    const out = await kubectl(["get", "crd", "niximages.niximage.io", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"]);
    return out.trim() === "True";
  });
  // Established stays True when the CRD existed with another schema (e.g. the chart's, from a
  // helm install in chart.test): the API server serves the new one a moment later. Wait until a
  // loopback git+http flake, which only this policy allows, is accepted (server-side dry run).
  const probe = {
    apiVersion: "niximage.io/v1alpha1",
    kind: "NixImage",
    metadata: { name: "crd-probe", namespace: "default" },
    spec: { flake: "git+http://127.0.0.1:1/probe.git", image: { repository: "127.0.0.1:1/probe" } },
  };
  await waitFor("the test bed's NixImage CRD to be served", () =>
    kubeRequestJson(kubeClients().kc, "POST", "/apis/niximage.io/v1alpha1/namespaces/default/niximages", { body: probe, query: { dryRun: "All" } }).then(
      () => true,
      () => false,
    ),
  );
}

export interface OperatorAccess {
  /** Namespace the chart was "installed" into (its Lease lives here). */
  namespace: string;
  release: string;
  kc: KubeConfig;
}

/**
 * Applies the chart's ServiceAccount, ClusterRole(Binding) and leader-election Role(Binding)
 * as `helm template` renders them (with `--set` values, e.g. webhook.enabled=true), and returns a KubeConfig that acts as that ServiceAccount.
 */
export async function chartServiceAccount(options: { set?: string[] } = {}): Promise<OperatorAccess> {
  const bed = testbed();
  const release = `nio-${randomBytes(3).toString("hex")}`;
  const namespace = `${release}-system`;
  const { core } = kubeClients();
  await core.createNamespace({ body: { metadata: { name: namespace, labels: { "testbed.niximage.io/run": bed.runId } } } });
  const set = (options.set ?? []).flatMap((value) => ["--set", value]);
  const { stdout } = await run(bed.kube.helm, [
    "template",
    release,
    "charts/nix-image-operator",
    "--namespace",
    namespace,
    "--kube-version",
    bed.kube.version,
    ...set,
  ]);
  const wanted = new Set(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
  const objects = parseAllDocuments(stdout)
    .map((d) => d.toJS() as { kind?: string })
    .filter((o) => o && wanted.has(o.kind ?? ""));
  await kubectl(["apply", "--server-side", "-f", "-"], { input: objects.map((o) => JSON.stringify(o)).join("\n") });
  onTestFinished(async () => {
    await kubectl(["delete", "clusterrole,clusterrolebinding", release, "--ignore-not-found"]);
    await core.deleteNamespace({ name: namespace }).catch(() => undefined);
  });

  const token = await kubeRequestJson<{ status: { token: string } }>(
    kubeClients().kc,
    "POST",
    `/api/v1/namespaces/${namespace}/serviceaccounts/${release}-nix-image-operator/token`,
    { body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 3600 } } },
  );
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "testbed", server: bed.kube.server, caData: (await readFile(bed.kube.caFile)).toString("base64") }],
    users: [{ name: "operator", token: token.status.token }],
    contexts: [{ name: "operator", cluster: "testbed", user: "operator" }],
    currentContext: "operator",
  });
  return { namespace, release, kc };
}

/** Real time plus an offset the test moves forward (polling intervals, warm schedules). */
export class OffsetClock implements Clock {
  offsetMs = 0;
  now(): Date {
    return new Date(Date.now() + this.offsetMs);
  }
  advance(ms: number): void {
    this.offsetMs += ms;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
    });
  }
  setTimeout(fn: () => void, ms: number) {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  }
}

export interface TestOperatorOptions {
  access: OperatorAccess;
  /** Namespaces to watch. */
  namespaces: string[];
  config?: OperatorConfigInput;
  clock?: Clock;
  identity?: string;
  leaderElection?: boolean;
  /** Default: silent (or TEST_LOG_LEVEL); a test that reads the controller's log lines passes its own. */
  logger?: Logger;
}

const testLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

export async function startTestOperator(options: TestOperatorOptions): Promise<RunningOperator> {
  const config = parseOperatorConfig({
    ...options.config,
    namespaces: options.namespaces,
    flakeRefPolicy: { allowedSchemes: [...defaultFlakeRefPolicy.allowedSchemes, "git+http"], allowedAddressRanges: ["127.0.0.0/8"] },
    builder: { nixImage: "nix-builder.test/nix:1", pushImage: "operator.test/nio:1", ...options.config?.builder },
    leaderElection: {
      enabled: options.leaderElection ?? false,
      namespace: options.access.namespace,
      leaseName: options.access.release,
      leaseDuration: "4s",
      renewDeadline: "3s",
      retryPeriod: "500ms",
    },
  });
  const operator = await startOperator({
    kc: options.access.kc,
    config,
    logger: options.logger ?? testLogger,
    clock: options.clock,
    identity: options.identity,
    metricsPort: 0,
    metricsHost: "127.0.0.1",
  });
  onTestFinished(() => operator.stop());
  return operator;
}

export async function buildJobs(namespace: string): Promise<V1Job[]> {
  const { batch } = kubeClients();
  return (await batch.listNamespacedJob({ namespace, labelSelector: "niximage.io/image" })).items.sort(
    (a, b) => Number(a.metadata?.labels?.["niximage.io/build-number"]) - Number(b.metadata?.labels?.["niximage.io/build-number"]),
  );
}

export async function waitForJob(namespace: string, name: string): Promise<V1Job> {
  const { batch } = kubeClients();
  return waitFor(`builder Job ${namespace}/${name}`, () => batch.readNamespacedJob({ namespace, name }).catch(() => undefined), { timeoutMs: 30_000 });
}

/** The Job controller's pod for a Job (it has no node: there is no scheduler or kubelet here). */
export async function waitForBuildPod(namespace: string, job: string): Promise<V1Pod> {
  const { core } = kubeClients();
  return waitFor(
    `pod of Job ${namespace}/${job}`,
    async () => (await core.listNamespacedPod({ namespace, labelSelector: `batch.kubernetes.io/job-name=${job}` })).items[0],
    { timeoutMs: 30_000 },
  );
}

const terminated = (name: string, exitCode: number, message?: string) => ({
  name,
  ready: false,
  restartCount: 0,
  image: `${name}.test/image:1`,
  imageID: "",
  state: {
    terminated: {
      exitCode,
      reason: exitCode === 0 ? "Completed" : "Error",
      ...(message ? { message } : {}),
      startedAt: new Date().toISOString(),
      finishedAt: new Date().toISOString(),
    },
  },
});

export type PodOutcome = { succeed: { main?: string; message: string } } | { fail: { step: "prepare" | "build" | "push"; exitCode: number; message: string } };

/** Plays the kubelet: finishes the build pod of `job` as told; the Job controller does the rest. */
export async function finishBuildPod(namespace: string, job: string, outcome: PodOutcome): Promise<void> {
  const pod = await waitForBuildPod(namespace, job);
  const main = pod.spec?.containers[0]?.name ?? "push";
  let status;
  if ("succeed" in outcome) {
    status = {
      phase: "Succeeded",
      initContainerStatuses: [terminated("prepare", 0), terminated("build", 0)],
      containerStatuses: [terminated(main, 0, outcome.succeed.message)],
    };
  } else {
    const { step, exitCode, message } = outcome.fail;
    const init =
      step === "push"
        ? [terminated("prepare", 0), terminated("build", 0)]
        : step === "build"
          ? [terminated("prepare", 0), terminated("build", exitCode, message)]
          : [terminated("prepare", exitCode, message)];
    status = {
      phase: "Failed",
      initContainerStatuses: init,
      containerStatuses: [
        step === "push" ? terminated(main, exitCode, message) : { ...terminated(main, 0), state: { waiting: { reason: "PodInitializing" } } },
      ],
    };
  }
  await kubeRequestJson(kubeClients().kc, "PATCH", `/api/v1/namespaces/${namespace}/pods/${pod.metadata!.name}/status`, {
    body: { status },
    contentType: "application/merge-patch+json",
  });
}

/** A push step result as the push-step command writes it. */
export function pushResult(repository: string, digestHex: string, rev: string) {
  // Typed with the push step's own result schema: the harness cannot drift from the real writer.
  const result: PushStepResult = {
    image: `${repository}@sha256:${digestHex}`,
    digest: `sha256:${digestHex}`,
    tags: [`rev-${rev.slice(0, 12)}`],
    format: "package",
    revision: { url: `git+http://127.0.0.1/x.git?rev=${rev}`, rev, lastModified: 1704067200, narHash: "sha256-AAAA" },
    layers: { total: 4, pushed: 1, skipped: 3, mounted: 0 },
    bytesPushed: 1234,
    seconds: { build: 1.5, push: 0.5 },
  };
  return JSON.stringify(result);
}
