// kube-controller-manager for the test bed: Jobs get Pods, Deployments get ReplicaSets, namespaces
// get their "default" ServiceAccount, owner references are garbage-collected. It runs with its own
// identity (system:kube-controller-manager client certificate) and per-controller service-account
// credentials, as in a real cluster. No scheduler and no kubelet: pods stay Pending.
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { writeKubeconfig, requireKubeBinary, type KubePki } from "./kube-apiserver.ts";
import { freePort, httpGet, startDaemon, type Daemon } from "./process.ts";

export interface ControllerManagerOptions {
  binDir: string;
  apiServerUrl: string;
  pki: KubePki;
  stateDir: string;
  logFile: string;
  timeoutMs?: number;
  extraArgs?: string[];
  signal?: AbortSignal;
}

export interface ControllerManager {
  kubeconfig: string;
  daemon: Daemon;
}

export async function startKubeControllerManager(opts: ControllerManagerOptions): Promise<ControllerManager> {
  const binary = requireKubeBinary(opts.binDir, "kube-controller-manager");
  const { pki } = opts;
  const dir = join(opts.stateDir, "kube-controller-manager");
  await mkdir(dir, { recursive: true });
  const kubeconfig = join(dir, "kubeconfig");
  const [port] = await Promise.all([
    freePort(),
    writeKubeconfig(kubeconfig, opts.apiServerUrl, pki.ca.certFile, pki.controllerManager, "system:kube-controller-manager"),
  ]);
  const ca = readFileSync(pki.ca.certFile);
  const cert = readFileSync(pki.admin.certFile);
  const key = readFileSync(pki.admin.keyFile);
  const daemon = await startDaemon({
    name: "kube-controller-manager",
    command: binary,
    args: [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      "--bind-address=127.0.0.1",
      `--secure-port=${port}`,
      `--cert-dir=${join(dir, "certs")}`,
      `--service-account-private-key-file=${pki.serviceAccount.privateKeyFile}`,
      `--root-ca-file=${pki.ca.certFile}`,
      `--cluster-signing-cert-file=${pki.ca.certFile}`,
      `--cluster-signing-key-file=${pki.ca.keyFile}`,
      "--use-service-account-credentials=true",
      "--leader-elect=false",
      "--controllers=*",
      "--cluster-name=testbed",
      "--profiling=false",
      // Otherwise it creates /usr/libexec/kubernetes/kubelet-plugins/volume/exec on the host.
      `--flex-volume-plugin-dir=${join(dir, "flexvolume")}`,
      ...(opts.extraArgs ?? []),
    ],
    logFile: opts.logFile,
    signal: opts.signal,
    timeoutMs: opts.timeoutMs ?? 60_000,
    ready: async () => {
      const h = await httpGet(`https://127.0.0.1:${port}/healthz`, { rejectUnauthorized: false, timeoutMs: 2000 });
      if (h.status !== 200) throw new Error(`/healthz ${h.status}: ${h.body.slice(0, 200)}`);
      // Controllers really act: the serviceaccount controller made the "default" ServiceAccount.
      const sa = await httpGet(`${opts.apiServerUrl}/api/v1/namespaces/default/serviceaccounts/default`, {
        ca,
        cert,
        key,
        timeoutMs: 2000,
      });
      if (sa.status !== 200) throw new Error(`default/default ServiceAccount not there yet (${sa.status})`);
      return true;
    },
  });
  return { kubeconfig, daemon };
}
