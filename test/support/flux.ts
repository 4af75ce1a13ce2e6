// Flux on the test bed: the real source-controller and kustomize-controller (built from Flux's Go
// modules by scripts/build-flux.sh), their CRDs installed from the same modules, both running
// against the test bed's API server with the admin kubeconfig. Source-controller serves its
// artifacts over HTTP on loopback (--storage-addr / --storage-adv-addr), where kustomize-controller
// fetches them. No leader election; health and metrics on free loopback ports. Started per test
// file (only the GitOps tests need it); logs in .testbed/<run>/flux-<id>-<controller>.log.
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { kubectl } from "./kube.ts";
import { freePort, httpGet, startDaemon, StartError, type Daemon } from "./process.ts";
import type { TestBed } from "./testbed-types.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const fluxControllers = ["source-controller", "kustomize-controller"] as const;

/** Where scripts/build-flux.sh puts the binaries and CRDs of the version pinned there. */
function fluxDir(): { dir: string; version: string } {
  const script = readFileSync(join(repoRoot, "scripts/build-flux.sh"), "utf8");
  const version = /^flux_version=(\S+)$/m.exec(script)?.[1] ?? "unknown";
  const cache = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
  return { dir: join(cache, "nix-image-operator", "flux", version), version };
}

export interface Flux {
  version: string;
  daemons: Daemon[];
  stop(): Promise<void>;
}

async function installCrds(dir: string): Promise<void> {
  const files = fluxControllers.flatMap((c) =>
    readdirSync(join(dir, "crds", c))
      .filter((f) => f.endsWith(".yaml"))
      .map((f) => join(dir, "crds", c, f)),
  );
  await kubectl(["apply", "--server-side", "--force-conflicts", ...files.flatMap((f) => ["-f", f])], { timeoutMs: 60_000 });
  await kubectl(["wait", "--for=condition=Established", "--timeout=60s", ...files.flatMap((f) => ["-f", f])], { timeoutMs: 70_000 });
}

export async function startFlux(bed: TestBed): Promise<Flux> {
  const { dir, version } = fluxDir();
  const missing = fluxControllers.filter((c) => !existsSync(join(dir, c)) || !existsSync(join(dir, "crds", c)));
  if (missing.length) {
    throw new StartError(
      `Flux ${version} ${missing.join(", ")} not found in ${dir}: run scripts/setup.sh (or scripts/build-flux.sh; it builds Flux from its Go modules once and caches it)`,
    );
  }
  await installCrds(dir);
  const id = randomBytes(3).toString("hex");
  const stateDir = join(bed.stateDir, `flux-${id}`);
  await mkdir(join(stateDir, "storage"), { recursive: true });
  // controller-runtime reads KUBECONFIG; RUNTIME_NAMESPACE is where Flux would run (unused with
  // --watch-all-namespaces, its default, but read at start-up).
  const env = { ...process.env, KUBECONFIG: bed.kube.kubeconfig, RUNTIME_NAMESPACE: "flux-system" };
  const daemons: Daemon[] = [];
  const stop = async () => {
    await Promise.all(daemons.map((d) => d.stop()));
  };
  try {
    for (const controller of fluxControllers) {
      const [health, metrics, storage] = await Promise.all([freePort(), freePort(), freePort()]);
      const storageArgs =
        controller === "source-controller"
          ? [`--storage-path=${join(stateDir, "storage")}`, `--storage-addr=127.0.0.1:${storage}`, `--storage-adv-addr=127.0.0.1:${storage}`]
          : [];
      daemons.push(
        await startDaemon({
          name: `flux ${controller}`,
          command: join(dir, controller),
          args: [
            ...storageArgs,
            `--health-addr=127.0.0.1:${health}`,
            `--metrics-addr=127.0.0.1:${metrics}`,
            "--enable-leader-election=false",
            "--log-encoding=console",
            "--log-level=debug",
          ],
          env,
          logFile: join(bed.logDir, `flux-${id}-${controller}.log`),
          timeoutMs: 60_000,
          ready: async () => (await httpGet(`http://127.0.0.1:${health}/readyz`, { timeoutMs: 2000 })).status === 200,
        }),
      );
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { version, daemons, stop };
}
