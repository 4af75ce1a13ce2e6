// PURE: Nix's hash notations -> lowercase hex, for SBOM hashes and provenance digests. Nix prints a
// NAR hash as `sha256:<nix base32>` (path-info before 2.19) or as SRI `sha256-<base64>` (later
// releases, flake locks); both name the sha256 of the path's NAR serialisation.

// Nix's base32 alphabet (no e, o, u, t) and bit order: the LAST character holds the lowest bits.
const NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz";

export function nixBase32ToBytes(text: string, size: number): Buffer | undefined {
  if (text.length !== Math.ceil((size * 8) / 5)) return undefined;
  const out = Buffer.alloc(size);
  for (let k = 0; k < text.length; k++) {
    const digit = NIX_BASE32.indexOf(text[k]!);
    if (digit < 0) return undefined;
    const n = text.length - 1 - k;
    const bit = n * 5;
    const i = bit >> 3;
    const j = bit & 7;
    out[i]! |= (digit << j) & 0xff;
    if (i + 1 < size) out[i + 1]! |= digit >> (8 - j);
    else if (digit >> (8 - j) !== 0) return undefined;
  }
  return out;
}

/** `sha256:<base32|hex>` or `sha256-<base64>` -> 64 hex characters; undefined for anything else. */
export function sha256Hex(nixHash: string | undefined): string | undefined {
  if (nixHash === undefined) return undefined;
  const sri = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(nixHash);
  if (sri) return Buffer.from(sri[1]!, "base64").toString("hex");
  const m = /^sha256:([0-9a-z]+)$/.exec(nixHash);
  if (!m) return undefined;
  if (/^[0-9a-f]{64}$/.test(m[1]!)) return m[1]!;
  return nixBase32ToBytes(m[1]!, 32)?.toString("hex");
}
