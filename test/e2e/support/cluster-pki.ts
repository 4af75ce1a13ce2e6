// Certificates of the e2e cluster: one CA; the API server's serving certificate valid for the node
// address (the bridge gateway, where it listens), the `kubernetes` Service IP (what pods use) and
// 127.0.0.1; client certificates for the admin, kube-controller-manager, kube-scheduler, the
// kubelet (system:node:<node>, group system:nodes, for the Node authorizer) and the API server's
// client towards kubelets; service-account signing keys. Same shape as the integration test bed's
// KubePki, so its kube-controller-manager starter can be reused.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { KubePki } from "../../support/kube-apiserver.ts";
import { makeCa, makeLeaf, makeRsaKeyPair, type CertFiles } from "../../support/pki.ts";

export interface ClusterPki extends KubePki {
  scheduler: CertFiles;
  kubelet: CertFiles;
  kubeletServing: CertFiles;
  apiserverKubeletClient: CertFiles;
}

export async function makeClusterPki(dir: string, opts: { nodeName: string; nodeIp: string; serviceIp: string }): Promise<ClusterPki> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const adminToken = randomBytes(24).toString("hex");
  const tokenFile = join(dir, "tokens.csv");
  const [ca, serviceAccount] = await Promise.all([
    makeCa(dir, "ca", "nio-e2e-kubernetes-ca"),
    makeRsaKeyPair(dir, "service-account"),
    writeFile(tokenFile, `${adminToken},e2e-admin-token,e2e-admin-token,"system:masters"\n`, { mode: 0o600 }),
  ]);
  const leaf = (name: string, commonName: string, usage: "server" | "client", extra: { organization?: string; altNames?: string[] } = {}) =>
    makeLeaf(dir, ca, { name, commonName, usage, ...extra });
  const [serving, admin, controllerManager, scheduler, kubelet, kubeletServing, apiserverKubeletClient, frontProxyClient] = await Promise.all([
    leaf("apiserver", "kube-apiserver", "server", {
      altNames: [
        `IP:${opts.nodeIp}`,
        `IP:${opts.serviceIp}`,
        "IP:127.0.0.1",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
      ],
    }),
    leaf("admin", "e2e-admin", "client", { organization: "system:masters" }),
    leaf("kube-controller-manager", "system:kube-controller-manager", "client"),
    leaf("kube-scheduler", "system:kube-scheduler", "client"),
    leaf("kubelet", `system:node:${opts.nodeName}`, "client", { organization: "system:nodes" }),
    leaf("kubelet-serving", opts.nodeName, "server", { altNames: [`IP:${opts.nodeIp}`, `DNS:${opts.nodeName}`] }),
    // The API server's identity towards kubelets (logs, exec): authorised by RBAC on nodes/proxy.
    leaf("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "client", { organization: "system:masters" }),
    leaf("front-proxy-client", "front-proxy-client", "client"),
  ]);
  return {
    dir,
    ca,
    serving,
    admin,
    controllerManager,
    scheduler,
    kubelet,
    kubeletServing,
    apiserverKubeletClient,
    frontProxyClient,
    serviceAccount,
    adminToken,
    tokenFile,
  };
}
