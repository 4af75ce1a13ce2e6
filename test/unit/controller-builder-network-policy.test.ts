import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { builderNetworkPolicy } from "../../src/controller/builder-network-policy.ts";
import { checkAddress, parseCidr, parseIpAddress, type IpAddress } from "../../src/flake/address-policy.ts";
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
    // The metadata endpoint and the usual pod/service ranges fall in the denied blocks: every
    // range the flake ref policy refuses as a literal, so a host name resolving there is refused too.
    expect(v4.except).toEqual([
      "0.0.0.0/8",
      "10.0.0.0/8",
      "100.64.0.0/10",
      "127.0.0.0/8",
      "169.254.0.0/16",
      "172.16.0.0/12",
      "192.0.0.0/24",
      "192.168.0.0/16",
      "198.18.0.0/15",
      "224.0.0.0/4",
      "240.0.0.0/4",
    ]);
    expect(rest!.to![1]!.ipBlock).toEqual({ cidr: "::/0", except: ["::1/128", "::/96", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"] });
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

  // Admission cannot resolve names (issue 12): a flake host NAME that resolves to an address the
  // flake ref policy refuses as a literal must be refused by the default policy instead.
  it("default: every address the flake ref policy refuses as a literal lies in a denied block, and no other", () => {
    const egress = builderNetworkPolicy("shop", testConfig().builder.networkPolicy).spec!.egress![1]!.to!;
    const blocks = egress.flatMap((peer) => peer.ipBlock!.except ?? []).map((c) => parseCidr(c)!);
    const inBlock = (a: IpAddress) =>
      blocks.some((b) => {
        if (b.family !== a.family) return false;
        for (let bit = 0; bit < b.prefix; bit++) {
          const mask = 0x80 >> (bit % 8);
          if ((a.bytes[bit >> 3]! & mask) !== (b.bytes[bit >> 3]! & mask)) return false;
        }
        return true;
      });
    const octet = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 10, 100, 127, 169, 172, 192, 198, 224, 240, 255));
    fc.assert(
      fc.property(fc.tuple(octet, octet, octet, octet), (q) => {
        const a = parseIpAddress(q.join("."))!;
        expect(inBlock(a), q.join(".")).toBe(!checkAddress(a, []).allowed);
      }),
      { numRuns: 5_000 },
    );
    // IPv6 without an embedded IPv4 address (those are judged by the IPv4 one; see docs/security.md).
    const group = fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0, 1, 0x64, 0xfc00, 0xfd12, 0xfe80, 0xfec0, 0xff02, 0x2001));
    fc.assert(
      fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (g) => {
        const a = parseIpAddress(g.map((x) => x.toString(16)).join(":"))!;
        const embeds = (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) || (g[0] === 0x64 && g[1] === 0xff9b) || g[0] === 0x2002;
        if (!embeds) expect(inBlock(a), g.join(":")).toBe(!checkAddress(a, []).allowed);
      }),
      { numRuns: 5_000 },
    );
    // A property test: generous for loaded CI machines (about 0.5 s when idle).
  }, 60_000);
});
