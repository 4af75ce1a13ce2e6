// The e2e cluster's network on this host:
//   - a Linux bridge (made before anything starts, so the API server, registry and git server can
//     listen on its address): the CNI bridge plugin attaches pod veths to it, host-local IPAM
//     hands out pod IPs in its subnet, and its address is the node IP and the pods' gateway;
//   - one iptables DNAT rule that plays kube-proxy for the only Service pods need, `kubernetes`
//     (its ClusterIP:443 -> the API server on the node IP). No MASQUERADE: pods only talk to the node;
//   - a forward filter: the bridge plugin turns on ip_forward and pods have a default route via the
//     node, so without it a pod's packet to an outside address would be routed out of this machine
//     (with a pod source address, but out all the same). Pods may reach the node (INPUT, not
//     touched: the API server, registry and git server listen on the node IP) and each other; every
//     other forwarded packet from or to the bridge hits a final DROP, IPv4 and IPv6. A counting rule
//     in mangle POSTROUTING sees any packet with a pod source address that leaves by another
//     interface: the e2e egress test asserts that it stays at 0 while the DROP counter grows.
// Every rule carries a comment starting with "nio-e2e", so teardown (or a later run after a crash)
// removes exactly these. Teardown also restores the sysctls the bridge plugin flips (ip_forward).
import { existsSync } from "node:fs";
import {
  bridgePorts,
  deleteIptablesRulesWithComment,
  deleteLink,
  iptablesPacketCounts,
  iptablesRulesWithComment,
  linkExists,
  mustRun,
  readSysctl,
  runSync,
  writeSysctl,
} from "./host.ts";

export interface ClusterNetwork {
  bridge: string;
  /** Pod subnet (host-local IPAM range). */
  podCidr: string;
  /** The bridge's address: node IP, pods' gateway, where host services listen for pods. */
  nodeIp: string;
  prefixLength: number;
  serviceCidr: string;
  /** ClusterIP of the `kubernetes` Service (first address of serviceCidr). */
  apiServiceIp: string;
  /** Comment (or comment prefix, "<comment>-<purpose>") on every iptables rule of the cluster. */
  ruleComment: string;
}

export const defaultNetwork: ClusterNetwork = {
  bridge: "nioe2e0",
  podCidr: "10.233.0.0/24",
  nodeIp: "10.233.0.1",
  prefixLength: 24,
  serviceCidr: "10.234.0.0/24",
  apiServiceIp: "10.234.0.1",
  ruleComment: "nio-e2e",
};

/** Sysctls the cluster may change (the CNI bridge plugin enables forwarding for gateways). */
const watchedSysctls = ["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"];

export function saveSysctls(): Record<string, string> {
  const saved: Record<string, string> = {};
  for (const key of watchedSysctls) {
    const v = readSysctl(key);
    if (v !== undefined) saved[key] = v;
  }
  return saved;
}

export function restoreSysctls(saved: Record<string, string>): void {
  for (const [key, value] of Object.entries(saved)) if (readSysctl(key) !== value) writeSysctl(key, value);
}

/** Problems that would stop the network from coming up (route conflicts, missing tools). */
export function networkProblems(net: ClusterNetwork = defaultNetwork): string[] {
  const problems: string[] = [];
  if (runSync("ip", ["-V"]).status === 127) problems.push("ip (iproute2) not found: apt-get install iproute2");
  if (runSync("iptables", ["-V"]).status === 127) problems.push("iptables not found: apt-get install iptables, or scripts/setup.sh --with-e2e");
  else {
    if (runSync("iptables", ["-w", "5", "-t", "nat", "-S"]).status !== 0)
      problems.push("iptables cannot read the nat table (kernel without NAT support, or not root)");
    if (runSync("iptables", ["-w", "5", "-t", "mangle", "-S"]).status !== 0)
      problems.push("iptables cannot read the mangle table (needed to count pod packets leaving the host)");
    if (ipv6Enabled() && runSync("ip6tables", ["-w", "5", "-S"]).status !== 0)
      problems.push("ip6tables cannot read the filter table (IPv6 is on, so pod IPv6 forwarding must be dropped too): apt-get install iptables");
  }
  if (!linkExists(net.bridge)) {
    const routes = runSync("ip", ["-4", "route", "show", "to", "match", net.nodeIp])
      .stdout.split("\n")
      .filter((l) => l && !l.startsWith("default"));
    if (routes.length > 0) problems.push(`the pod subnet ${net.podCidr} overlaps a route of this host (${routes.join("; ")})`);
  }
  return problems;
}

