import type { V1NetworkPolicy, V1NetworkPolicyEgressRule, V1NetworkPolicyPeer } from "@kubernetes/client-node";
import type { OperatorConfig } from "../config/operator-config.ts";
import { labels, managedByValue } from "./names.ts";

/**
 * The NetworkPolicy of builder pods in one namespace (pure; the controller applies it before the
 * namespace's first builder Job, docs/security.md). Builder pods run untrusted flake code: they
 * accept no connections; they may resolve names (port 53) and reach anything outside
 * `deniedCidrs` (by default every private, loopback, link-local, CGNAT and ULA range: the
 * cluster's pod and service ranges on nearly every cluster, the nodes, and the cloud metadata
 * endpoint 169.254.169.254), plus `allowedCidrs` (e.g. an in-cluster registry's range). Needs a
 * CNI that enforces NetworkPolicies.
 */
const builderNetworkPolicyName = "niximage-builders";

type PolicyConfig = OperatorConfig["builder"]["networkPolicy"];

const isV6 = (cidr: string) => cidr.includes(":");

export function builderNetworkPolicy(namespace: string, policy: PolicyConfig): V1NetworkPolicy {
  const ports = policy.ports.length ? { ports: policy.ports.map((p) => ({ port: p.port, protocol: p.protocol })) } : {};
  const everywhereBut = (all: string, v6: boolean): V1NetworkPolicyPeer => {
    const except = policy.deniedCidrs.filter((c) => isV6(c) === v6);
    return { ipBlock: { cidr: all, ...(except.length ? { except } : {}) } };
  };
  const egress: V1NetworkPolicyEgressRule[] = [
    {
      ports: [
        { port: 53, protocol: "UDP" },
        { port: 53, protocol: "TCP" },
      ],
    },
    { to: [everywhereBut("0.0.0.0/0", false), everywhereBut("::/0", true)], ...ports },
  ];
  if (policy.allowedCidrs.length) egress.push({ to: policy.allowedCidrs.map((cidr) => ({ ipBlock: { cidr } })), ...ports });
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name: builderNetworkPolicyName, namespace, labels: { [labels.managedBy]: managedByValue } },
    spec: {
      podSelector: { matchLabels: { [labels.managedBy]: managedByValue }, matchExpressions: [{ key: labels.image, operator: "Exists" }] },
      policyTypes: ["Ingress", "Egress"],
      ingress: [],
      egress,
    },
  };
}
