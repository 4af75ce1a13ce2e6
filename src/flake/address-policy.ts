/**
 * Which network addresses a flake ref, and the controller's revision poller, may reach (issue 12,
 * item 6: SSRF). Loopback, private (RFC 1918, CGNAT, ULA), link-local (cloud metadata at
 * 169.254.169.254), unspecified, multicast and reserved ranges are denied unless the operator
 * config allows a range (`flakeRefPolicy.allowedAddressRanges`); IPv6 forms that embed an IPv4
 * address (IPv4-mapped, NAT64, 6to4, IPv4-compatible) are judged by that IPv4 address.
 *
 * Host text is read the way resolvers read it: `getaddrinfo` (inet_aton) and curl take
 * `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` as 127.0.0.1, so a host whose last label is a
 * number is an IPv4 literal (as in the WHATWG URL standard) whatever its spelling.
 */
import { z } from "zod";

export interface IpAddress {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

export interface AddressRange {
  family: 4 | 6;
  bytes: Uint8Array;
  prefix: number;
  /** As written in the config, or the built-in list. */
  cidr: string;
}

/** Ranges denied by default, with what they are (for messages). */
export const DENIED_ADDRESS_RANGES: readonly { cidr: string; what: string }[] = [
  { cidr: "0.0.0.0/8", what: "the unspecified range ('this network')" },
  { cidr: "10.0.0.0/8", what: "a private range (RFC 1918)" },
  { cidr: "100.64.0.0/10", what: "the carrier-grade NAT range (RFC 6598)" },
  { cidr: "127.0.0.0/8", what: "the loopback range" },
  { cidr: "169.254.0.0/16", what: "the link-local range (cloud metadata services answer here)" },
  { cidr: "172.16.0.0/12", what: "a private range (RFC 1918)" },
  { cidr: "192.0.0.0/24", what: "the IETF protocol assignments range" },
  { cidr: "192.168.0.0/16", what: "a private range (RFC 1918)" },
  { cidr: "198.18.0.0/15", what: "the benchmarking range" },
  { cidr: "224.0.0.0/4", what: "the multicast range" },
  { cidr: "240.0.0.0/4", what: "the reserved and broadcast range" },
  { cidr: "::1/128", what: "the loopback range" },
  { cidr: "::/96", what: "the unspecified and IPv4-compatible range" },
  { cidr: "64:ff9b:1::/48", what: "the local-use NAT64 range" },
  { cidr: "fc00::/7", what: "the unique local range (ULA)" },
  { cidr: "fe80::/10", what: "the link-local range" },
  { cidr: "fec0::/10", what: "the site-local range" },
  { cidr: "ff00::/8", what: "the multicast range" },
];

// ---------------------------------------------------------------------------------------------
// Parsing.

/** inet_aton: 1-4 parts, each decimal, octal (leading 0) or hex (0x); the last fills the rest. */
function parseIpv4Loose(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length > 4) return undefined;
  const values: number[] = [];
  for (const p of parts) {
    let v: number;
    if (/^0[xX][0-9a-fA-F]*$/.test(p)) v = p.length === 2 ? 0 : parseInt(p.slice(2), 16);
    else if (/^0[0-7]+$/.test(p)) v = parseInt(p, 8);
    else if (/^(?:0|[1-9][0-9]*)$/.test(p)) v = Number(p);
    else return undefined;
    if (!Number.isSafeInteger(v)) return undefined;
    values.push(v);
  }
  const last = values.pop()!;
  if (values.some((v) => v > 255)) return undefined;
  const lastBytes = 4 - values.length;
  if (last >= 2 ** (8 * lastBytes)) return undefined;
  const out = new Uint8Array(4);
  values.forEach((v, i) => (out[i] = v));
  for (let i = 0; i < lastBytes; i++) out[3 - i] = Math.floor(last / 2 ** (8 * i)) % 256;
  return out;
}

function parseIpv4Strict(text: string): Uint8Array | undefined {
  if (!/^(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}$/.test(text)) return undefined;
  const parts = text.split(".").map(Number);
  return parts.every((p) => p <= 255) ? Uint8Array.from(parts) : undefined;
}

function parseIpv6(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  let head = text;
  let tail4: Uint8Array | undefined;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tail4 = parseIpv4Strict(text.slice(lastColon + 1));
    if (!tail4) return undefined;
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const left = groups(halves[0]!);
  const right = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...right];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    const g = all[i]!;
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  }
  if (tail4) out.set(tail4, 12);
  return out;
}

/** An address as `net` and the OS accept it (IPv4 strictly dotted, IPv6 with or without brackets). */
export function parseIpAddress(text: string): IpAddress | undefined {
  const t = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const v4 = parseIpv4Strict(t);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = t.includes(":") ? parseIpv6(t) : undefined;
  return v6 ? { family: 6, bytes: v6 } : undefined;
}

