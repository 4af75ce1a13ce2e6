// The kubelet of the single e2e node: cgroupfs driver on cgroup v1 (no systemd on these VMs),
// swap tolerated, every directory it owns under the run directory (root dir, pod logs, volume
// plugins), its API on the node IP with a certificate from the cluster CA, Webhook authn/authz
// against the API server, no iptables chains of its own (makeIPTablesUtilChains: false).
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { requireKubeBinary, writeKubeconfig } from "../../support/kube-apiserver.ts";
import { freePort, httpGet, startDaemon, type Daemon } from "../../support/process.ts";
import type { ClusterPki } from "./cluster-pki.ts";
import type { ClusterNetwork } from "./network.ts";

export interface KubeletOptions {
  binDir: string;
  apiServerUrl: string;
  pki: ClusterPki;
  net: ClusterNetwork;
  nodeName: string;
  runDir: string;
  containerdSocket: string;
  logFile: string;
  signal?: AbortSignal;
}

export interface Kubelet {
  rootDir: string;
  podLogsDir: string;
  port: number;
  daemon: Daemon;
}

function kubeletPaths(runDir: string) {
  const dir = join(runDir, "kubelet");
  return {
    dir,
    rootDir: join(dir, "root"),
    podLogsDir: join(dir, "pod-logs"),
    pluginDir: join(dir, "volume-plugins"),
    config: join(dir, "config.yaml"),
    kubeconfig: join(dir, "kubeconfig"),
  };
}

export async function startKubelet(opts: KubeletOptions): Promise<Kubelet> {
  const binary = requireKubeBinary(opts.binDir, "kubelet");
  const p = kubeletPaths(opts.runDir);
  await Promise.all([p.rootDir, p.podLogsDir, p.pluginDir].map((d) => mkdir(d, { recursive: true })));
  const [port, healthzPort] = await Promise.all([freePort(), freePort()]);
  await writeKubeconfig(p.kubeconfig, opts.apiServerUrl, opts.pki.ca.certFile, opts.pki.kubelet, `system:node:${opts.nodeName}`);
  const config = {
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    address: opts.net.nodeIp,
    port,
    readOnlyPort: 0,
    healthzBindAddress: "127.0.0.1",
    healthzPort,
    tlsCertFile: opts.pki.kubeletServing.certFile,
    tlsPrivateKeyFile: opts.pki.kubeletServing.keyFile,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: opts.pki.ca.certFile } },
    authorization: { mode: "Webhook" },
    containerRuntimeEndpoint: `unix://${opts.containerdSocket}`,
    cgroupDriver: "cgroupfs",
    cgroupsPerQOS: true,
    enforceNodeAllocatable: ["pods"],
    failSwapOn: false,
    // kubelet 1.35+ refuses cgroup v1 unless told; 1.34 only warns. Harmless either way.
    failCgroupV1: false,
    makeIPTablesUtilChains: false,
    podLogsDir: p.podLogsDir,
    volumePluginDir: p.pluginDir,
    registerNode: true,
    maxPods: 30,
    serializeImagePulls: false,
    // A test node on a shared disk: never evict for disk pressure; images are few.
    evictionHard: { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%" },
    imageGCHighThresholdPercent: 99,
    imageGCLowThresholdPercent: 98,
    // Faster feedback for tests: status every 10 s, pods' status changes seen quickly.
    nodeStatusReportFrequency: "10s",
    syncFrequency: "10s",
    fileCheckFrequency: "10s",
    shutdownGracePeriod: "0s",
    rotateCertificates: false,
    serverTLSBootstrap: false,
    staticPodPath: "",
    resolvConf: "/etc/resolv.conf",
    containerLogMaxSize: "10Mi",
    containerLogMaxFiles: 2,
  };
  await writeFile(p.config, stringify(config));
  const ca = readFileSync(opts.pki.ca.certFile);
  const cert = readFileSync(opts.pki.admin.certFile);
  const key = readFileSync(opts.pki.admin.keyFile);
  const daemon = await startDaemon({
    name: "kubelet",
    command: binary,
    args: [
      `--config=${p.config}`,
      `--kubeconfig=${p.kubeconfig}`,
      `--root-dir=${p.rootDir}`,
      `--cert-dir=${join(p.dir, "pki")}`,
      `--hostname-override=${opts.nodeName}`,
      `--node-ip=${opts.net.nodeIp}`,
      "--v=1",
    ],
    logFile: opts.logFile,
    signal: opts.signal,
    timeoutMs: 120_000,
    intervalMs: 500,
    ready: async () => {
      const h = await httpGet(`http://127.0.0.1:${healthzPort}/healthz`, { timeoutMs: 2000 });
      if (h.status !== 200) throw new Error(`kubelet /healthz ${h.status}: ${h.body.slice(0, 200)}`);
      const n = await httpGet(`${opts.apiServerUrl}/api/v1/nodes/${opts.nodeName}`, { ca, cert, key, timeoutMs: 2000 });
      if (n.status !== 200) throw new Error(`node ${opts.nodeName} not registered yet (${n.status})`);
      const node = JSON.parse(n.body) as { status?: { conditions?: { type: string; status: string; message?: string }[] } };
      const ready = node.status?.conditions?.find((c) => c.type === "Ready");
      if (ready?.status !== "True") throw new Error(`node ${opts.nodeName} not Ready: ${ready?.message ?? "no Ready condition yet"}`);
      return true;
    },
  });
  return { rootDir: p.rootDir, podLogsDir: p.podLogsDir, port, daemon };
}
