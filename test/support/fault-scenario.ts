// One fault scenario on the test bed: a namespace with NixImages (each with an opted-in Deployment
// of the same name), the chart's ServiceAccount and config, the controller as a child process
// (test/support/controller-process.ts), the fake kubelet finishing builder pods, and the oracles:
// the state every NixImage must reach, and from the API server's audit log the writes the
// operator made per NixImage (Job creates = builds started, Deployment patches = rollouts).
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CoordinationV1Api, type KubernetesObject, type V1Deployment } from "@kubernetes/client-node";
import { onTestFinished } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { startApiFaultProxy, type ApiFaultProxy } from "./api-fault-proxy.ts";
import { countByKind, readAuditWrites, succeeded, type AuditWrite } from "./audit-log.ts";
import { sleep } from "./process.ts";
import {
  chartConfig,
  operatorKubeconfig,
  operatorUsername,
  startControllerProcess,
  testOverrides,
  writeConfig,
  type ControllerProcess,
} from "./controller-process.ts";
import { fakeRepository, imageFor, startFakeKubelet, type FakeKubelet, type FakeKubeletOptions } from "./fake-kubelet.ts";
import { createGitRepo, minimalFlake, type GitRepo } from "./git-fixtures.ts";
import { apply, kubeClients, testbed, testNamespace, waitFor } from "./kube.ts";
import { chartServiceAccount, installTestCrd, type OperatorAccess } from "./operator-harness.ts";

type NixImageObject = KubernetesObject & { spec: Record<string, unknown>; status?: NixImageStatus };

const api = "/apis/niximage.io/v1alpha1";

export interface FaultScenario {
  namespace: string;
  access: OperatorAccess;
  repo: GitRepo;
  kubelet: FakeKubelet;
  /** The operator config the controller processes run with (the chart's plus the test's). */
  config: Record<string, unknown>;
  /** The Lease's holder identity (undefined when none). */
  leaseHolder(): Promise<string | undefined>;
  /** Waits until `ctl` leads: the Lease names a holder other than `previous`; returns it. */
  waitLeading(ctl: ControllerProcess, previous: string | undefined): Promise<string>;
  /** A TLS fault proxy in front of the test bed's API server (closed after the test); pass its url and caFile to startController. */
  startApiProxy(): Promise<ApiFaultProxy>;
  /** Writes the config and a kubeconfig (own token) and starts one controller process. */
  startController(
    name: string,
    opts?: { server?: string; caFile?: string; env?: Record<string, string>; crashAt?: string },
  ): Promise<ControllerProcess & { credentialId: string }>;
  createImages(names: string[], opts?: { deployments?: boolean }): Promise<void>;
  readImage(name: string): Promise<NixImageObject>;
  /** Waits until every named NixImage is Ready on the image the fake kubelet built for the repo's current revision, and its Deployment runs it. */
  waitConverged(names: string[], timeoutMs?: number): Promise<number>;
  /** Audit logs the oracles read (the test bed's API server's; add another API server's). */
  auditLogFiles: string[];
  /** The operator's completed writes in this namespace (and its Lease), from the audit logs. */
  operatorWrites(filter?: (w: AuditWrite) => boolean): Promise<AuditWrite[]>;
  /**
   * Waits until the operator has made no write (Lease renewals aside) for `quietMs`; returns how
   * many it had made by then. On timeout the error lists the writes of the last window.
   */
  waitWritesSettle(quietMs?: number, timeoutMs?: number): Promise<number>;
  /** Oracle counts per NixImage: builds (Job creates), rollout patches, status writes. */
  tally(names: string[]): Promise<Tally>;
}

interface Tally {
  /** Successful Job creates per NixImage beyond the first. */
  duplicateBuilds: number;
  /** NixImages not converged (checked by waitConverged before). */
  lostBuilds: number;
  /** Successful Deployment patches per Deployment beyond the first. */
  repeatedPatches: number;
  /** Pods the fake kubelet finished beyond one per NixImage. */
  duplicateRuns: number;
  jobCreates: Record<string, number>;
  deploymentPatches: Record<string, number>;
}

