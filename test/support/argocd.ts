// Argo CD on the test bed (opt-in tier: npm run test:argocd, after `scripts/setup.sh --with-argocd`): the real
// application controller and repo server (built from Argo CD's Go modules by
// scripts/build-argocd.sh), Redis from Debian, Argo CD's CRDs, in a namespace of their own with
// the settings they read (argocd-cm, argocd-secret, the default AppProject). Out of cluster there is
// no in-cluster config, so the test bed's API server is registered as a cluster Secret and
// Applications name its URL as destination. No TLS between them (loopback); the repo server
// resolves branches afresh every 2 s (--revision-cache-expiration) and the controller compares
// every 5 s (--app-resync, no jitter). Logs: .testbed/<run>/argocd-<id>-<component>.log.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createNamespace, deleteNamespace, kubeClients, kubectl, waitFor } from "./kube.ts";
import { freePort, startDaemon, StartError, type Daemon } from "./process.ts";
import type { TestBed } from "./testbed-types.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const components = ["argocd-application-controller", "argocd-repo-server", "kustomize", "git-verify-wrapper.sh"];

/** Where scripts/build-argocd.sh puts the binaries and CRDs of the version pinned there. */
function argoCdDir(): { dir: string; version: string } {
  const script = readFileSync(join(repoRoot, "scripts/build-argocd.sh"), "utf8");
  const version = /^argocd_version=(\S+)$/m.exec(script)?.[1] ?? "unknown";
  const cache = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
  return { dir: join(cache, "nix-image-operator", "argocd", version), version };
}

export interface ArgoCd {
  version: string;
  /** The namespace Argo CD runs in and reads Applications from. */
  namespace: string;
  /** The destination server of the test bed's API server (a registered cluster). */
  server: string;
  stop(): Promise<void>;
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection(port, "127.0.0.1");
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });

export async function startArgoCd(bed: TestBed): Promise<ArgoCd> {
  const { dir, version } = argoCdDir();
  const missing = components.filter((c) => !existsSync(join(dir, c)));
  if (missing.length) {
    throw new StartError(`Argo CD ${version} ${missing.join(", ")} not found in ${dir}: run scripts/setup.sh --with-argocd (or scripts/build-argocd.sh)`);
  }
  const crds = ["application-crd.yaml", "appproject-crd.yaml"].map((f) => join(dir, "crds", f));
  await kubectl(["apply", "--server-side", "--force-conflicts", ...crds.flatMap((f) => ["-f", f])], { timeoutMs: 120_000 });
  for (const crd of ["applications.argoproj.io", "appprojects.argoproj.io"]) {
    await waitFor(
      `CRD ${crd} established`,
      async () => (await kubectl(["get", "crd", crd, "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"])).trim() === "True",
      { timeoutMs: 120_000 },
    );
  }

  const namespace = await createNamespace("argocd");
  const { core, kc } = kubeClients();
  const partOf = { "app.kubernetes.io/part-of": "argocd" };
  await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "argocd-cm", labels: partOf }, data: {} } });
  await core.createNamespacedSecret({
    namespace,
    body: { metadata: { name: "argocd-secret", labels: partOf }, stringData: { "server.secretkey": randomBytes(16).toString("hex") } },
  });
  await core.createNamespacedSecret({
    namespace,
    body: {
      metadata: { name: "testbed-cluster", labels: { "argocd.argoproj.io/secret-type": "cluster" } },
      stringData: {
        name: "testbed",
        server: bed.kube.server,
        config: JSON.stringify({ bearerToken: bed.kube.token, tlsClientConfig: { caData: (await readFile(bed.kube.caFile)).toString("base64") } }),
      },
    },
  });
  await kubeRequestJson(kc, "POST", `/apis/argoproj.io/v1alpha1/namespaces/${namespace}/appprojects`, {
    body: {
      apiVersion: "argoproj.io/v1alpha1",
      kind: "AppProject",
      metadata: { name: "default" },
      spec: { sourceRepos: ["*"], destinations: [{ server: "*", namespace: "*" }], clusterResourceWhitelist: [{ group: "*", kind: "*" }] },
    },
  });

  const id = randomBytes(3).toString("hex");
  const home = join(bed.stateDir, `argocd-${id}`);
  await mkdir(home, { recursive: true });
  const [redis, repoServer, repoMetrics, controllerMetrics] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const env = {
    ...process.env,
    PATH: `${dir}:${process.env.PATH}`,
    HOME: home,
    KUBECONFIG: bed.kube.kubeconfig,
    // Defaults point at paths of Argo CD's image.
    ARGOCD_GPG_ENABLED: "false",
    ARGOCD_GNUPGHOME: home,
    ARGOCD_SSH_DATA_PATH: home,
    ARGOCD_TLS_DATA_PATH: home,
  };
  const log = (c: string) => join(bed.logDir, `argocd-${id}-${c}.log`);
  const daemons: Daemon[] = [];
  const stop = async () => {
    for (const d of daemons.reverse()) await d.stop();
    await deleteNamespace(namespace);
  };
  try {
    daemons.push(
      await startDaemon({
        name: "redis-server",
        command: "redis-server",
        args: ["--port", String(redis), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", home],
        logFile: log("redis"),
        missingHint: "apt-get install redis-server, or run scripts/setup.sh --with-argocd",
        ready: () => listening(redis),
      }),
    );
    daemons.push(
      await startDaemon({
        name: "argocd-repo-server",
        command: join(dir, "argocd-repo-server"),
        // --client-ca-path= : its default (a path in Argo CD's image) is refused with --disable-tls.
        args: ["--port", String(repoServer), "--disable-tls", "--client-ca-path=", "--revision-cache-expiration", "2s"].concat([
          "--redis",
          `127.0.0.1:${redis}`,
          "--metrics-port",
          String(repoMetrics),
        ]),
        env,
        cwd: home,
        logFile: log("repo-server"),
        timeoutMs: 60_000,
        ready: () => listening(repoServer),
      }),
    );
    daemons.push(
      await startDaemon({
        name: "argocd-application-controller",
        command: join(dir, "argocd-application-controller"),
        args: ["--kubeconfig", bed.kube.kubeconfig, "--namespace", namespace, "--repo-server", `127.0.0.1:${repoServer}`, "--repo-server-plaintext"].concat([
          "--redis",
          `127.0.0.1:${redis}`,
          "--metrics-port",
          String(controllerMetrics),
          "--app-resync",
          "5",
          "--app-resync-jitter",
          "0",
        ]),
        env,
        cwd: home,
        logFile: log("application-controller"),
        timeoutMs: 60_000,
        ready: () => listening(controllerMetrics),
      }),
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { version, namespace, server: bed.kube.server, stop };
}
