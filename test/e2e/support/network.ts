// The e2e cluster's network on this host:
//   - a Linux bridge (made before anything starts, so the API server, registry and git server can
//     listen on its address): the CNI bridge plugin attaches pod veths to it, host-local IPAM
//     hands out pod IPs in its subnet, and its address is the node IP and the pods' gateway;
//   - one iptables DNAT rule that plays kube-proxy for the only Service pods need, `kubernetes`
//     (its ClusterIP:443 -> the API server on the node IP), tagged with a comment so teardown (or
//     a later run after a crash) removes exactly it. No MASQUERADE: pods only talk to the node.
// Teardown also restores the sysctls the bridge plugin flips (ip_forward) to their old values.
import { bridgePorts, deleteIptablesRulesWithComment, deleteLink, linkExists, mustRun, readSysctl, runSync, writeSysctl } from "./host.ts";

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
  /** Comment on every iptables rule of the cluster. */
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
export const watchedSysctls = ["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"];

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
  else if (runSync("iptables", ["-w", "5", "-t", "nat", "-S"]).status !== 0)
    problems.push("iptables cannot read the nat table (kernel without NAT support, or not root)");
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
  setServiceRule(apiServerPort, net);
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

/** Removes the rule, the pods' veths still on the bridge, and the bridge. */
export function tearDownNetwork(net: ClusterNetwork = defaultNetwork): string[] {
  deleteIptablesRulesWithComment("nat", net.ruleComment);
  deleteIptablesRulesWithComment("filter", net.ruleComment);
  for (const port of bridgePorts(net.bridge)) deleteLink(port);
  deleteLink(net.bridge);
  const left: string[] = [];
  if (linkExists(net.bridge)) left.push(`interface ${net.bridge}`);
  const rules = runSync("iptables", ["-w", "5", "-t", "nat", "-S"])
    .stdout.split("\n")
    .filter((l) => l.includes(net.ruleComment));
  left.push(...rules.map((r) => `iptables rule ${r}`));
  return left;
}