/** Creates the bridge with the node address and the `kubernetes` Service DNAT rule. */
export function setUpNetwork(apiServerPort: number, net: ClusterNetwork = defaultNetwork): void {
  if (!linkExists(net.bridge)) mustRun("ip", ["link", "add", net.bridge, "type", "bridge"]);
  const addrs = runSync("ip", ["-4", "-o", "addr", "show", "dev", net.bridge]).stdout;
  if (!addrs.includes(` ${net.nodeIp}/`)) mustRun("ip", ["addr", "add", `${net.nodeIp}/${net.prefixLength}`, "dev", net.bridge]);
  mustRun("ip", ["link", "set", net.bridge, "up"]);
  setPodFilter(net);
  setServiceRule(apiServerPort, net);
}

function ipv6Enabled(): boolean {
  return existsSync("/proc/sys/net/ipv6");
}

/** Comments of the forward filter's rules (each starts with ruleComment, so teardown removes them). */
function podFilterComments(net: ClusterNetwork = defaultNetwork) {
  return {
    podToPod: `${net.ruleComment}-pod-to-pod`,
    egressDrop: `${net.ruleComment}-egress-drop`,
    ingressDrop: `${net.ruleComment}-ingress-drop`,
    leftHost: `${net.ruleComment}-left-host`,
  };
}

/**
 * (Re)writes the forward filter, at the top of FORWARD so that no other rule of the host (Docker's,
 * a permissive policy) sees pod packets first:
 *   -i bridge -d podCidr            ACCEPT  pod to pod (bridged frames pass FORWARD with br_netfilter;
 *                                           for IPv6, link-local only: -i bridge -o bridge)
 *   -i bridge                       DROP    anything else a pod sends that would be routed away
 *   -o bridge                       DROP    anything routed into the pods from another interface
 * The service range needs no ACCEPT: its only address is DNATed to the node IP in PREROUTING
 * (INPUT), any other service address would be routed out, so it is dropped. Plus a rule without a
 * target in mangle POSTROUTING that only counts packets from a pod address leaving by another interface.
 */
function setPodFilter(net: ClusterNetwork = defaultNetwork): void {
  const c = podFilterComments(net);
  for (const table of ["filter", "mangle"]) deleteIptablesRulesWithComment(table, net.ruleComment);
  const tag = (comment: string) => ["-m", "comment", "--comment", comment];
  const ipt = (args: string[]) => mustRun("iptables", ["-w", "5", ...args]);
  ipt(["-I", "FORWARD", "1", "-i", net.bridge, "-d", net.podCidr, ...tag(c.podToPod), "-j", "ACCEPT"]);
  ipt(["-I", "FORWARD", "2", "-i", net.bridge, ...tag(c.egressDrop), "-j", "DROP"]);
  ipt(["-I", "FORWARD", "3", "-o", net.bridge, ...tag(c.ingressDrop), "-j", "DROP"]);
  // Pod addresses only: the node IP is in the pod subnet too, and the host's own traffic from it
  // (kubelet -> API server) leaves by `lo`.
  const [first, last] = podAddressRange(net);
  ipt(["-t", "mangle", "-A", "POSTROUTING", "-m", "iprange", "--src-range", `${first}-${last}`, "!", "-o", net.bridge, ...tag(c.leftHost)]);
  if (ipv6Enabled()) {
    deleteIptablesRulesWithComment("filter", net.ruleComment, "ip6tables");
    const ip6 = (args: string[]) => mustRun("ip6tables", ["-w", "5", ...args]);
    ip6(["-I", "FORWARD", "1", "-i", net.bridge, "-o", net.bridge, ...tag(c.podToPod), "-j", "ACCEPT"]);
    ip6(["-I", "FORWARD", "2", "-i", net.bridge, ...tag(c.egressDrop), "-j", "DROP"]);
    ip6(["-I", "FORWARD", "3", "-o", net.bridge, ...tag(c.ingressDrop), "-j", "DROP"]);
  }
}

