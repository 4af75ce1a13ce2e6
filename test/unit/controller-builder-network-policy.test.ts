import { describe, expect, it } from "vitest";
import { builderNetworkPolicy } from "../../src/controller/builder-network-policy.ts";
import { testConfig } from "./controller-fixtures.ts";

describe("builderNetworkPolicy", () => {
  it("default: no ingress; DNS; all egress but private, CGNAT, loopback, link-local (metadata) and their IPv6 counterparts", () => {
    const policy = builderNetworkPolicy("shop", testConfig().builder.networkPolicy);
    expect(policy.metadata).toEqual({ name: "niximage-builders", namespace: "shop", labels: { "app.kubernetes.io/managed-by": "nix-image-operator" } });
    expect(policy.spec?.podSelector).toEqual({
      matchLabels: { "app.kubernetes.io/managed-by": "nix-image-operator" },
      matchExpressions: [{ key: "niximage.io/image", operator: "Exists" }],
    });
    expect(policy.spec?.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(policy.spec?.ingress).toEqual([]);
    const [dns, rest, ...more] = policy.spec!.egress!;
    expect(dns).toEqual({
      ports: [
        { port: 53, protocol: "UDP" },
        { port: 53, protocol: "TCP" },
      ],
    });
    const v4 = rest!.to![0]!.ipBlock!;
    expect(v4.cidr).toBe("0.0.0.0/0");
    // The metadata endpoint and the usual pod/service ranges fall in the denied blocks.
    expect(v4.except).toEqual(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16"]);
    expect(rest!.to![1]!.ipBlock).toEqual({ cidr: "::/0", except: ["fc00::/7", "fe80::/10", "::1/128"] });
    expect(rest!.ports).toBeUndefined();
    expect(more).toEqual([]);
  });

  it("allowed ranges and ports from config", () => {
    const policy = builderNetworkPolicy(
      "shop",
      testConfig({ builder: { networkPolicy: { deniedCidrs: ["10.0.0.0/8"], allowedCidrs: ["10.20.0.0/16"], ports: [{ port: 443 }] } } }).builder.networkPolicy,
    );
    expect(policy.spec?.egress?.slice(1)).toEqual([
      { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["10.0.0.0/8"] } }, { ipBlock: { cidr: "::/0" } }], ports: [{ port: 443, protocol: "TCP" }] },
      { to: [{ ipBlock: { cidr: "10.20.0.0/16" } }], ports: [{ port: 443, protocol: "TCP" }] },
    ]);
  });
});
