// A real single-node Kubernetes cluster on this machine, for the e2e tests and the demo:
//
//   etcd, kube-apiserver, kube-controller-manager, kube-scheduler  (the test bed's binaries)
//   kubelet + containerd + runc + CNI bridge                       (one node, pods really run)
//   docker-registry on the node IP                                 (the kubelet pulls from it)
//   a hostPath provisioner loop                                    (store PVCs get volumes)
//   pause, Nix builder and operator images                         (built locally, pushed)
//
// One cluster per machine (fixed bridge and subnet): a state file records the running one, and a
// run that finds the state of a dead owner first removes what that run left behind. Teardown
// deletes the pods through the API (so the kubelet stops sandboxes and CNI releases addresses),
// stops the kubelet and containerd, then sweeps: processes in the cluster's cgroups and shims,
// mounts under the run directory, the bridge and veths, the iptables rules, sysctls, cgroups,
// the kubelet's log symlinks. `leftovers()` reports anything that survived.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { startEtcd } from "../../support/etcd.ts";
import { kubeBinDir, kubernetesVersion, writeKubeconfig } from "../../support/kube-apiserver.ts";
import { startKubeControllerManager } from "../../support/kube-controller-manager.ts";
import { addExitCleanup, killAllDaemonsSync, liveDaemons, retryOnPortConflict, run, sleep, StartError, type Daemon } from "../../support/process.ts";
import { makeClusterPki, type ClusterPki } from "./cluster-pki.ts";
import { startClusterRegistry, type ClusterRegistry } from "./cluster-registry.ts";
import { containerdPaths, killShims, removeAllContainers, shimPids, startContainerd, type Containerd } from "./containerd.ts";
import { startApiServer, startScheduler } from "./control-plane.ts";
import {
  bridgePorts,
  isAlive,
  killPids,
  linkExists,
  mountsUnder,
  processCmdline,
  processStartTime,
  removeCgroupTree,
  removeSymlinksInto,
  removeTree,
  runSync,
  pidsInCgroup,
  unmountUnder,
} from "./host.ts";
import { buildImages, e2eCacheDir, pushImage, type PushedImage } from "./images.ts";
import { startKubelet, type Kubelet } from "./kubelet.ts";
import { clusterRules, defaultNetwork, restoreSysctls, saveSysctls, setServiceRule, setUpNetwork, tearDownNetwork, type ClusterNetwork } from "./network.ts";
import { missingPrerequisites } from "./prerequisites.ts";
import { startProvisioner, storageClassName, type Provisioner } from "./provisioner.ts";

export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const nodeName = "nio-e2e";

export interface ClusterInfo {
  runId: string;
  runDir: string;
  logDir: string;
  kubeVersion: string;
  kubectl: string;
  helm: string;
  /** Admin kubeconfig (system:masters), everything embedded. */
  kubeconfig: string;
  server: string;
  net: ClusterNetwork;
  nodeName: string;
  registry: { host: string; url: string };
  storageClassName: string;
  images: { pause: PushedImage; builder: PushedImage; operator: PushedImage };
  /** Milliseconds from start until each component was ready. */
  timings: Record<string, number>;
}

export interface Cluster extends ClusterInfo {
  kc: KubeConfig;
  /** Runs kubectl with the admin kubeconfig. */
  kubectl_(args: string[], input?: string): Promise<string>;
  stop(): Promise<void>;
}

interface StateFile {
  owner: number;
  ownerStart: string;
  runDir: string;
  logDir: string;
  socket: string;
  net: ClusterNetwork;
  sysctls: Record<string, string>;
  rootPropagation: string;
  hostDirsBefore: Record<string, boolean>;
  daemons: Array<{ pid: number; start: string; command: string }>;
}

/** Host directories the kubelet/CNI create when missing; removed again when empty afterwards. */
const hostDirs = ["/var/log/containers", "/var/lib/cni/results", "/var/lib/cni", "/run/containerd/s", "/run/containerd"];

