// kube-apiserver and kube-scheduler of the e2e cluster (kube-controller-manager and etcd come from
// the integration test bed's starters). The API server listens on the node IP (the bridge
// address), so pods reach it through the `kubernetes` Service DNAT and the host through the same
// address; it talks to the kubelet with its own client certificate (logs, exec).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { requireKubeBinary, startKubeApiserver, writeKubeconfig } from "../../support/kube-apiserver.ts";
import { freePort, httpGet, startDaemon, type Daemon } from "../../support/process.ts";
import type { ClusterPki } from "./cluster-pki.ts";
import type { ClusterNetwork } from "./network.ts";

export interface E2eApiServer {
  url: string;
  port: number;
  daemon: Daemon;
}

/** The test bed's kube-apiserver, on the node IP and talking to the kubelet with its own client certificate. */
export async function startApiServer(opts: {
  binDir: string;
  etcdUrl: string;
  pki: ClusterPki;
  net: ClusterNetwork;
  stateDir: string;
  logFile: string;
  signal?: AbortSignal;
}): Promise<E2eApiServer> {
  const { pki, net } = opts;
  return startKubeApiserver({
    binDir: opts.binDir,
    etcdUrl: opts.etcdUrl,
    pki,
    stateDir: opts.stateDir,
    logFile: opts.logFile,
    ...(opts.signal ? { signal: opts.signal } : {}),
    bindAddress: net.nodeIp,
    serviceClusterIpRange: net.serviceCidr,
    extraArgs: [
      `--kubelet-client-certificate=${pki.apiserverKubeletClient.certFile}`,
      `--kubelet-client-key=${pki.apiserverKubeletClient.keyFile}`,
      `--kubelet-certificate-authority=${pki.ca.certFile}`,
      "--kubelet-preferred-address-types=InternalIP",
    ],
  });
}

export interface Scheduler {
  kubeconfig: string;
  daemon: Daemon;
}

export async function startScheduler(opts: {
  binDir: string;
  apiServerUrl: string;
  pki: ClusterPki;
  stateDir: string;
  logFile: string;
  signal?: AbortSignal;
}): Promise<Scheduler> {
  const binary = requireKubeBinary(opts.binDir, "kube-scheduler");
  const dir = join(opts.stateDir, "kube-scheduler");
  await mkdir(dir, { recursive: true });
  const kubeconfig = join(dir, "kubeconfig");
  const [port] = await Promise.all([
    freePort(),
    writeKubeconfig(kubeconfig, opts.apiServerUrl, opts.pki.ca.certFile, opts.pki.scheduler, "system:kube-scheduler"),
  ]);
  const daemon = await startDaemon({
    name: "kube-scheduler",
    command: binary,
    args: [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      "--bind-address=127.0.0.1",
      `--secure-port=${port}`,
      `--cert-dir=${join(dir, "certs")}`,
      "--leader-elect=false",
      "--profiling=false",
    ],
    logFile: opts.logFile,
    signal: opts.signal,
    timeoutMs: 60_000,
    intervalMs: 250,
    ready: async () => {
      const r = await httpGet(`https://127.0.0.1:${port}/readyz`, { rejectUnauthorized: false, timeoutMs: 2000 });
      if (r.status !== 200) throw new Error(`/readyz ${r.status}: ${r.body.slice(0, 200)}`);
      return true;
    },
  });
  return { kubeconfig, daemon };
}
