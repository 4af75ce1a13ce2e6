// What the e2e cluster needs from this machine, checked all at once before anything starts, so
// one message says everything that is missing and how to get it.
import { existsSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { cgroupHierarchies } from "./host.ts";
import { networkProblems, type ClusterNetwork } from "./network.ts";

const e2eHint = "scripts/setup.sh --with-e2e";

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((d) => d && existsSync(join(d, cmd)));
}

export function missingPrerequisites(opts: { binDir: string; helm?: string; net: ClusterNetwork; needDebootstrap: boolean }): string[] {
  const missing: string[] = [];
  if (process.platform !== "linux") return [`the e2e cluster runs on Linux only (this is ${process.platform})`];
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    missing.push("must run as root: the kubelet, containerd, bridge networking and mounts need it");
  }
  const commands: Array<[string, string]> = [
    ["containerd", "containerd"],
    ["ctr", "containerd"],
    ["containerd-shim-runc-v2", "containerd"],
    ["runc", "runc"],
    ["etcd", "etcd-server"],
    ["docker-registry", "docker-registry"],
    ["openssl", "openssl"],
    ["git", "git"],
    ["tar", "tar"],
    ["unshare", "util-linux"],
    ["mount", "mount"],
    ["iptables", "iptables"],
    ["ip", "iproute2"],
    ["gcc", "gcc (and libc6-dev, for the static pause binary)"],
  ];
  if (opts.needDebootstrap) commands.push(["debootstrap", "debootstrap"]);
  for (const [cmd, pkg] of commands) if (!onPath(cmd)) missing.push(`${cmd} not found on PATH: apt-get install ${pkg}, or ${e2eHint}`);
  for (const plugin of ["bridge", "host-local", "loopback"]) {
    if (!existsSync(join("/usr/lib/cni", plugin)))
      missing.push(`CNI plugin /usr/lib/cni/${plugin} missing: apt-get install containernetworking-plugins, or ${e2eHint}`);
  }
  const kube = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"].filter((c) => !existsSync(join(opts.binDir, c)));
  if (kube.length) missing.push(`${kube.join(", ")} not found in ${opts.binDir}: run scripts/setup.sh (or scripts/build-k8s.sh)`);
  if (opts.helm !== undefined && !existsSync(opts.helm)) missing.push(`helm not found at ${opts.helm}: run scripts/setup.sh (or scripts/build-helm.sh)`);
  // cgroups: the kubelet is configured for the cgroupfs driver on cgroup v1 hierarchies.
  let mounts = "";
  try {
    mounts = readFileSync("/proc/self/mounts", "utf8");
  } catch {
    // below
  }
  const v1 = cgroupHierarchies().map((h) => h.split("/").pop());
  if (/ \/sys\/fs\/cgroup cgroup2 /.test(mounts)) {
    missing.push("this machine uses cgroup v2 only; the e2e kubelet config targets cgroup v1 with the cgroupfs driver (adjust test/e2e/support/kubelet.ts)");
  } else {
    for (const c of ["cpu", "memory", "pids", "cpuset", "devices", "freezer"])
      if (!v1.includes(c)) missing.push(`cgroup v1 hierarchy ${c} is not mounted under /sys/fs/cgroup`);
  }
  if (!/\soverlay$/m.test(readFileSafe("/proc/filesystems")))
    missing.push("the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it)");
  missing.push(...networkProblems(opts.net));
  return missing;
}

function readFileSafe(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