export function stateFilePath(): string {
  return join(e2eCacheDir(), "cluster-state.json");
}

function readState(): StateFile | undefined {
  try {
    return JSON.parse(readFileSync(stateFilePath(), "utf8")) as StateFile;
  } catch {
    return undefined;
  }
}

function rootPropagation(): string {
  return runSync("findmnt", ["-n", "-o", "PROPAGATION", "/"]).stdout.trim();
}

/**
 * Removes everything a cluster run left on the host (synchronous: also runs from exit hooks).
 * Returns what could not be removed.
 */
function sweepHost(state: StateFile): string[] {
  // Daemons of the run that still live (a crashed owner): SIGKILL, only when the pid is the same process.
  const daemons = state.daemons.filter((d) => processStartTime(d.pid) === d.start && isAlive(d.pid));
  for (const d of daemons) {
    try {
      process.kill(-d.pid, "SIGKILL");
    } catch {
      killPids([d.pid]);
    }
  }
  killShims(state.socket);
  // Container processes live in the kubelet's pod cgroups, whatever became of their shims.
  removeCgroupTree("kubepods");
  const leftMounts = unmountUnder(state.runDir);
  removeSymlinksInto("/var/log/containers", state.runDir);
  // libcni's result cache (<network>-<container>-<ifname>): all of it when the run created
  // /var/lib/cni (containerd's loopback network, cni-loopback-*, also leaves entries there when
  // its sandboxes were not stopped), else only our network's.
  if (state.hostDirsBefore["/var/lib/cni"] === false) rmSync("/var/lib/cni", { recursive: true, force: true });
  else {
    try {
      for (const f of readdirSync("/var/lib/cni/results")) if (f.startsWith("nio-e2e-")) rmSync(join("/var/lib/cni/results", f), { force: true });
    } catch {
      // none
    }
  }
  const leftNet = tearDownNetwork(state.net);
  restoreSysctls(state.sysctls);
  for (const dir of hostDirs) {
    if (state.hostDirsBefore[dir] === false && existsSync(dir)) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty: someone else's
      }
    }
  }
  if (state.rootPropagation && state.rootPropagation !== "shared" && rootPropagation() === "shared") {
    runSync("mount", [`--make-r${state.rootPropagation}`, "/"]);
  }
  const left: string[] = [...leftMounts.map((m) => `mount ${m}`), ...leftNet];
  if (leftMounts.length === 0) {
    try {
      removeTree(state.runDir);
    } catch (e) {
      left.push((e as Error).message);
    }
  }
  return left;
}

/** What a stopped cluster left behind (empty when the host is clean). */
export function leftovers(info: Pick<ClusterInfo, "runDir" | "net">, socket = containerdPaths(info.runDir).socket): string[] {
  const out: string[] = [];
  out.push(...mountsUnder(info.runDir).map((m) => `mount ${m}`));
  const shims = shimPids(socket);
  if (shims.length) out.push(`containerd shims ${shims.join(", ")}`);
  const podPids = pidsInCgroup("kubepods");
  if (podPids.length) out.push(`processes in kubepods cgroups: ${podPids.join(", ")}`);
  if (linkExists(info.net.bridge)) out.push(`interface ${info.net.bridge} (ports: ${bridgePorts(info.net.bridge).join(", ") || "none"})`);
  out.push(...clusterRules(info.net).map((r) => `iptables rule ${r}`));
  if (existsSync(info.runDir)) out.push(`directory ${info.runDir}`);
  const ours = (argv: string[]) => argv.some((a) => a.includes(info.runDir));
  const procs = readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((p) => p !== process.pid && ours(processCmdline(p)));
  if (procs.length) out.push(`processes naming ${info.runDir}: ${procs.join(", ")}`);
  return out;
}

