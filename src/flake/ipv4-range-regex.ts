/**
 * A regex (RE2 ∩ JavaScript) matching exactly the canonical dotted-quad IPv4 addresses (no leading
 * zeros) inside a set of address ranges, so that the CRD's CEL rule can allow the addresses the
 * flake ref policy allows without a CIDR library in the API server.
 */
import type { AddressRange } from "./address-policy.ts";

type Interval = [number, number];

/** Alternatives matching the decimal numbers lo..hi written with the same number of digits. */
function sameLength(a: string, b: string): string[] {
  if (a === b) return [a];
  if (a.length === 1) return [`[${a}-${b}]`];
  if (a[0] === b[0]) return sameLength(a.slice(1), b.slice(1)).map((s) => a[0] + s);
  const n = a.length - 1;
  const out: string[] = [];
  let from = Number(a[0]);
  let to = Number(b[0]);
  if (!/^0*$/.test(a.slice(1))) {
    out.push(...sameLength(a.slice(1), "9".repeat(n)).map((s) => a[0] + s));
    from++;
  }
  const highTail = /^9*$/.test(b.slice(1));
  if (!highTail) to--;
  if (from <= to) out.push(`${from === to ? String(from) : `[${from}-${to}]`}${n === 1 ? "[0-9]" : `[0-9]{${n}}`}`);
  if (!highTail) out.push(...sameLength("0".repeat(n), b.slice(1)).map((s) => b[0] + s));
  return out;
}

/** The decimal numbers lo..hi (0 <= lo <= hi), without leading zeros. */
export function numberRangeRegex(lo: number, hi: number): string {
  const out: string[] = [];
  for (let digits = String(lo).length; digits <= String(hi).length; digits++) {
    const a = Math.max(lo, digits === 1 ? 0 : 10 ** (digits - 1));
    const b = Math.min(hi, 10 ** digits - 1);
    if (a <= b) out.push(...sameLength(String(a), String(b)));
  }
  return out.length === 1 ? out[0]! : `(?:${out.join("|")})`;
}

const ANY_OCTET = numberRangeRegex(0, 255);

function octets(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function quads(lo: number[], hi: number[]): string {
  if (lo.length === 1) return numberRangeRegex(lo[0]!, hi[0]!);
  const rest = lo.length - 1;
  if (lo[0] === hi[0]) return `${lo[0]}\\.${quads(lo.slice(1), hi.slice(1))}`;
  const any = Array<string>(rest).fill(ANY_OCTET).join("\\.");
  const parts: string[] = [];
  let from = lo[0]!;
  let to = hi[0]!;
  if (lo.slice(1).some((x) => x !== 0)) {
    parts.push(`${from}\\.${quads(lo.slice(1), Array<number>(rest).fill(255))}`);
    from++;
  }
  const tail = hi.slice(1).some((x) => x !== 255) ? `${to}\\.${quads(Array<number>(rest).fill(0), hi.slice(1))}` : undefined;
  if (tail) to--;
  if (from <= to) parts.push(`${numberRangeRegex(from, to)}\\.${any}`);
  if (tail) parts.push(tail);
  return parts.length === 1 ? parts[0]! : `(?:${parts.join("|")})`;
}

function toInterval(r: AddressRange): Interval {
  const base = ((r.bytes[0]! << 24) | (r.bytes[1]! << 16) | (r.bytes[2]! << 8) | r.bytes[3]!) >>> 0;
  const size = 2 ** (32 - r.prefix);
  const start = base - (base % size);
  return [start, start + size - 1];
}

function merge(intervals: Interval[]): Interval[] {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  const out: Interval[] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1] + 1) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/**
 * Canonical IPv4 addresses outside `denied` or inside `allowed` (IPv6 ranges are ignored), as
 * one regex without anchors; `undefined` when no address qualifies.
 */
export function ipv4AllowedRegex(denied: readonly AddressRange[], allowed: readonly AddressRange[]): string | undefined {
  const deniedIntervals = merge(denied.filter((r) => r.family === 4).map(toInterval));
  const open: Interval[] = [];
  let next = 0;
  for (const [s, e] of deniedIntervals) {
    if (s > next) open.push([next, s - 1]);
    next = e + 1;
  }
  if (next <= 0xffffffff) open.push([next, 0xffffffff]);
  const all = merge([...open, ...allowed.filter((r) => r.family === 4).map(toInterval)]);
  if (all.length === 0) return undefined;
  return `(?:${all.map(([s, e]) => quads(octets(s), octets(e))).join("|")})`;
}
