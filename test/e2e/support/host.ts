// Host-level helpers for the e2e cluster: mounts, processes, network interfaces, iptables rules,
// sysctls and cgroups. Everything that tears down is synchronous (spawnSync, fs *Sync), so the
// same code runs from a normal teardown, from a process exit hook, and when a later run reaps
// what a crashed run left behind. Every removal is scoped to what the cluster created: mounts
// under its run directory, processes whose command line names its containerd socket or whose
// cgroup is the cluster's, rules carrying its comment, the interfaces it named.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface CommandResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs a command synchronously; never throws (a missing binary is status 127). */
export function runSync(command: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): CommandResult {
  const r = spawnSync(command, args, { encoding: "utf8", input: opts.input ?? "", timeout: opts.timeoutMs ?? 30_000 });
  if (r.error) return { status: 127, stdout: "", stderr: r.error.message };
  return { status: r.status ?? 1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** Like runSync, but throws with stderr when the command fails. */
export function mustRun(command: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  const r = runSync(command, args, opts);
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} failed (status ${r.status}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

// ---- mounts ------------------------------------------------------------------------------------

/** Decodes the octal escapes of /proc/self/mountinfo (`\040` for a space). */
function unescapeMount(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  let text = "";
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const points = text
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined)
    .map(unescapeMount)
    .filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.length - a.length || (a < b ? 1 : -1));
}

/**
 * Unmounts everything at or below `dir`, deepest first; a busy mount is detached lazily.
 * Returns what could not be unmounted at all.
 */
export function unmountUnder(dir: string): string[] {
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(dir);
    if (points.length === 0) return [];
    for (const p of points) {
      if (runSync("umount", [p]).status !== 0) runSync("umount", ["-l", p]);
    }
  }
  return mountsUnder(dir);
}

/** Removes a directory tree that may contain read-only directories (Nix stores). */
export function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  const left = unmountUnder(dir);
  if (left.length > 0) throw new Error(`cannot remove ${dir}: still mounted: ${left.join(", ")}`);
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    runSync("chmod", ["-R", "u+rwx", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- processes ---------------------------------------------------------------------------------

export function processCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8")
      .split("\0")
      .filter((s) => s !== "");
  } catch {
    return [];
  }
}

/** Start time of a process (clock ticks since boot), "" when it is gone: tells pid reuse apart. */
export function processStartTime(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
  } catch {
    return "";
  }
}

function allPids(): number[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((p) => p !== process.pid);
}

/** Pids whose command line satisfies `match`. */
export function findProcesses(match: (argv: string[]) => boolean): number[] {
  return allPids().filter((pid) => {
    const argv = processCmdline(pid);
    return argv.length > 0 && match(argv);
  });
}

export function killPids(pids: number[], signal: NodeJS.Signals = "SIGKILL"): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone already
    }
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const state = readFileSync(`/proc/${pid}/stat`, "utf8");
    return state.slice(state.lastIndexOf(")") + 2, state.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** Waits (synchronously, polling) until none of `pids` runs any more. */
export function waitGone(pids: number[], timeoutMs: number): boolean {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!pids.some(isAlive)) return true;
    if (Date.now() > deadline) return false;
    spawnSync("sleep", ["0.1"]);
  }
}

// ---- cgroups (v1: one hierarchy per controller) --------------------------------------------------

const cgroupRoot = "/sys/fs/cgroup";

/** The mounted cgroup v1 hierarchies (cpu, memory, pids, systemd, ...). */
export function cgroupHierarchies(): string[] {
  try {
    return readdirSync(cgroupRoot)
      .map((n) => join(cgroupRoot, n))
      .filter((p) => {
        try {
          return statSync(p).isDirectory() && existsSync(join(p, "cgroup.procs")) && !statSync(p).isSymbolicLink();
        } catch {
          return false;
        }
      });
  } catch {
    return [];
  }
}