export type HostKind =
  | { kind: "name"; name: string }
  | { kind: "localhost"; name: string }
  | { kind: "ip"; address: IpAddress; canonical: boolean }
  /** Its last label is a number but it is no address (`foo.123`): resolvers disagree, deny it. */
  | { kind: "bad-number" };

/** A label that makes a host an IPv4 literal (WHATWG "ends in a number"). */
export const NUMERIC_LABEL_SOURCE = "(?:[0-9]+|0[xX][0-9a-fA-F]*)";
const NUMERIC_LABEL = new RegExp(`^${NUMERIC_LABEL_SOURCE}$`);

/** What a URL's host (without port; IPv6 in brackets) names. */
export function classifyHost(host: string): HostKind {
  if (host.startsWith("[")) {
    const a = parseIpAddress(host);
    return a ? { kind: "ip", address: a, canonical: true } : { kind: "bad-number" };
  }
  const name = host.replace(/\.$/, "");
  const labels = name.split(".");
  if (NUMERIC_LABEL.test(labels[labels.length - 1]!)) {
    const loose = parseIpv4Loose(name);
    if (!loose) return { kind: "bad-number" };
    return { kind: "ip", address: { family: 4, bytes: loose }, canonical: parseIpv4Strict(host) !== undefined };
  }
  const lower = name.toLowerCase();
  if (lower === "localhost" || lower.endsWith(".localhost")) return { kind: "localhost", name: host };
  return { kind: "name", name: host };
}

// ---------------------------------------------------------------------------------------------
// Ranges.

export function parseCidr(cidr: string): AddressRange | undefined {
  const slash = cidr.indexOf("/");
  const address = parseIpAddress(slash < 0 ? cidr : cidr.slice(0, slash));
  if (!address) return undefined;
  const max = address.family === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(max) : cidr.slice(slash + 1);
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > max) return undefined;
  return { family: address.family, bytes: address.bytes, prefix, cidr };
}

function rangeContains(range: AddressRange, address: IpAddress): boolean {
  if (range.family !== address.family) return false;
  for (let bit = 0; bit < range.prefix; bit++) {
    const mask = 0x80 >> (bit % 8);
    if ((range.bytes[bit >> 3]! & mask) !== (address.bytes[bit >> 3]! & mask)) return false;
  }
  return true;
}

const DENIED = DENIED_ADDRESS_RANGES.map((r) => ({ range: parseCidr(r.cidr)!, what: r.what }));

/** The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any. */
function embeddedIpv4(a: IpAddress): IpAddress | undefined {
  if (a.family !== 6) return undefined;
  const b = a.bytes;
  const zero = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  if (zero(0, 10) && b[10] === 0xff && b[11] === 0xff) return { family: 4, bytes: b.slice(12, 16) };
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zero(4, 12)) return { family: 4, bytes: b.slice(12, 16) };
  if (b[0] === 0x20 && b[1] === 0x02) return { family: 4, bytes: b.slice(2, 6) };
  return undefined;
}

export function formatIpAddress(a: IpAddress): string {
  if (a.family === 4) return Array.from(a.bytes).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((a.bytes[i]! << 8) | a.bytes[i + 1]!).toString(16));
  return groups.join(":").replace(/(^|:)0(?::0)+(:|$)/, "::");
}

export type AddressVerdict = { allowed: true } | { allowed: false; cidr: string; what: string; address: string };

/**
 * Whether `address` may be reached: allowed ranges first (the operator's explicit choice), then
 * the denied list. An address embedding an IPv4 address is judged as that IPv4 address as well.
 */
export function checkAddress(address: IpAddress, allowed: readonly AddressRange[]): AddressVerdict {
  const candidates = [address, embeddedIpv4(address)].filter((a): a is IpAddress => a !== undefined);
  if (candidates.some((a) => allowed.some((r) => rangeContains(r, a)))) return { allowed: true };
  for (const a of candidates) {
    const hit = DENIED.find((d) => rangeContains(d.range, a));
    if (hit) return { allowed: false, cidr: hit.range.cidr, what: hit.what, address: formatIpAddress(a) };
  }
  return { allowed: true };
}

/** `flakeRefPolicy.allowedAddressRanges`: CIDRs (or single addresses) the default denial does not cover. */
export const addressRangesSchema = z
  .array(
    z
      .string()
      .max(64)
      .refine((s) => parseCidr(s) !== undefined, "must be a CIDR like 10.20.0.0/16 or fd00::/8, or a single address"),
  )
  .max(64)
  .default([])
  .describe(
    "Address ranges flake refs and the revision poller may reach although they are loopback, private, link-local or otherwise special (denied by default against SSRF); e.g. 127.0.0.0/8 for a test git server.",
  );

export function parseAddressRanges(cidrs: readonly string[]): AddressRange[] {
  return cidrs.map((c) => {
    const r = parseCidr(c);
    if (!r) throw new Error(`'${c}' is not a CIDR`);
    return r;
  });
}