/** Reaps a crashed run's leftovers; refuses when a live process owns the cluster. */
export function reapStaleCluster(log: (m: string) => void = () => {}): void {
  const state = readState();
  if (!state) return;
  if (state.owner !== process.pid && processStartTime(state.owner) === state.ownerStart && isAlive(state.owner)) {
    throw new StartError(
      `an e2e cluster is already running on this machine (owner pid ${state.owner}, run dir ${state.runDir}); ` +
        `one cluster per machine. Stop it (Ctrl-C in its terminal), or if it is stuck: node test/e2e/support/cluster-cli.ts down`,
    );
  }
  log(`removing what an earlier e2e cluster run left behind (${state.runDir})`);
  const left = sweepHost(state);
  if (left.length) throw new StartError(`could not clean up an earlier e2e cluster run:\n  - ${left.join("\n  - ")}`);
  rmSync(stateFilePath(), { force: true });
}

function runId(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}-${process.pid}`;
}

async function helmPath(): Promise<string> {
  const { helmBinary } = await import("../../support/global-setup.ts");
  return helmBinary();
}

/** What this machine lacks for the cluster (empty: it can start). debootstrap only matters until the images are cached. */
export async function clusterPrerequisites(): Promise<string[]> {
  const layersDir = join(e2eCacheDir(), "layers");
  const haveBase = existsSync(layersDir) && readdirSync(layersDir).some((f) => f.startsWith("debian-nix-") && f.endsWith(".json"));
  return missingPrerequisites({ binDir: kubeBinDir(repoRoot), helm: await helmPath(), net: defaultNetwork, needDebootstrap: !haveBase });
}

export interface StartClusterOptions {
  log?: (message: string) => void;
  /** Keep the run directory after stop (logs are kept in any case). */
  keepState?: boolean;
}

export async function startCluster(options: StartClusterOptions = {}): Promise<Cluster> {
  const log = options.log ?? ((m: string) => process.stderr.write(`[e2e-cluster] ${m}\n`));
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  const mark = (name: string) => (timings[name] = Math.round(performance.now() - t0));
  const net = defaultNetwork;
  const binDir = kubeBinDir(repoRoot);
  const helm = await helmPath();
  reapStaleCluster(log);
  const missing = await clusterPrerequisites();
  if (missing.length) throw new StartError(`The e2e cluster cannot start on this machine; missing:\n  - ${missing.join("\n  - ")}`);

  const id = runId();
  const runDir = join(tmpdir(), `nio-e2e-${id}`);
  const logDir = join(repoRoot, ".testbed", `e2e-${id}`);
  await Promise.all([mkdir(runDir, { recursive: true }), mkdir(logDir, { recursive: true }), mkdir(e2eCacheDir(), { recursive: true })]);
  const logFile = (name: string) => join(logDir, `${name}.log`);
  const socket = containerdPaths(runDir).socket;
  const state: StateFile = {
    owner: process.pid,
    ownerStart: processStartTime(process.pid),
    runDir,
    logDir,
    socket,
    net,
    sysctls: saveSysctls(),
    rootPropagation: rootPropagation(),
    hostDirsBefore: Object.fromEntries(hostDirs.map((d) => [d, existsSync(d)])),
    daemons: [],
  };
  const writeState = () => {
    state.daemons = liveDaemons().map((d) => ({ pid: d.pid, start: processStartTime(d.pid), command: d.command }));
    writeFileSync(stateFilePath(), JSON.stringify(state, null, 2));
  };
  writeState();
  let swept = false;
  const sweepOnce = () => {
    if (swept) return [];
    swept = true;
    const left = sweepHost(state);
    if (!options.keepState) rmSync(runDir, { recursive: true, force: true });
    rmSync(stateFilePath(), { force: true });
    return left;
  };
  // Interrupted or exiting without stop(): process.ts SIGKILLs the daemons, then this sweeps.
  const removeExitCleanup = addExitCleanup(() => void sweepOnce());

  const daemons: Array<{ phase: number; daemon: Daemon }> = [];
  let provisioner: Provisioner | undefined;
  let containerd: Containerd | undefined;
  let kubelet: Kubelet | undefined;
  const abort = new AbortController();
  const signal = abort.signal;
  const started =
    <T extends { daemon: Daemon }>(phase: number, name: string) =>
    (v: T) => {
      daemons.push({ phase, daemon: v.daemon });
      mark(name);
      writeState();
      return v;
    };

  const stopAll = async (): Promise<string[]> => {
    await provisioner?.stop();
    const byPhase = (p: number) => daemons.filter((d) => d.phase === p).map((d) => d.daemon);
    // Phase 0: nothing may create or schedule new pods while they are being deleted.
    await Promise.allSettled(byPhase(0).map((d) => d.stop(5000)));
    if (kubelet && containerd) {
      // Delete every pod through the API: the kubelet kills the containers, CNI DEL releases the
      // address and removes the veth, the sandbox's netns goes. Bounded: the sweep follows anyway.
      await run(join(binDir, "kubectl"), ["--kubeconfig", kubeconfigFile, "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false"], {
        timeoutMs: 30_000,
      }).catch(() => undefined);
      const deadline = Date.now() + 45_000;
      while (Date.now() < deadline) {
        const out = await run(join(binDir, "kubectl"), ["--kubeconfig", kubeconfigFile, "get", "pods", "-A", "--no-headers", "-o", "name"], {
          timeoutMs: 10_000,
        }).catch(() => ({ stdout: "?" }));
        if (out.stdout.trim() === "") break;
        await sleep(500);
      }
    }
    // Phase 1: kubelet. Phase 2: containerd (after removing what the kubelet left).
    await Promise.allSettled(byPhase(1).map((d) => d.stop(10_000)));
    if (containerd) removeAllContainers(containerd);
    await Promise.allSettled(byPhase(2).map((d) => d.stop(10_000)));
    if (containerd) killShims(containerd.socket);
    // Phase 3: the API server (hangs on a dead etcd), then phase 4: etcd and the registry.
    await Promise.allSettled(byPhase(3).map((d) => d.stop(5000)));
    await Promise.allSettled(byPhase(4).map((d) => d.stop(5000)));
    const left = sweepOnce();
    removeExitCleanup();
    return left;
  };

  const kubeconfigFile = join(runDir, "admin.kubeconfig");
  try {
    runSync("mount", ["--make-rshared", "/"]);
    setUpNetwork(0, net);
    mark("network");
    const images = buildImages({ repoRoot, log }).then((v) => {
      mark("images-built");
      return v;
    });
    images.catch(() => abort.abort());
    const pki: Promise<ClusterPki> = makeClusterPki(join(runDir, "pki"), { nodeName, nodeIp: net.nodeIp, serviceIp: net.apiServiceIp });
    const etcd = retryOnPortConflict(() => startEtcd({ stateDir: runDir, logFile: logFile("etcd"), signal })).then(started(4, "etcd"));
    const registry: Promise<ClusterRegistry> = retryOnPortConflict(() =>
      startClusterRegistry({ dir: join(runDir, "registry"), address: net.nodeIp, logFile: logFile("registry"), signal }),
    ).then(started(4, "registry"));
    const [p, e] = await Promise.all([pki, etcd]);
    const apiserver = await retryOnPortConflict(() =>
      startApiServer({ binDir, etcdUrl: e.url, pki: p, net, stateDir: runDir, logFile: logFile("kube-apiserver"), signal }),
    ).then(started(3, "kube-apiserver"));
    setServiceRule(apiserver.port, net);
    await writeKubeconfig(kubeconfigFile, apiserver.url, p.ca.certFile, p.admin, "e2e-admin");
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigFile);
    const controlPlane = Promise.all([
      retryOnPortConflict(() =>
        startKubeControllerManager({ binDir, apiServerUrl: apiserver.url, pki: p, stateDir: runDir, logFile: logFile("kube-controller-manager"), signal }),
      ).then(started(0, "kube-controller-manager")),
      retryOnPortConflict(() =>
        startScheduler({ binDir, apiServerUrl: apiserver.url, pki: p, stateDir: runDir, logFile: logFile("kube-scheduler"), signal }),
      ).then(started(0, "kube-scheduler")),
      startProvisioner({ kc, volumesDir: join(runDir, "volumes"), log: (m) => appendLog(logFile("provisioner"), m) }).then((v) => {
        provisioner = v;
        mark("provisioner");
      }),
    ]);
    const [built, reg] = await Promise.all([images, registry]);
    log(`pushing images to ${reg.host}`);
    const [pause, builder, operator] = await Promise.all([
      pushImage(reg.host, "nio-e2e/pause", built.pause),
      pushImage(reg.host, "nio-e2e/nix-builder", built.builder),
      pushImage(reg.host, "nio-e2e/nix-image-operator", built.operator),
    ]);
    mark("images-pushed");
    containerd = await startContainerd({ runDir, logFile: logFile("containerd"), net, sandboxImage: pause.reference, registryHost: reg.host, signal }).then(
      started(2, "containerd"),
    );
    await controlPlane;
    kubelet = await retryOnPortConflict(() =>
      startKubelet({ binDir, apiServerUrl: apiserver.url, pki: p, net, nodeName, runDir, containerdSocket: socket, logFile: logFile("kubelet"), signal }),
    ).then(started(1, "kubelet"));
    mark("node-ready");
    timings.total = Math.round(performance.now() - t0);
    const info: ClusterInfo = {
      runId: id,
      runDir,
      logDir,
      kubeVersion: kubernetesVersion(repoRoot),
      kubectl: join(binDir, "kubectl"),
      helm,
      kubeconfig: kubeconfigFile,
      server: apiserver.url,
      net,
      nodeName,
      registry: { host: reg.host, url: reg.url },
      storageClassName,
      images: { pause, builder, operator },
      timings,
    };
    writeFileSync(join(logDir, "cluster.json"), JSON.stringify(info, null, 2));
    // A copy of the kubeconfig that outlives the run directory for a moment is not useful; point at it.
    return {
      ...info,
      kc,
      kubectl_: async (args, input) => (await run(join(binDir, "kubectl"), ["--kubeconfig", kubeconfigFile, ...args], { input, timeoutMs: 120_000 })).stdout,
      stop: async () => {
        const left = await stopAll();
        if (left.length) throw new Error(`the e2e cluster left things behind:\n  - ${left.join("\n  - ")}`);
      },
    };
  } catch (e) {
    abort.abort();
    const left = await stopAll().catch((err: unknown) => [String(err)]);
    const message = e instanceof Error ? e.message : String(e);
    throw new StartError(
      `The e2e cluster failed to start (logs in ${logDir}):\n${message}` + (left.length ? `\nand teardown left:\n  - ${left.join("\n  - ")}` : ""),
    );
  }
}

function appendLog(file: string, message: string): void {
  try {
    mkdirSync(join(file, ".."), { recursive: true });
    writeFileSync(file, `${new Date().toISOString()} ${message}\n`, { flag: "a" });
  } catch {
    // logging only
  }
}

/**
 * For interactive use (cluster-cli, demo): the first Ctrl-C/SIGTERM runs `shutdown` (a graceful
 * teardown: pods deleted through the API first), a second one kills everything at once (the
 * daemons, then the synchronous host sweep) and exits. Replaces the test bed's default handlers,
 * which SIGKILL the daemons straight away.
 */
export function onInterrupt(shutdown: (signal: NodeJS.Signals) => Promise<void>): void {
  let count = 0;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    for (const l of process.listeners(sig)) process.off(sig, l);
    process.on(sig, () => {
      count++;
      if (count === 1) {
        void shutdown(sig).then(
          () => process.exit(process.exitCode ?? 0),
          (e: unknown) => {
            process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
            process.exit(1);
          },
        );
      } else {
        process.stderr.write("interrupted again: killing everything now\n");
        killAllDaemonsSync();
        process.exit(130);
      }
    });
  }
}