/** Every cgroup directory at or below `name` (e.g. "kubepods") in every hierarchy, deepest first. */
function cgroupDirs(name: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    out.push(dir);
    let entries: string[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(dir, e));
  };
  for (const h of cgroupHierarchies()) {
    const top = join(h, name);
    if (existsSync(top)) walk(top);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Pids in any cgroup at or below `name`. */
export function pidsInCgroup(name: string): number[] {
  const pids = new Set<number>();
  for (const dir of cgroupDirs(name)) {
    try {
      for (const line of readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n")) if (line.trim()) pids.add(Number(line));
    } catch {
      // removed meanwhile
    }
  }
  return [...pids];
}

/** Kills every process in the cgroup tree `name`, then removes the (now empty) cgroups. */
export function removeCgroupTree(name: string): string[] {
  for (let i = 0; i < 20; i++) {
    const pids = pidsInCgroup(name);
    if (pids.length === 0) break;
    // Frozen tasks do not die: thaw first (freezer hierarchy).
    for (const dir of cgroupDirs(name)) {
      if (dir.includes("/freezer/")) {
        try {
          writeFileSync(join(dir, "freezer.state"), "THAWED");
        } catch {
          // not a freezer cgroup
        }
      }
    }
    killPids(pids);
    waitGone(pids, 2000);
  }
  const left: string[] = [];
  for (const dir of cgroupDirs(name)) {
    try {
      rmdirSync(dir);
    } catch {
      left.push(dir);
    }
  }
  return left;
}

// ---- network -----------------------------------------------------------------------------------

export function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

/** Interfaces enslaved to `bridge` (the host ends of pod veths). */
export function bridgePorts(bridge: string): string[] {
  try {
    return readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    return [];
  }
}

export function deleteLink(name: string): void {
  if (linkExists(name)) runSync("ip", ["link", "delete", name]);
}

export function readSysctl(key: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${key.replace(/\./g, "/")}`, "utf8").trim();
  } catch {
    return undefined;
  }
}

export function writeSysctl(key: string, value: string): void {
  try {
    writeFileSync(`/proc/sys/${key.replace(/\./g, "/")}`, value);
  } catch {
    // not writable here; reported by the caller's checks
  }
}

/** The comment of an `iptables -S` line (quoted or not), or undefined. */
function ruleComment(rule: string): string | undefined {
  const args = splitRule(rule);
  const i = args.indexOf("--comment");
  return i >= 0 ? args[i + 1] : undefined;
}

/**
 * `iptables -S` style rules of a table that carry `comment` or a comment starting with
 * `<comment>-` (the cluster tags each rule "nio-e2e" or "nio-e2e-<purpose>").
 */
export function iptablesRulesWithComment(table: string, comment: string, binary = "iptables"): string[] {
  const r = runSync(binary, ["-w", "5", "-t", table, "-S"]);
  if (r.status !== 0) return [];
  return r.stdout.split("\n").filter((l) => {
    if (!l.startsWith("-A ")) return false;
    const c = ruleComment(l);
    return c !== undefined && (c === comment || c.startsWith(`${comment}-`));
  });
}

/** Packet counters of the rules in `table` whose comment is exactly `comment` (from `-S -v`: "-c pkts bytes"). */
export function iptablesPacketCounts(table: string, comment: string, binary = "iptables"): number[] {
  const out = mustRun(binary, ["-w", "5", "-t", table, "-S", "-v"]);
  return out
    .split("\n")
    .filter((l) => l.startsWith("-A ") && ruleComment(l) === comment)
    .map((l) => {
      const m = / -c (\d+) \d+/.exec(l);
      if (!m) throw new Error(`${binary} -t ${table} -S -v printed no counter for the rule ${l}`);
      return Number(m[1]);
    });
}

/** Deletes every rule in `table` whose comment is `comment`. */
export function deleteIptablesRulesWithComment(table: string, comment: string, binary = "iptables"): void {
  for (const rule of iptablesRulesWithComment(table, comment, binary)) {
    // "-A CHAIN args..." -> "-D CHAIN args..."; the comment may be quoted in -S output.
    const args = splitRule(rule.replace(/^-A /, "-D "));
    runSync(binary, ["-w", "5", "-t", table, ...args]);
  }
}

/** Splits an iptables -S line into argv, honouring double quotes. */
function splitRule(rule: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]!);
  return out;
}

/** A symlink target, or undefined. */
function linkTarget(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/** Removes symlinks in `dir` that point below `prefix` (kubelet's /var/log/containers links). */
export function removeSymlinksInto(dir: string, prefix: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const t = linkTarget(join(dir, n));
    if (t !== undefined && t.startsWith(prefix)) {
      try {
        unlinkSync(join(dir, n));
      } catch {
        // gone
      }
    }
  }
}
