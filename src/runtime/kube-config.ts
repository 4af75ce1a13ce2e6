import { existsSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join } from "node:path";
import type { RequestOptions } from "node:https";
import { parse } from "yaml";

/**
 * What the controller needs of a kubeconfig: where the API server is and how to authenticate.
 * client-node's KubeConfig satisfies it too (tests pass one), but the controller does not load
 * client-node for it: that package (all its generated model classes) costs about 85 MiB of
 * resident memory at start.
 */
export interface KubeAccess {
  getCurrentCluster(): { server: string } | null;
  applyToHTTPSOptions(options: RequestOptions): Promise<void>;
}

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

/**
 * The API server access of the controller: `file` when given; otherwise in-cluster (the pod's
 * ServiceAccount token, re-read as the kubelet rotates it), then $KUBECONFIG, then ~/.kube/config.
 * Client certificates, tokens and token files are handled here; a kubeconfig that needs an exec
 * or auth-provider plugin is handed to client-node's KubeConfig (loaded only then).
 */
export async function loadKubeAccess(options: { file?: string; env?: NodeJS.ProcessEnv } = {}): Promise<KubeAccess> {
  const env = options.env ?? process.env;
  if (options.file) return fromKubeconfigFile(options.file);
  if (env.KUBERNETES_SERVICE_HOST && existsSync(join(serviceAccountDir, "token"))) {
    const host = env.KUBERNETES_SERVICE_HOST.includes(":") ? `[${env.KUBERNETES_SERVICE_HOST}]` : env.KUBERNETES_SERVICE_HOST;
    return accessOf({
      server: `https://${host}:${env.KUBERNETES_SERVICE_PORT ?? "443"}`,
      ca: readFileSync(join(serviceAccountDir, "ca.crt")),
      tokenFile: join(serviceAccountDir, "token"),
    });
  }
  const file = env.KUBECONFIG?.split(":").find(Boolean) ?? join(homedir(), ".kube", "config");
  if (!existsSync(file)) throw new Error(`no API server access: not in a cluster, and no kubeconfig at ${file}; pass --kubeconfig FILE`);
  return fromKubeconfigFile(file);
}

interface Access {
  server: string;
  ca?: Buffer;
  insecure?: boolean;
  serverName?: string;
  cert?: Buffer;
  key?: Buffer;
  token?: string;
  tokenFile?: string;
  basic?: string;
}

type Named<T> = { name: string } & T;
interface KubeconfigFile {
  "current-context"?: string;
  contexts?: Named<{ context?: { cluster?: string; user?: string } }>[];
  clusters?: Named<{
    cluster?: {
      server?: string;
      "certificate-authority"?: string;
      "certificate-authority-data"?: string;
      "insecure-skip-tls-verify"?: boolean;
      "tls-server-name"?: string;
    };
  }>[];
  users?: Named<{
    user?: {
      token?: string;
      tokenFile?: string;
      "client-certificate"?: string;
      "client-certificate-data"?: string;
      "client-key"?: string;
      "client-key-data"?: string;
      username?: string;
      password?: string;
      exec?: unknown;
      "auth-provider"?: unknown;
    };
  }>[];
}

async function fromKubeconfigFile(file: string): Promise<KubeAccess> {
  const doc = (parse(readFileSync(file, "utf8")) ?? {}) as KubeconfigFile;
  const contextName = doc["current-context"];
  const context = doc.contexts?.find((c) => c.name === contextName)?.context ?? doc.contexts?.[0]?.context;
  const cluster = doc.clusters?.find((c) => c.name === context?.cluster)?.cluster ?? doc.clusters?.[0]?.cluster;
  const user = doc.users?.find((u) => u.name === context?.user)?.user ?? {};
  if (!cluster?.server) throw new Error(`kubeconfig ${file}: the current context names no cluster with a server`);
  if (user.exec !== undefined || user["auth-provider"] !== undefined) {
    // Plugins (cloud logins) are rare for a controller; client-node knows them all.
    const { KubeConfig } = await import("@kubernetes/client-node");
    const kc = new KubeConfig();
    kc.loadFromFile(file);
    return kc;
  }
  const base = dirname(file);
  const read = (path: string | undefined, data: string | undefined) =>
    data ? Buffer.from(data, "base64") : path ? readFileSync(isAbsolute(path) ? path : join(base, path)) : undefined;
  return accessOf({
    server: cluster.server,
    ca: read(cluster["certificate-authority"], cluster["certificate-authority-data"]),
    insecure: cluster["insecure-skip-tls-verify"],
    serverName: cluster["tls-server-name"],
    cert: read(user["client-certificate"], user["client-certificate-data"]),
    key: read(user["client-key"], user["client-key-data"]),
    token: user.token,
    tokenFile: user.tokenFile ? (isAbsolute(user.tokenFile) ? user.tokenFile : join(base, user.tokenFile)) : undefined,
    basic: user.username !== undefined ? Buffer.from(`${user.username}:${user.password ?? ""}`).toString("base64") : undefined,
  });
}

function accessOf(access: Access): KubeAccess {
  // A token file is re-read when it changed (the kubelet rotates projected tokens), at most once a minute.
  let token = access.token;
  let checkedMs = 0;
  let mtimeMs = -1;
  const currentToken = () => {
    if (!access.tokenFile) return token;
    const now = Date.now();
    if (now - checkedMs >= 60_000) {
      checkedMs = now;
      const stat = statSync(access.tokenFile);
      if (stat.mtimeMs !== mtimeMs) {
        mtimeMs = stat.mtimeMs;
        token = readFileSync(access.tokenFile, "utf8").trim();
      }
    }
    return token;
  };
  return {
    getCurrentCluster: () => ({ server: access.server }),
    applyToHTTPSOptions: (options) => {
      if (access.ca) options.ca = access.ca;
      if (access.cert) options.cert = access.cert;
      if (access.key) options.key = access.key;
      if (access.insecure) options.rejectUnauthorized = false;
      if (access.serverName) options.servername = access.serverName;
      const bearer = currentToken();
      const authorization = bearer ? `Bearer ${bearer}` : access.basic ? `Basic ${access.basic}` : undefined;
      if (authorization) options.headers = { ...options.headers, authorization };
      return Promise.resolve();
    },
  };
}
