// containerd (Debian 1.6) for the e2e node, entirely under the run directory: its own root, state,
// socket, runc root, CNI config and IPAM data, network namespaces under its state dir, and a
// certs.d entry that lets it pull from the cluster's plain-HTTP registry. Quirks of these VMs
// (testbed.md): cgroup v1 without systemd (cgroupfs, SystemdCgroup = false) and no
// CAP_SYS_RESOURCE (restrict_oom_score_adj = true, or every sandbox fails on oom_score_adj).
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startDaemon, type Daemon } from "../../support/process.ts";
import { findProcesses, killPids, runSync, waitGone } from "./host.ts";
import type { ClusterNetwork } from "./network.ts";

export interface ContainerdOptions {
  runDir: string;
  logFile: string;
  net: ClusterNetwork;
  /** Image of the pod sandboxes (pulled from the registry like any image). */
  sandboxImage: string;
  /** host:port of the plain-HTTP registry pods pull from. */
  registryHost: string;
  signal?: AbortSignal;
}

export interface Containerd {
  socket: string;
  dir: string;
  daemon: Daemon;
  /** `ctr` with this containerd's socket and the CRI namespace. */
  ctr(args: string[]): { status: number; stdout: string; stderr: string };
}

export function containerdPaths(runDir: string) {
  const dir = join(runDir, "containerd");
  return {
    dir,
    socket: join(dir, "containerd.sock"),
    root: join(dir, "root"),
    state: join(dir, "state"),
    runcRoot: join(dir, "runc"),
    certsDir: join(dir, "certs.d"),
    cniConfDir: join(runDir, "cni", "net.d"),
    ipamDir: join(runDir, "cni", "ipam"),
    config: join(dir, "config.toml"),
  };
}

function toml(s: string): string {
  return JSON.stringify(s);
}

function containerdConfig(opts: ContainerdOptions): string {
  const p = containerdPaths(opts.runDir);
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = ${toml(p.root)}
state = ${toml(p.state)}
oom_score = 0

[grpc]
  address = ${toml(p.socket)}

[ttrpc]
  address = ${toml(`${p.socket}.ttrpc`)}

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = ${toml(join(p.dir, "opt"))}

[${cri}]
  sandbox_image = ${toml(opts.sandboxImage)}
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384

[${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[${cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = ${toml(p.runcRoot)}

[${cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = ${toml(p.cniConfDir)}
  max_conf_num = 1

[${cri}.registry]
  config_path = ${toml(p.certsDir)}
`;
}

function cniConfig(net: ClusterNetwork, ipamDir: string): string {
  const [a, b, c] = net.nodeIp.split(".");
  return JSON.stringify(
    {
      cniVersion: "0.4.0",
      name: "nio-e2e",
      plugins: [
        {
          type: "bridge",
          bridge: net.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: "host-local",
            ranges: [[{ subnet: net.podCidr, gateway: net.nodeIp, rangeStart: `${a}.${b}.${c}.10` }]],
            routes: [{ dst: "0.0.0.0/0" }],
            dataDir: ipamDir,
          },
        },
      ],
    },
    null,
    2,
  );
}

export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  const p = containerdPaths(opts.runDir);
  await Promise.all([p.root, p.state, p.runcRoot, p.cniConfDir, p.ipamDir, join(p.certsDir, opts.registryHost)].map((d) => mkdir(d, { recursive: true })));
  await writeFile(p.config, containerdConfig(opts));
  await writeFile(join(p.cniConfDir, "10-nio-e2e.conflist"), cniConfig(opts.net, p.ipamDir));
  await writeFile(
    join(p.certsDir, opts.registryHost, "hosts.toml"),
    `server = "http://${opts.registryHost}"\n\n[host."http://${opts.registryHost}"]\n  capabilities = ["pull", "resolve"]\n`,
  );
  const ctr = (args: string[]) =>
    existsSync(p.socket)
      ? runSync("ctr", ["--address", p.socket, "--namespace", "k8s.io", "--connect-timeout", "5s", "--timeout", "30s", ...args], { timeoutMs: 40_000 })
      : { status: 1, stdout: "", stderr: `${p.socket}: containerd is not running` };
  const daemon = await startDaemon({
    name: "containerd",
    command: "containerd",
    args: ["--config", p.config],
    logFile: opts.logFile,
    signal: opts.signal,
    timeoutMs: 30_000,
    intervalMs: 200,
    missingHint: "apt-get install containerd runc containernetworking-plugins, or scripts/setup.sh --with-e2e",
    ready: async () => existsSync(p.socket) && runSync("ctr", ["--address", p.socket, "version"], { timeoutMs: 5000 }).status === 0,
  });
  return { socket: p.socket, dir: p.dir, daemon, ctr };
}

/** containerd-shim processes serving this containerd (they run in their own process groups). */
export function shimPids(socket: string): number[] {
  return findProcesses((argv) => (argv[0] ?? "").includes("containerd-shim") && argv.includes(socket));
}

/**
 * Kills and deletes every task and container left in containerd (the kubelet normally removed
 * them), then the shims. Runs while containerd is still up.
 */
export function removeAllContainers(c: Pick<Containerd, "ctr" | "socket">): void {
  const tasks = c.ctr(["tasks", "list", "--quiet"]).stdout.split("\n").filter(Boolean);
  for (const id of tasks) c.ctr(["tasks", "kill", "--signal", "SIGKILL", "--all", id]);
  for (const id of tasks) c.ctr(["tasks", "delete", "--force", id]);
  const containers = c.ctr(["containers", "list", "--quiet"]).stdout.split("\n").filter(Boolean);
  if (containers.length > 0) c.ctr(["containers", "delete", ...containers]);
}

/** Kills whatever shim of `socket` is still alive. */
export function killShims(socket: string): void {
  const pids = shimPids(socket);
  if (pids.length === 0) return;
  killPids(pids, "SIGTERM");
  if (!waitGone(pids, 3000)) killPids(pids, "SIGKILL");
  waitGone(pids, 3000);
}
