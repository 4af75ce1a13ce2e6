// kube-apiserver for the test bed, flags as controller-runtime's envtest uses them, plus a real
// PKI: a cluster CA, a serving certificate for 127.0.0.1, client certificates for an admin in
// system:masters and for kube-controller-manager, a static admin token, and service-account
// signing keys. Binaries come from scripts/build-k8s.sh (a cache keyed by Kubernetes version).
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { auditArgs, writeAuditPolicy } from "./audit-log.ts";
import { makeCa, makeLeaf, makeRsaKeyPair, type CertFiles, type KeyPairFiles } from "./pki.ts";
import { freePort, httpGet, startDaemon, StartError, type Daemon } from "./process.ts";

const serviceClusterIpRange = "10.0.0.0/24";
export const serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local";

/** The Kubernetes version the wrapper module in testbed/k8s builds (from its go.mod). */
export function kubernetesVersion(repoRoot: string): string {
  const goMod = readFileSync(join(repoRoot, "testbed/k8s/go.mod"), "utf8");
  const m = /^\s*k8s\.io\/kubernetes\s+v(\d+\.\d+\.\d+)\s*$/m.exec(goMod);
  if (!m?.[1]) throw new Error("cannot find the k8s.io/kubernetes version in testbed/k8s/go.mod");
  return m[1];
}

/** Where scripts/build-k8s.sh puts the binaries (same rule as the script). */
export function kubeBinDir(repoRoot: string): string {
  if (process.env.NIO_K8S_BIN) return process.env.NIO_K8S_BIN;
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(cache, "nix-image-operator", "k8s", `v${kubernetesVersion(repoRoot)}`);
}

/** Fails with a how-to-get-it message when a Kubernetes binary is missing. */
export function requireKubeBinary(binDir: string, name: string): string {
  const file = join(binDir, name);
  if (!existsSync(file)) {
    const building = existsSync(`${binDir}.tmp`) ? ` (a build seems to be running or to have failed: ${binDir}.tmp exists)` : "";
    throw new StartError(
      `${name} not found in ${binDir}${building}: run scripts/setup.sh (or scripts/build-k8s.sh), ` +
        "which builds the Kubernetes binaries from Go modules once and caches them",
    );
  }
  return file;
}

export interface KubePki {
  dir: string;
  ca: CertFiles;
  serving: CertFiles;
  admin: CertFiles;
  controllerManager: CertFiles;
  /** Client certificate the aggregator uses towards extension API servers (front proxy). */
  frontProxyClient: CertFiles;
  serviceAccount: KeyPairFiles;
  adminToken: string;
  tokenFile: string;
}

export async function makeKubePki(dir: string): Promise<KubePki> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const adminToken = randomBytes(24).toString("hex");
  const tokenFile = join(dir, "tokens.csv");
  const [ca, serviceAccount] = await Promise.all([
    makeCa(dir, "ca", "testbed-kubernetes-ca"),
    makeRsaKeyPair(dir, "service-account"),
    writeFile(tokenFile, `${adminToken},testbed-admin-token,testbed-admin-token,"system:masters"\n`, { mode: 0o600 }),
  ]);
  const [serving, admin, controllerManager, frontProxyClient] = await Promise.all([
    makeLeaf(dir, ca, {
      name: "apiserver",
      commonName: "kube-apiserver",
      usage: "server",
      altNames: [
        "IP:127.0.0.1",
        "IP:10.0.0.1",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
      ],
    }),
    makeLeaf(dir, ca, { name: "admin", commonName: "testbed-admin", organization: "system:masters", usage: "client" }),
    makeLeaf(dir, ca, { name: "kube-controller-manager", commonName: "system:kube-controller-manager", usage: "client" }),
    makeLeaf(dir, ca, { name: "front-proxy-client", commonName: "front-proxy-client", usage: "client" }),
  ]);
  return { dir, ca, serving, admin, controllerManager, frontProxyClient, serviceAccount, adminToken, tokenFile };
}