const ipv4ToInt = (ip: string) => ip.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
const intToIpv4 = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");

/** The addresses pods can have: after the node IP up to the last one before the broadcast address. */
function podAddressRange(net: ClusterNetwork): [string, string] {
  const [base, bits] = net.podCidr.split("/") as [string, string];
  const broadcast = ipv4ToInt(base) + 2 ** (32 - Number(bits)) - 1;
  return [intToIpv4(ipv4ToInt(net.nodeIp) + 1), intToIpv4(broadcast - 1)];
}

export interface PodFilterCounters {
  /** IPv4 packets from pods dropped by the final egress DROP. */
  egressDropped: number;
  /** IPv6 packets from pods dropped (0 when IPv6 is off). */
  egressDropped6: number;
  /** Packets with a pod source address that left by an interface other than the bridge. */
  leftHost: number;
}

/** Reads the filter's counters; throws when a rule is missing (a missing rule must not read as 0). */
export function podFilterCounters(net: ClusterNetwork = defaultNetwork): PodFilterCounters {
  const c = podFilterComments(net);
  const one = (table: string, comment: string, binary = "iptables") => {
    const counts = iptablesPacketCounts(table, comment, binary);
    if (counts.length !== 1) throw new Error(`expected one ${binary} rule with comment ${comment} in table ${table}, found ${counts.length}`);
    return counts[0]!;
  };
  return {
    egressDropped: one("filter", c.egressDrop),
    egressDropped6: ipv6Enabled() ? one("filter", c.egressDrop, "ip6tables") : 0,
    leftHost: one("mangle", c.leftHost),
  };
}

/** (Re)writes the DNAT rule for the `kubernetes` Service to the API server's port. */
export function setServiceRule(apiServerPort: number, net: ClusterNetwork = defaultNetwork): void {
  deleteIptablesRulesWithComment("nat", net.ruleComment);
  mustRun("iptables", [
    "-w",
    "5",
    "-t",
    "nat",
    "-A",
    "PREROUTING",
    "-s",
    net.podCidr,
    "-d",
    `${net.apiServiceIp}/32`,
    "-p",
    "tcp",
    "--dport",
    "443",
    "-m",
    "comment",
    "--comment",
    net.ruleComment,
    "-j",
    "DNAT",
    "--to-destination",
    `${net.nodeIp}:${apiServerPort}`,
  ]);
}

/** Every iptables/ip6tables rule of the cluster still on the host, as "<binary> <table>: <rule>". */
export function clusterRules(net: ClusterNetwork = defaultNetwork): string[] {
  const tables: Array<[string, string]> = [
    ["iptables", "nat"],
    ["iptables", "filter"],
    ["iptables", "mangle"],
    ["ip6tables", "filter"],
  ];
  return tables.flatMap(([binary, table]) => iptablesRulesWithComment(table, net.ruleComment, binary).map((r) => `${binary} ${table}: ${r}`));
}

/** Removes the rules, the pods' veths still on the bridge, and the bridge. */
export function tearDownNetwork(net: ClusterNetwork = defaultNetwork): string[] {
  for (const table of ["nat", "filter", "mangle"]) deleteIptablesRulesWithComment(table, net.ruleComment);
  deleteIptablesRulesWithComment("filter", net.ruleComment, "ip6tables");
  for (const port of bridgePorts(net.bridge)) deleteLink(port);
  deleteLink(net.bridge);
  const left: string[] = [];
  if (linkExists(net.bridge)) left.push(`interface ${net.bridge}`);
  left.push(...clusterRules(net).map((r) => `iptables rule ${r}`));
  return left;
}
