// vitest globalSetup of the integration tier: starts the test bed (etcd, kube-apiserver,
// kube-controller-manager, two docker-registries, a smart-HTTP git server, a test-owned Nix
// config) once per run on loopback, in parallel where possible; provides its description as
// `inject("testbed")`; tears it all down afterwards. Logs: .testbed/<run-id>/<component>.log.
// A component that cannot start fails the run with what is missing and how to get it.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { TestProject } from "vitest/node";
import { startEtcd } from "./etcd.ts";
import { startGitServer } from "./git-server.ts";
import { kubeBinDir, kubernetesVersion, makeKubePki, serviceAccountIssuer, startKubeApiserver, writeKubeconfig } from "./kube-apiserver.ts";
import { startKubeControllerManager } from "./kube-controller-manager.ts";
import { prepareNixEnv } from "./nix-env.ts";
import { makeCa } from "./pki.ts";
import { addExitCleanup, liveDaemons, onLiveDaemonsChanged, retryOnPortConflict, StartError } from "./process.ts";
import { startRegistry } from "./registry.ts";
import { supplyChainTool } from "./supply-chain-tools.ts";
import type { TestBed } from "./testbed-types.ts";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

export interface RunningTestBed {
  bed: TestBed;
  /** Milliseconds from start to all components ready, per component and in total. */
  timings: Record<string, number>;
  stop(): Promise<void>;
}

const setupHint = "run scripts/setup.sh";

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((d) => d && existsSync(join(d, cmd)));
}

/** Every missing prerequisite at once, so one setup.sh run fixes them all. */
function missingPrerequisites(binDir: string): string[] {
  const missing: string[] = [];
  const debian: Array<[string, string]> = [
    ["etcd", "etcd-server"],
    ["docker-registry", "docker-registry"],
    ["htpasswd", "apache2-utils"],
    ["openssl", "openssl"],
    ["git", "git"],
    ["nix", "nix-bin"],
  ];
  for (const [cmd, pkg] of debian) {
    if (!onPath(cmd)) missing.push(`${cmd} not found on PATH: apt-get install ${pkg}, or ${setupHint}`);
  }
  const building = existsSync(`${binDir}.tmp`) ? ` (${binDir}.tmp exists: a build is running or failed)` : "";
  const kube = ["kube-apiserver", "kube-controller-manager", "kubectl"].filter((c) => !existsSync(join(binDir, c)));
  if (kube.length) {
    missing.push(
      `${kube.join(", ")} not found in ${binDir}${building}: ${setupHint} ` +
        "(or scripts/build-k8s.sh; it builds Kubernetes from Go modules once, tens of minutes, and caches the binaries)",
    );
  }
  const helm = helmBinary();
  if (!existsSync(helm)) missing.push(`helm not found at ${helm}: ${setupHint} (or scripts/build-helm.sh)`);
  for (const tool of ["cosign", "oras"] as const) {
    const bin = supplyChainTool(tool);
    if (!existsSync(bin)) missing.push(`${tool} not found at ${bin}: ${setupHint} (or scripts/build-supply-chain-tools.sh)`);
  }
  return missing;
}

/** Helm built by scripts/build-helm.sh (version pinned there). */
export function helmBinary(): string {
  const script = readFileSync(join(repoRoot, "scripts/build-helm.sh"), "utf8");
  const version = /^helm_version=(\S+)$/m.exec(script)?.[1] ?? "unknown";
  const cache = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
  return join(cache, "nix-image-operator", `helm-${version}`, "helm");
}

interface PidsFile {
  owner: number;
  ownerStart: string;
  stateDir: string;
  daemons: Array<{ pid: number; name: string; command: string }>;
}

function procStart(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
  } catch {
    return "";
  }
}

function procCommand(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
  } catch {
    return "";
  }
}

/**
 * Kills what an earlier run left behind when its runner died without teardown (e.g. SIGKILL),
 * removes its state, and keeps only the newest `keep` log directories.
 */
