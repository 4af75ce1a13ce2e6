// kube-apiserver and kube-scheduler of the e2e cluster (kube-controller-manager and etcd come from
// the integration test bed's starters). The API server listens on the node IP (the bridge
// address), so pods reach it through the `kubernetes` Service DNAT and the host through the same
// address; it talks to the kubelet with its own client certificate (logs, exec).
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { requireKubeBinary, serviceAccountIssuer, writeKubeconfig } from "../../support/kube-apiserver.ts";
import { freePort, httpGet, startDaemon, type Daemon } from "../../support/process.ts";
import type { ClusterPki } from "./cluster-pki.ts";
import type { ClusterNetwork } from "./network.ts";

export interface E2eApiServer {
  url: string;
  port: number;
  daemon: Daemon;
}

export async function startApiServer(opts: {
  binDir: string;
  etcdUrl: string;
  pki: ClusterPki;
  net: ClusterNetwork;
  stateDir: string;
  logFile: string;
  signal?: AbortSignal;
}): Promise<E2eApiServer> {
  const binary = requireKubeBinary(opts.binDir, "kube-apiserver");
  const { pki, net } = opts;
  const port = await freePort();
  const certDir = join(opts.stateDir, "apiserver-certs");
  await mkdir(certDir, { recursive: true });
  const url = `https://${net.nodeIp}:${port}`;
  const ca = readFileSync(pki.ca.certFile);
  const cert = readFileSync(pki.admin.certFile);
  const key = readFileSync(pki.admin.keyFile);
  const daemon = await startDaemon({
    name: "kube-apiserver",
    command: binary,
    args: [
      `--etcd-servers=${opts.etcdUrl}`,
      `--cert-dir=${certDir}`,
      `--tls-cert-file=${pki.serving.certFile}`,
      `--tls-private-key-file=${pki.serving.keyFile}`,
      `--client-ca-file=${pki.ca.certFile}`,
      `--secure-port=${port}`,
      `--bind-address=${net.nodeIp}`,
      `--advertise-address=${net.nodeIp}`,
      `--service-cluster-ip-range=${net.serviceCidr}`,
      "--authorization-mode=Node,RBAC",
      `--service-account-issuer=${serviceAccountIssuer}`,
      `--service-account-key-file=${pki.serviceAccount.publicKeyFile}`,
      `--service-account-signing-key-file=${pki.serviceAccount.privateKeyFile}`,
      `--kubelet-client-certificate=${pki.apiserverKubeletClient.certFile}`,
      `--kubelet-client-key=${pki.apiserverKubeletClient.keyFile}`,
      `--kubelet-certificate-authority=${pki.ca.certFile}`,
      "--kubelet-preferred-address-types=InternalIP",
      `--requestheader-client-ca-file=${pki.ca.certFile}`,
      "--requestheader-allowed-names=front-proxy-client",
      "--requestheader-username-headers=X-Remote-User",
      "--requestheader-group-headers=X-Remote-Group",
      "--requestheader-extra-headers-prefix=X-Remote-Extra-",
      `--proxy-client-cert-file=${pki.frontProxyClient.certFile}`,
      `--proxy-client-key-file=${pki.frontProxyClient.keyFile}`,
      "--allow-privileged=true",
      "--profiling=false",
      "--event-ttl=1h",
    ],
    logFile: opts.logFile,
    signal: opts.signal,
    timeoutMs: 120_000,
    intervalMs: 250,
    ready: async () => {
      const r = await httpGet(`${url}/readyz?verbose`, { ca, cert, key, timeoutMs: 5000 });
      if (r.status === 200) return true;
      throw new Error(`/readyz ${r.status}: ${r.body.split("\n").filter((l) => l.includes("[-]")).join("; ")}`);
    },
  });
  return { url, port, daemon };
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
  const [port] = await Promise.all([freePort(), writeKubeconfig(kubeconfig, opts.apiServerUrl, opts.pki.ca.certFile, opts.pki.scheduler, "system:kube-scheduler")]);
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
