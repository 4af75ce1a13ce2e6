import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { DENIED_ADDRESS_RANGES, checkAddress, classifyHost, parseAddressRanges, parseCidr, parseIpAddress } from "../../src/flake/address-policy.ts";
import { ipv4AllowedRegex, numberRangeRegex } from "../../src/flake/ipv4-range-regex.ts";

const denied = parseAddressRanges(DENIED_ADDRESS_RANGES.map((r) => r.cidr));

describe("classifyHost reads hosts as resolvers do", () => {
  it.each([
    ["127.0.0.1", "127.0.0.1", true],
    ["2130706433", "127.0.0.1", false],
    ["0x7f000001", "127.0.0.1", false],
    ["0x7f.1", "127.0.0.1", false],
    ["127.1", "127.0.0.1", false],
    ["0177.0.0.1", "127.0.0.1", false],
    ["10.0.0.1.", "10.0.0.1", false],
    ["0", "0.0.0.0", false],
  ])("%s is %s", (host, address, canonical) => {
    const kind = classifyHost(host);
    expect(kind.kind).toBe("ip");
    if (kind.kind === "ip") {
      expect(Array.from(kind.address.bytes).join(".")).toBe(address);
      expect(kind.canonical).toBe(canonical);
    }
  });

  it("names, localhost and numbers that are no address", () => {
    expect(classifyHost("example.com").kind).toBe("name");
    expect(classifyHost("10.0.0.1.nip.io").kind).toBe("name");
    expect(classifyHost("LOCALHOST.").kind).toBe("localhost");
    expect(classifyHost("a.localhost").kind).toBe("localhost");
    expect(classifyHost("foo.123").kind).toBe("bad-number");
    expect(classifyHost("256.0.0.1").kind).toBe("bad-number");
    expect(classifyHost("4294967296").kind).toBe("bad-number");
  });
});

describe("checkAddress", () => {
  const ip = (s: string) => parseIpAddress(s)!;
  it.each([
    ["10.0.0.1", "10.0.0.0/8"],
    ["169.254.169.254", "169.254.0.0/16"],
    ["::1", "::1/128"],
    ["::ffff:127.0.0.1", "127.0.0.0/8"],
    ["::ffff:a9fe:a9fe", "169.254.0.0/16"],
    ["64:ff9b::10.0.0.1", "10.0.0.0/8"],
    ["2002:c0a8:0101::1", "192.168.0.0/16"],
    ["fd00::1", "fc00::/7"],
    ["fe80::1", "fe80::/10"],
    ["ff02::1", "ff00::/8"],
    ["::", "::/96"],
  ])("denies %s (%s)", (address, cidr) => {
    expect(checkAddress(ip(address), [])).toMatchObject({ allowed: false, cidr });
  });

  it("allows public addresses, and what the operator allows", () => {
    expect(checkAddress(ip("1.1.1.1"), []).allowed).toBe(true);
    expect(checkAddress(ip("2606:4700::1111"), []).allowed).toBe(true);
    expect(checkAddress(ip("::ffff:1.1.1.1"), []).allowed).toBe(true);
    const allowed = parseAddressRanges(["127.0.0.0/8", "fd00::/8"]);
    expect(checkAddress(ip("127.0.0.1"), allowed).allowed).toBe(true);
    expect(checkAddress(ip("::ffff:127.0.0.1"), allowed).allowed).toBe(true);
    expect(checkAddress(ip("fd00::5"), allowed).allowed).toBe(true);
    expect(checkAddress(ip("10.0.0.1"), allowed).allowed).toBe(false);
  });

  it("parses CIDRs", () => {
    expect(parseCidr("10.0.0.0/8")).toMatchObject({ family: 4, prefix: 8 });
    expect(parseCidr("fd00::/8")).toMatchObject({ family: 6, prefix: 8 });
    expect(parseCidr("1.2.3.4")).toMatchObject({ family: 4, prefix: 32 });
    for (const bad of ["10.0.0.0/33", "10.0.0/8", "x/8", "::1/129", "10.0.0.0/08", ""]) expect(parseCidr(bad), bad).toBeUndefined();
  });
});

describe("ipv4AllowedRegex", () => {
  it("numberRangeRegex matches exactly lo..hi", () => {
    for (const [lo, hi] of [
      [0, 255],
      [16, 31],
      [100, 127],
      [64, 127],
      [0, 9],
      [9, 10],
      [199, 200],
      [5, 5],
    ] as const) {
      const rx = new RegExp(`^${numberRangeRegex(lo, hi)}$`);
      for (let n = 0; n <= 300; n++) expect(rx.test(String(n)), `${n} in ${lo}..${hi}`).toBe(n >= lo && n <= hi);
      expect(rx.test("01")).toBe(false);
    }
  });

  it("matches exactly the canonical addresses checkAddress allows", () => {
    const allowedRanges = parseAddressRanges(["127.0.0.0/8", "10.20.0.0/14", "192.168.7.128/25"]);
    for (const allowed of [[], allowedRanges]) {
      const rx = new RegExp(`^${ipv4AllowedRegex(denied, allowed)}$`);
      const octet = fc.oneof(
        fc.integer({ min: 0, max: 255 }),
        fc.constantFrom(0, 10, 16, 31, 32, 63, 64, 127, 128, 168, 169, 172, 192, 198, 223, 224, 254, 255),
      );
      fc.assert(
        fc.property(fc.tuple(octet, octet, octet, octet), (q) => {
          const text = q.join(".");
          expect(rx.test(text), text).toBe(checkAddress(parseIpAddress(text)!, allowed).allowed);
        }),
        { numRuns: 20_000 },
      );
      expect(rx.test("010.0.0.1")).toBe(false);
      expect(rx.test("1.2.3")).toBe(false);
    }
  });
});