function cleanUpEarlierRuns(testbedDir: string, keep = 10): void {
  if (!existsSync(testbedDir)) return;
  const runs = readdirSync(testbedDir).sort();
  const finished: string[] = [];
  for (const run of runs) {
    const dir = join(testbedDir, run);
    const pidsFile = join(dir, "pids.json");
    if (existsSync(pidsFile)) {
      let info: PidsFile;
      try {
        info = JSON.parse(readFileSync(pidsFile, "utf8")) as PidsFile;
      } catch {
        continue;
      }
      const ownerAlive = info.ownerStart !== "" && procStart(info.owner) === info.ownerStart;
      if (ownerAlive) continue; // another test run in progress
      for (const d of info.daemons) {
        if (procCommand(d.pid) === d.command) {
          try {
            process.kill(-d.pid, "SIGKILL");
          } catch {
            // gone
          }
        }
      }
      rmSync(info.stateDir, { recursive: true, force: true });
      rmSync(pidsFile, { force: true });
    }
    finished.push(dir);
  }
  for (const dir of finished.slice(0, Math.max(0, finished.length - keep))) {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Polls the owner (this process) every second; when it is gone, SIGKILLs each recorded process
// group whose leader still runs the recorded command, then removes the state. Its own process
// group, so whatever kills ours does not kill it.
const watchdogScript = `
owner=$1; groups=$2; state=$3; pids=$4
alive() { s=$(sed 's/.*) //' "/proc/$owner/stat" 2>/dev/null | cut -d' ' -f1); [ -n "$s" ] && [ "$s" != Z ]; }
while alive; do sleep 1; done
if [ -f "$groups" ]; then
  while read -r pid cmd; do
    [ -n "$pid" ] || continue
    now=$(tr '\\0' '\\n' < "/proc/$pid/cmdline" 2>/dev/null | head -n 1)
    [ "$now" = "$cmd" ] && kill -KILL "-$pid" 2>/dev/null
  done < "$groups"
  rm -f "$groups" "$pids"
  [ -n "$state" ] && rm -rf "$state"
fi
`;

function startWatchdog(groupsFile: string, stateDir: string, pidsFile: string): () => void {
  const child = spawn("/bin/sh", ["-c", watchdogScript, "watchdog", String(process.pid), groupsFile, stateDir, pidsFile], {
    detached: true,
    stdio: "ignore",
  });
  child.unref();
  return () => {
    try {
      if (child.pid) process.kill(child.pid, "SIGKILL");
    } catch {
      // gone
    }
  };
}

function runId(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}-${process.pid}`;
}

/** Starts every component; on any failure stops what started and throws one error naming all failures. */
export async function startTestBed(options: { keepState?: boolean } = {}): Promise<RunningTestBed> {
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  const id = runId();
  const testbedDir = join(repoRoot, ".testbed");
  cleanUpEarlierRuns(testbedDir);
  const logDir = join(testbedDir, id);
  const stateDir = join(tmpdir(), `nio-testbed-${id}`);
  const binDir = kubeBinDir(repoRoot);
  const missing = missingPrerequisites(binDir);
  if (missing.length) {
    throw new StartError(`The test bed cannot start; missing:\n  - ${missing.join("\n  - ")}`);
  }
  await Promise.all([mkdir(logDir, { recursive: true }), mkdir(join(stateDir, "tmp"), { recursive: true })]);
  const log = (name: string) => join(logDir, `${name}.log`);

  const pidsFile = join(logDir, "pids.json");
  const groupsFile = join(logDir, "pgids");
  const recordPids = () => {
    const daemons = liveDaemons();
    const info: PidsFile = { owner: process.pid, ownerStart: procStart(process.pid), stateDir, daemons };
    writeFileSync(pidsFile, JSON.stringify(info, null, 2));
    writeFileSync(groupsFile, daemons.map((d) => `${d.pid} ${d.command}\n`).join(""));
  };
  recordPids();
  const stopRecording = onLiveDaemonsChanged(recordPids);
  const keepState = options.keepState || !!process.env.NIO_TESTBED_KEEP;
  // Killed without a chance to clean up (SIGKILL, or a CI timeout killing only our process
  // group): the watchdog kills the daemons' process groups and removes the state.
  const stopWatchdog = startWatchdog(groupsFile, keepState ? "" : stateDir, pidsFile);
  // Interrupted (Ctrl-C) or exiting without teardown: daemons are killed by process.ts, then this.
  const removeExitCleanup = addExitCleanup(() => {
    stopWatchdog();
    if (!keepState) rmSync(stateDir, { recursive: true, force: true });
    rmSync(pidsFile, { force: true });
    rmSync(groupsFile, { force: true });
  });

  // Phase 0 (kube-controller-manager, kube-apiserver) stops before phase 1 (etcd, registries,
  // git): the apiserver exits in ~1 s while etcd is up, but hangs on a dead etcd.
  const stops: Array<{ phase: number; stop: () => Promise<void> }> = [];
  const abort = new AbortController();
  const signal = abort.signal;
  const step = <T>(name: string, p: Promise<T>, stopOf?: (v: T) => () => Promise<void>, phase = 1): Promise<T> =>
    p.then(
      (v) => {
        timings[name] = Math.round(performance.now() - t0);
        if (stopOf) stops.push({ phase, stop: stopOf(v) });
        return v;
      },
      (e: unknown) => {
        abort.abort();
        throw e;
      },
    );

  const etcd = step(
    "etcd",
    retryOnPortConflict(() => startEtcd({ stateDir, logFile: log("etcd"), signal })),
    (e) => () => e.daemon.stop(),
  );
  const pki = step("pki", makeKubePki(join(stateDir, "pki")));
  const apiserver = step(
    "kube-apiserver",
    Promise.all([etcd, pki]).then(([e, k]) =>
      retryOnPortConflict(() =>
        startKubeApiserver({ binDir, etcdUrl: e.url, pki: k, stateDir, logFile: log("kube-apiserver"), auditLogFile: join(stateDir, "audit.log"), signal }),
      ),
    ),
    (a) => () => a.daemon.stop(),
    0,
  );
  const adminKubeconfig = join(stateDir, "admin.kubeconfig");
  const kubeconfig = step(
    "kubeconfig",
    Promise.all([apiserver, pki]).then(([a, k]) => writeKubeconfig(adminKubeconfig, a.url, k.ca.certFile, k.admin, "testbed-admin")),
  );
  const kcm = step(
    "kube-controller-manager",
    Promise.all([apiserver, pki]).then(([a, k]) =>
      retryOnPortConflict(() => startKubeControllerManager({ binDir, apiServerUrl: a.url, pki: k, stateDir, logFile: log("kube-controller-manager"), signal })),
    ),
    (c) => () => c.daemon.stop(),
    0,
  );
  const plain = step(
    "registry-plain",
    retryOnPortConflict(() => startRegistry({ name: "registry-plain", dir: join(stateDir, "registry-plain"), logFile: log("registry-plain"), signal })),
    (r) => () => r.daemon.stop(),
  );
  const tls = step(
    "registry-tls",
    mkdir(join(stateDir, "registry-tls"), { recursive: true })
      .then(() => makeCa(join(stateDir, "registry-tls"), "ca", "testbed-registry-ca"))
      .then((ca) =>
        retryOnPortConflict(() =>
          startRegistry({
            name: "registry-tls",
            dir: join(stateDir, "registry-tls"),
            logFile: log("registry-tls"),
            tls: { ca, username: "testbed", password: randomBytes(12).toString("hex") },
            signal,
          }),
        ),
      ),
    (r) => () => r.daemon.stop(),
  );
  const git = step("git", startGitServer({ root: join(stateDir, "git"), logFile: log("git") }), (g) => () => g.stop());
  const nix = step("nix", prepareNixEnv(join(stateDir, "nix")));

  const all = [etcd, pki, apiserver, kubeconfig, kcm, plain, tls, git, nix] as const;
  const settled = await Promise.allSettled(all);
  const stop = async () => {
    const all = stops.splice(0);
    for (const phase of [0, 1]) {
      await Promise.allSettled(all.filter((s) => s.phase === phase).map((s) => s.stop()));
    }
    if (!keepState) await rm(stateDir, { recursive: true, force: true });
    rmSync(pidsFile, { force: true });
    rmSync(groupsFile, { force: true });
    stopRecording();
    stopWatchdog();
    removeExitCleanup();
  };
  const failures = settled.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
  if (failures.length) {
    await stop();
    const real = failures.filter((e) => !(e instanceof Error && / start aborted$/.test(e.message)));
    // Dependents (apiserver after etcd, ...) reject with the same error: report each cause once.
    const text = [...new Set((real.length ? real : failures).map((e) => (e instanceof Error ? e.message : String(e))))];
    throw new StartError(`The test bed failed to start (logs in ${logDir}):\n\n${text.join("\n\n")}`);
  }
  const [e, k, a, , , p, t, g, n] = settled.map((r) => (r.status === "fulfilled" ? r.value : undefined)) as [
    Awaited<typeof etcd>,
    Awaited<typeof pki>,
    Awaited<typeof apiserver>,
    unknown,
    unknown,
    Awaited<typeof plain>,
    Awaited<typeof tls>,
    Awaited<typeof git>,
    Awaited<typeof nix>,
  ];
  timings.total = Math.round(performance.now() - t0);
  const bed: TestBed = {
    runId: id,
    logDir,
    stateDir,
    tmpDir: join(stateDir, "tmp"),
    kube: {
      version: kubernetesVersion(repoRoot),
      binDir,
      kubectl: join(binDir, "kubectl"),
      helm: helmBinary(),
      kubeconfig: adminKubeconfig,
      server: a.url,
      caFile: k.ca.certFile,
      certFile: k.admin.certFile,
      keyFile: k.admin.keyFile,
      token: k.adminToken,
      serviceAccountIssuer,
      serviceAccountPublicKeyFile: k.serviceAccount.publicKeyFile,
      etcdUrl: e.url,
      auditLogFile: join(stateDir, "audit.log"),
      pkiDir: k.dir,
    },
    registry: {
      plain: { host: p.host, url: p.url, rootDir: p.rootDir },
      tls: {
        host: t.host,
        url: t.url,
        rootDir: t.rootDir,
        caFile: t.caFile ?? "",
        certsDir: t.certsDir ?? "",
        username: t.username ?? "",
        password: t.password ?? "",
        authFile: t.authFile ?? "",
      },
    },
    git: { baseUrl: g.baseUrl, root: g.root },
    nix: { env: n.env, confFile: n.confFile, version: n.version, system: n.system },
  };
  writeFileSync(join(logDir, "testbed.json"), JSON.stringify({ ...bed, kube: { ...bed.kube, token: "<redacted>" }, timings }, null, 2));
  return { bed, timings, stop };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = await startTestBed();
  const { bed, timings } = started;
  process.stderr.write(
    `test bed up in ${(timings.total ?? 0) / 1000}s: apiserver ${bed.kube.server}, registries ${bed.registry.plain.host} ` +
      `(http) ${bed.registry.tls.host} (https), git ${bed.git.baseUrl}; logs in ${bed.logDir}\n`,
  );
  project.provide("testbed", bed);
  return async () => {
    await started.stop();
  };
}