/** A kubeconfig with everything embedded, so it can be copied around. */
export async function writeKubeconfig(file: string, server: string, caFile: string, client: CertFiles, user: string): Promise<void> {
  const [ca, cert, key] = await Promise.all([readFile(caFile), readFile(client.certFile), readFile(client.keyFile)]);
  const doc = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "testbed", cluster: { server, "certificate-authority-data": ca.toString("base64") } }],
    users: [
      {
        name: user,
        user: { "client-certificate-data": cert.toString("base64"), "client-key-data": key.toString("base64") },
      },
    ],
    contexts: [{ name: "testbed", context: { cluster: "testbed", user } }],
    "current-context": "testbed",
    preferences: {},
  };
  await writeFile(file, stringify(doc), { mode: 0o600 });
}

export interface ApiServerOptions {
  binDir: string;
  etcdUrl: string;
  pki: KubePki;
  stateDir: string;
  logFile: string;
  timeoutMs?: number;
  extraArgs?: string[];
  signal?: AbortSignal;
  /** Where it listens and what it advertises; 127.0.0.1 for the test bed, the node IP for e2e. */
  bindAddress?: string;
  serviceClusterIpRange?: string;
  /** Listen on this port (e.g. a restart on the port clients know); default: a free one. */
  port?: number;
  /** Audit log of every write (test/support/audit-log.ts), the fault suite's oracle; none when unset. */
  auditLogFile?: string;
}

export interface ApiServer {
  url: string;
  port: number;
  daemon: Daemon;
}

export async function startKubeApiserver(opts: ApiServerOptions): Promise<ApiServer> {
  const binary = requireKubeBinary(opts.binDir, "kube-apiserver");
  const port = opts.port ?? (await freePort());
  const certDir = join(opts.stateDir, "apiserver-certs");
  await mkdir(certDir, { recursive: true });
  const address = opts.bindAddress ?? "127.0.0.1";
  const url = `https://${address}:${port}`;
  const { pki } = opts;
  const audit: string[] = [];
  if (opts.auditLogFile) {
    const policyFile = join(opts.stateDir, "audit-policy.yaml");
    await writeAuditPolicy(policyFile);
    audit.push(...auditArgs(policyFile, opts.auditLogFile));
  }
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
      `--token-auth-file=${pki.tokenFile}`,
      `--secure-port=${port}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--service-cluster-ip-range=${opts.serviceClusterIpRange ?? serviceClusterIpRange}`,
      "--authorization-mode=Node,RBAC",
      `--service-account-issuer=${serviceAccountIssuer}`,
      `--service-account-key-file=${pki.serviceAccount.publicKeyFile}`,
      `--service-account-signing-key-file=${pki.serviceAccount.privateKeyFile}`,
      // Front proxy (aggregation layer), so components reading extension-apiserver-authentication
      // find a complete configuration.
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
      ...audit,
      ...(opts.extraArgs ?? []),
    ],
    logFile: opts.logFile,
    signal: opts.signal,
    // /readyz waits for etcd, RBAC bootstrap and the other post-start hooks: 10-30 s on 2 cores.
    timeoutMs: opts.timeoutMs ?? 120_000,
    ready: async () => {
      const r = await httpGet(`${url}/readyz?verbose`, { ca, cert, key, timeoutMs: 5000 });
      if (r.status === 200) return true;
      throw new Error(
        `/readyz ${r.status}: ${r.body
          .split("\n")
          .filter((l) => l.includes("[-]"))
          .join("; ")}`,
      );
    },
  });
  return { url, port, daemon };
}

/** The PKI that makeKubePki wrote into `dir` (the same file names), e.g. for a second API server on the test bed's etcd. */
export function loadKubePki(dir: string, adminToken: string): KubePki {
  const pair = (name: string): CertFiles => ({ certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) });
  return {
    dir,
    ca: pair("ca"),
    serving: pair("apiserver"),
    admin: pair("admin"),
    controllerManager: pair("kube-controller-manager"),
    frontProxyClient: pair("front-proxy-client"),
    serviceAccount: { privateKeyFile: join(dir, "service-account.key"), publicKeyFile: join(dir, "service-account.pub") },
    adminToken,
    tokenFile: join(dir, "tokens.csv"),
  };
}
