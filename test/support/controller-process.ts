// The controller as the chart runs it, but as a child process of the test: `node src/cli/main.ts
// controller --config config.yaml --kubeconfig ... --metrics-address ...` with the config.yaml the
// chart renders (helm template, plus the test's overrides) and a kubeconfig holding a token of the
// chart's ServiceAccount. A test can SIGKILL, SIGSTOP/SIGCONT or SIGTERM it and start it again,
// and set NIO_CRASH_AT (src/runtime/crash-point.ts) to make it exit 137 at a named point.
import { join } from "node:path";
import { readFile, writeFile } from "node:fs/promises";
import { parseAllDocuments, stringify } from "yaml";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { kubeClients, testbed, waitFor } from "./kube.ts";
import type { OperatorAccess } from "./operator-harness.ts";
import { freePort, httpGet, run, startDaemon, type Daemon } from "./process.ts";

const cli = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const chart = new URL("../../charts/nix-image-operator", import.meta.url).pathname;

/** The username the API server (and its audit log) sees for the chart's ServiceAccount. */
export function operatorUsername(access: OperatorAccess): string {
  return `system:serviceaccount:${access.namespace}:${access.release}-nix-image-operator`;
}

/**
 * A kubeconfig file acting as the chart's ServiceAccount with a token of its own (so the audit
 * log tells replicas apart by credential id), talking to `server` (default: the test bed's API
 * server; a fault proxy's URL and CA to put one in between).
 */
export async function operatorKubeconfig(
  access: OperatorAccess,
  file: string,
  target: { server?: string; caFile?: string } = {},
): Promise<{ file: string; credentialId: string }> {
  const bed = testbed();
  const token = await kubeRequestJson<{ status: { token: string } }>(
    kubeClients().kc,
    "POST",
    `/api/v1/namespaces/${access.namespace}/serviceaccounts/${access.release}-nix-image-operator/token`,
    { body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 3600 } } },
  );
  const jti = JSON.parse(Buffer.from(token.status.token.split(".")[1]!, "base64url").toString()) as { jti?: string };
  const ca = await readFile(target.caFile ?? bed.kube.caFile);
  const doc = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "testbed", cluster: { server: target.server ?? bed.kube.server, "certificate-authority-data": ca.toString("base64") } }],
    users: [{ name: "operator", user: { token: token.status.token } }],
    contexts: [{ name: "operator", context: { cluster: "testbed", user: "operator" } }],
    "current-context": "operator",
  };
  await writeFile(file, stringify(doc), { mode: 0o600 });
  return { file, credentialId: `JTI=${jti.jti ?? ""}` };
}

/** The chart's config.yaml for this release (helm template), with `overrides` merged over it (objects merged, the rest replaced). */
export async function chartConfig(access: OperatorAccess, overrides: Record<string, unknown>): Promise<Record<string, unknown>> {
  const bed = testbed();
  const { stdout } = await run(bed.kube.helm, [
    "template",
    access.release,
    chart,
    "--namespace",
    access.namespace,
    "--kube-version",
    bed.kube.version,
    "--show-only",
    "templates/configmap.yaml",
  ]);
  const configMap = parseAllDocuments(stdout)[0]!.toJS() as { data: { "config.yaml": string } };
  const base = parseAllDocuments(configMap.data["config.yaml"])[0]!.toJS() as Record<string, unknown>;
  return merge(base, overrides) as Record<string, unknown>;
}

function merge(a: unknown, b: unknown): unknown {
  if (b === undefined) return a;
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
  if (!isObj(a) || !isObj(b)) return b;
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = merge(a[k], v);
  return out;
}

/** Overrides every fault test wants: its namespaces, git+http flakes, short leases, a verbose log. */
export function testOverrides(access: OperatorAccess, namespaces: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return merge(
    {
      namespaces,
      flakeRefPolicy: {
        allowedSchemes: ["github", "gitlab", "sourcehut", "git+https", "git+ssh", "tarball+https", "https", "git+http"],
        // The test git server is on loopback, which flake refs and the poller may not reach by default (SSRF).
        allowedAddressRanges: ["127.0.0.0/8"],
      },
      builder: { nixImage: "nix-builder.test/nix:1", pushImage: "operator.test/nio:1" },
      leaderElection: { leaseDuration: "3s", renewDeadline: "2s", retryPeriod: "250ms" },
      logLevel: "debug",
    },
    extra,
  ) as Record<string, unknown>;
}