export interface ScenarioOptions {
  prefix: string;
  kubelet?: Omit<FakeKubeletOptions, "namespaces">;
  /** Extra operator config merged over the chart's (concurrency, store, resyncPeriod ...). */
  config?: Record<string, unknown>;
}

let crdInstalled: Promise<void> | undefined;

export async function faultScenario(opts: ScenarioOptions): Promise<FaultScenario> {
  const bed = testbed();
  crdInstalled ??= installTestCrd();
  await crdInstalled;
  const [namespace, access, repo] = await Promise.all([
    testNamespace(opts.prefix),
    chartServiceAccount(),
    createGitRepo(minimalFlake({ marker: opts.prefix }), { prefix: `faults-${opts.prefix}` }),
  ]);
  const dir = join(bed.tmpDir, `faults-${namespace}`);
  await mkdir(dir, { recursive: true });
  const kubelet = startFakeKubelet({ namespaces: [namespace], defaultRev: () => repo.rev, ...opts.kubelet });
  const processes: ControllerProcess[] = [];
  const proxies: ApiFaultProxy[] = [];
  onTestFinished(async () => {
    await Promise.allSettled(processes.map((p) => p.stop()));
    await Promise.allSettled(proxies.map((p) => p.close()));
    await kubelet.stop();
  });
  const config = await chartConfig(access, testOverrides(access, [namespace], opts.config));
  const configFile = await writeConfig(join(dir, "config.yaml"), config);
  const username = operatorUsername(access);
  const { kc, apps } = kubeClients();

  const readImage = (name: string) => kubeRequestJson<NixImageObject>(kc, "GET", `${api}/namespaces/${namespace}/niximages/${name}`);
  const scenario: FaultScenario = {
    namespace,
    access,
    repo,
    kubelet,
    config,
    async leaseHolder() {
      const lease = await kc
        .makeApiClient(CoordinationV1Api)
        .readNamespacedLease({ namespace: access.namespace, name: `${access.release}-nix-image-operator` })
        .catch(() => undefined);
      return lease?.spec?.holderIdentity ?? undefined;
    },
    waitLeading: (ctl, previous) =>
      waitFor(
        `controller ${ctl.name} to take the Lease`,
        async () => {
          if (!ctl.running()) throw new Error(`controller exited: ${await ctl.exited()}`);
          const holder = await scenario.leaseHolder();
          return holder && holder !== previous ? holder : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      ),
    async startApiProxy() {
      const proxy = await startApiFaultProxy({ upstream: bed.kube.server, upstreamCaFile: bed.kube.caFile, dir: join(dir, `proxy-${proxies.length}`) });
      proxies.push(proxy);
      return proxy;
    },
    async startController(name, o = {}) {
      const { file, credentialId } = await operatorKubeconfig(access, join(dir, `${name}.kubeconfig`), o);
      const proc = await startControllerProcess({ name: `${namespace}-${name}`, configFile, kubeconfigFile: file, env: o.env, crashAt: o.crashAt });
      processes.push(proc);
      return Object.assign(proc, { credentialId });
    },
    async createImages(names, o = {}) {
      for (const name of names) {
        if (o.deployments ?? true) {
          await apply({
            apiVersion: "apps/v1",
            kind: "Deployment",
            metadata: { name, namespace, annotations: { "niximage.io/from": name } },
            spec: {
              replicas: 1,
              selector: { matchLabels: { app: name } },
              template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: "app", image: "busybox:1" }] } },
            },
          });
        }
        await kubeRequestJson(kc, "POST", `${api}/namespaces/${namespace}/niximages`, {
          body: {
            apiVersion: "niximage.io/v1alpha1",
            kind: "NixImage",
            metadata: { name },
            spec: { flake: repo.flakeUrl, image: { repository: fakeRepository } },
          },
        });
      }
    },
    readImage,
    async waitConverged(names, timeoutMs = 90_000) {
      const start = Date.now();
      let missing: string[] = [];
      try {
        await waitFor(
          `${names.length} NixImages Ready on their built image, Deployments patched`,
          async () => {
            missing = [];
            for (const name of names) {
              const want = imageFor(namespace, name, repo.rev);
              const image = await readImage(name);
              const ready = image.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
              if (!ready || image.status?.latestImage !== want) {
                missing.push(`${name}: latestImage=${image.status?.latestImage ?? "-"} ready=${ready}`);
                continue;
              }
              const d: V1Deployment | undefined = await apps.readNamespacedDeployment({ namespace, name }).catch(() => undefined);
              if (d && d.spec?.template.spec?.containers[0]?.image !== want) missing.push(`${name}: Deployment not patched`);
            }
            return missing.length === 0;
          },
          { timeoutMs, intervalMs: 250 },
        );
      } catch (e) {
        throw new Error(`${(e as Error).message}; not converged (${missing.length}): ${missing.slice(0, 5).join("; ")}`);
      }
      return Date.now() - start;
    },
    auditLogFiles: [bed.kube.auditLogFile],
    async operatorWrites(filter = () => true) {
      const keep = (w: AuditWrite) => w.username === username && (w.namespace === namespace || w.namespace === access.namespace) && filter(w);
      const all = await Promise.all(scenario.auditLogFiles.map((f) => readAuditWrites(f, keep)));
      return all.flat().sort((a, b) => a.at - b.at);
    },
    async waitWritesSettle(quietMs = 2000, timeoutMs = 60_000) {
      const notLease = (w: AuditWrite) => w.resource !== "leases";
      let window: AuditWrite[] = [];
      try {
        return await waitFor(
          `the operator's writes to settle (${quietMs} ms without one)`,
          async () => {
            const n = (await scenario.operatorWrites(notLease)).length;
            await sleep(quietMs);
            const now = await scenario.operatorWrites(notLease);
            window = now.slice(n);
            return window.length === 0 ? now.length : undefined;
          },
          { timeoutMs },
        );
      } catch (e) {
        throw new Error(
          `${(e as Error).message}; writes in the last window: ${JSON.stringify(countByKind(window))} e.g. ${JSON.stringify(window.slice(0, 3))}`,
        );
      }
    },
    async tally(names) {
      const writes = (await scenario.operatorWrites()).filter(succeeded);
      const jobCreates: Record<string, number> = {};
      const deploymentPatches: Record<string, number> = {};
      for (const name of names) {
        jobCreates[name] = 0;
        deploymentPatches[name] = 0;
      }
      for (const w of writes) {
        if (w.resource === "jobs" && w.verb === "create") {
          // create carries no name in objectRef for POST to the collection: count by the Jobs that exist.
          continue;
        }
        if (w.resource === "deployments" && w.verb === "patch" && w.name && w.name in deploymentPatches) deploymentPatches[w.name]!++;
      }
      const jobs = await kubeClients().batch.listNamespacedJob({ namespace, labelSelector: "niximage.io/image" });
      for (const job of jobs.items) {
        const image = job.metadata?.labels?.["niximage.io/image"];
        if (image && image in jobCreates) jobCreates[image]!++;
      }
      const creates = writes.filter((w) => w.resource === "jobs" && w.verb === "create").length;
      const runs = names.map((n) => kubelet.buildsOf(namespace, n).length);
      return {
        duplicateBuilds: Math.max(
          Object.values(jobCreates).reduce((a, n) => a + Math.max(0, n - 1), 0),
          creates - names.length,
        ),
        lostBuilds: 0,
        repeatedPatches: Object.values(deploymentPatches).reduce((a, n) => a + Math.max(0, n - 1), 0),
        duplicateRuns: runs.reduce((a, n) => a + Math.max(0, n - 1), 0),
        jobCreates,
        deploymentPatches,
      };
    },
  };
  return scenario;
}

/** Appends a test's measured figures to .testbed/<run>/fault-figures.json (copied into docs/reliability.md). */
export async function recordFigures(caseId: string, figures: Record<string, unknown>): Promise<void> {
  const bed = testbed();
  const file = join(bed.logDir, `fault-figures-${caseId}.json`);
  await writeFile(file, JSON.stringify({ case: caseId, at: new Date().toISOString(), ...figures }, null, 2));
  process.stderr.write(`fault figures ${caseId}: ${JSON.stringify(figures)}\n`);
}
