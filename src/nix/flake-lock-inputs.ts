// PURE: every input of a flake's lock (the `locks` object `nix flake metadata --json` prints, the
// content of flake.lock) as name, locked URL and NAR hash: the resolved dependencies a provenance
// statement lists. Transitive inputs are included (node keys like `nixpkgs_2` name them).

export interface LockedInput {
  /** The lock node's key (`nixpkgs`, `flake-utils`, `nixpkgs_2`, ...). */
  name: string;
  /** A flake URL pinning the input (e.g. `github:NixOS/nixpkgs/<rev>`). */
  url: string;
  /** `sha256-<base64>` of the input's source tree. */
  narHash: string;
  rev?: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** A flake URL for Nix's `locked` attribute set (best effort; unknown types give `<type>:<json>`). */
export function lockedUrl(locked: Record<string, unknown>): string {
  const type = str(locked.type) ?? "unknown";
  const rev = str(locked.rev);
  const query = (base: string, params: Record<string, string | undefined>) => {
    const q = Object.entries(params).filter((e): e is [string, string] => e[1] !== undefined);
    return q.length > 0 ? `${base}${base.includes("?") ? "&" : "?"}${q.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&")}` : base;
  };
  switch (type) {
    case "github":
    case "gitlab":
    case "sourcehut":
      return query(`${type}:${str(locked.owner) ?? ""}/${str(locked.repo) ?? ""}${rev ? `/${rev}` : ""}`, { host: str(locked.host) });
    case "git":
    case "mercurial": {
      const url = str(locked.url) ?? "";
      const prefix = type === "git" ? "git+" : "hg+";
      return query(`${url.startsWith(prefix) ? "" : prefix}${url}`, { ref: str(locked.ref), rev });
    }
    case "tarball":
    case "file":
      return str(locked.url) ?? `${type}:`;
    case "path":
      return `path:${str(locked.path) ?? ""}`;
    default:
      return `${type}:${JSON.stringify(locked).slice(0, 512)}`;
  }
}

/** The lock's nodes except the root, sorted by name; nodes without a narHash (not locked) are skipped. */
export function lockedInputs(locks: unknown): LockedInput[] {
  if (!isRecord(locks) || !isRecord(locks.nodes)) return [];
  const rootKey = str(locks.root) ?? "root";
  const out: LockedInput[] = [];
  for (const [name, node] of Object.entries(locks.nodes)) {
    if (name === rootKey || !isRecord(node) || !isRecord(node.locked)) continue;
    const narHash = str(node.locked.narHash);
    if (narHash === undefined) continue;
    const rev = str(node.locked.rev);
    out.push({ name, url: lockedUrl(node.locked), narHash, ...(rev ? { rev } : {}) });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