export interface ControllerProcess {
  readonly name: string;
  readonly logFile: string;
  readonly metricsPort: number;
  /** The running process (changes on restart). */
  readonly daemon: Daemon;
  /** Exit code or signal of the current process, once it exited. */
  exited(): Promise<string>;
  running(): boolean;
  signal(sig: NodeJS.Signals): void;
  /** Starts the process again (after it exited) with the given extra environment for this start only (e.g. NIO_CRASH_AT). */
  restart(env?: Record<string, string>): Promise<void>;
  /** The leader identity it logged ("leading: ..."), once it leads. */
  identity(): Promise<string | undefined>;
  /** GET /readyz: true when 200. */
  ready(): Promise<boolean>;
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

export interface ControllerProcessOptions {
  name: string;
  configFile: string;
  kubeconfigFile: string;
  /** Environment of every start. */
  env?: Record<string, string>;
  /** NIO_CRASH_AT of the first start only (restart() takes the next one). */
  crashAt?: string;
}

/** Writes `config` to a file for --config. */
export async function writeConfig(file: string, config: Record<string, unknown>): Promise<string> {
  await writeFile(file, stringify(config));
  return file;
}

export async function startControllerProcess(opts: ControllerProcessOptions): Promise<ControllerProcess> {
  const bed = testbed();
  let metricsPort = 0;
  const logFile = join(bed.logDir, `controller-${opts.name}.log`);
  let current: Daemon;
  let done = false;
  const spawnOne = async (env: Record<string, string> = {}) => {
    done = false;
    // A fresh port per start: another process may have taken the last one while this one was down.
    metricsPort = await freePort();
    const { NIO_CRASH_AT: _drop, ...inherited } = process.env;
    void _drop;
    current = await startDaemon({
      name: `controller-${opts.name}`,
      command: process.execPath,
      args: [cli, "controller", "--config", opts.configFile, "--kubeconfig", opts.kubeconfigFile, "--metrics-address", `127.0.0.1:${metricsPort}`],
      env: { ...inherited, ...opts.env, ...env },
      logFile,
      // A crash point may end it before any probe could pass: readiness is each test's business.
      ready: () => Promise.resolve(true),
    });
    void current.exited.then(() => (done = true));
  };
  await spawnOne(opts.crashAt ? { NIO_CRASH_AT: opts.crashAt } : {});
  const proc: ControllerProcess = {
    name: opts.name,
    logFile,
    get metricsPort() {
      return metricsPort;
    },
    get daemon() {
      return current;
    },
    exited: () => current.exited,
    running: () => !done,
    signal(sig) {
      if (!done) process.kill(current.pid, sig);
    },
    async restart(env) {
      if (!done) throw new Error(`controller ${opts.name} still runs (pid ${current.pid}); stop it first`);
      await current.stop(0);
      await spawnOne(env);
    },
    async identity() {
      const text = await readFile(logFile, "utf8").catch(() => "");
      const lines = text.split("\n").filter((l) => l.includes("starting workers"));
      const last = lines.at(-1);
      return last ? (JSON.parse(last) as { identity?: string }).identity : undefined;
    },
    async ready() {
      return (await httpGet(`http://127.0.0.1:${metricsPort}/readyz`, { timeoutMs: 2000 }).catch(() => ({ status: 0 }))).status === 200;
    },
    async metrics() {
      return (await httpGet(`http://127.0.0.1:${metricsPort}/metrics`, { timeoutMs: 5000 })).body;
    },
    async stop() {
      if (!done) {
        try {
          process.kill(current.pid, "SIGCONT");
        } catch {
          // gone
        }
      }
      await current.stop(5000);
    },
  };
  return proc;
}

/** Waits until the controller process has exited and returns how ("exit code 137", "signal SIGKILL"). */
export async function waitForExit(proc: ControllerProcess, what: string, timeoutMs = 60_000): Promise<string> {
  let how: string | undefined;
  void proc.exited().then((h) => (how = h));
  return waitFor(`controller ${proc.name} exits (${what})`, () => how, { timeoutMs, intervalMs: 50 });
}

/**
 * Plays the kubelet's restartPolicy Always for the controller's pod: whenever the process has
 * exited (e.g. it gave up a lease it could not renew), start it again after `delayMs`.
 */
export function keepRunning(proc: ControllerProcess, delayMs = 1000): { restarts(): number; exits: string[]; stop(): Promise<void> } {
  const exits: string[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      if (!proc.running()) {
        exits.push(await proc.exited());
        await new Promise((r) => setTimeout(r, delayMs));
        if (!stopped) await proc.restart();
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    restarts: () => exits.length,
    exits,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}
