// PURE: a CycloneDX 1.6 JSON SBOM of an image's runtime closure, from what the push step already
// has (closure.json: store paths, NAR hashes, references). One component per store path: name and
// version parsed from the path the way Nix's parseDrvName does, the NAR hash as its SHA-256, a
// `pkg:nix/<name>@<version>` purl, and dependency edges from the references. The image's own
// store path is the `metadata.component` and carries the package's meta (license, homepage) when
// the build step could evaluate it. No timestamp or random serial: the same closure gives the
// same bytes, so the SBOM's digest is stable too.
import { createHash } from "node:crypto";
import type { ClosurePath } from "../image/path-info.ts";
import { sha256Hex } from "./nix-hash.ts";

export const CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json";
/** in-toto predicate type cosign uses for `--type cyclonedx`. */
export const CYCLONEDX_PREDICATE_TYPE = "https://cyclonedx.org/bom";

interface PackageMeta {
  /** SPDX ids (or nixpkgs short names when a license has no SPDX id). */
  licenses?: string[];
  homepage?: string;
  description?: string;
  version?: string;
}

export interface SbomInput {
  closure: readonly ClosurePath[];
  /** The image's own store path (the top-level component). */
  root: string;
  meta?: PackageMeta;
  /** Name and version of the tool, for metadata.tools. */
  tool: { name: string; version: string };
  /** The image reference the SBOM describes (a property of the top-level component). */
  image?: string;
}

/** `/nix/store/<hash>-hello-2.12.1` -> { name: "hello", version: "2.12.1" }: the version starts at the first `-` followed by a non-letter. */
export function parseStorePathName(storePath: string): { hash: string; name: string; version?: string } {
  const base = storePath.slice(storePath.lastIndexOf("/") + 1);
  const hash = base.slice(0, 32);
  const full = base.slice(33);
  for (let i = 0; i < full.length - 1; i++) {
    if (full[i] === "-" && !/[A-Za-z]/.test(full[i + 1]!)) return { hash, name: full.slice(0, i), version: full.slice(i + 1) };
  }
  return { hash, name: full };
}

// purl-spec percent-encoding: everything but unreserved characters in names and versions.
function purlEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

export function nixPurl(name: string, version: string | undefined): string {
  return `pkg:nix/${purlEncode(name)}${version !== undefined ? `@${purlEncode(version)}` : ""}`;
}

/** A UUID (v5 layout) derived from the closure, so equal closures get equal serial numbers. */
function serialNumber(closure: readonly ClosurePath[]): string {
  const h = createHash("sha256");
  for (const p of [...closure].map((c) => `${c.path} ${c.narHash ?? ""}`).sort()) h.update(`${p}\n`);
  const b = h.digest().subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const x = b.toString("hex");
  return `urn:uuid:${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

function component(p: ClosurePath, type: "application" | "library", meta?: PackageMeta, image?: string): Record<string, unknown> {
  const { name, version } = parseStorePathName(p.path);
  const v = meta?.version ?? version;
  const hex = sha256Hex(p.narHash);
  const c: Record<string, unknown> = { type, "bom-ref": p.path, name: name || p.path };
  if (v !== undefined) c.version = v;
  if (meta?.description) c.description = meta.description;
  if (hex !== undefined) c.hashes = [{ alg: "SHA-256", content: hex }];
  // As names: an `id` must be in the schema's SPDX list, which lags behind nixpkgs' spdxIds.
  if (meta?.licenses && meta.licenses.length > 0) c.licenses = meta.licenses.map((l) => ({ license: { name: l } }));
  c.purl = nixPurl(name || p.path, v);
  if (meta?.homepage) c.externalReferences = [{ type: "website", url: meta.homepage }];
  const properties = [
    { name: "nix:store_path", value: p.path },
    { name: "nix:nar_size", value: String(p.narSize) },
    ...(p.narHash ? [{ name: "nix:nar_hash", value: p.narHash }] : []),
    ...(image ? [{ name: "oci:image", value: image }] : []),
  ];
  c.properties = properties;
  return c;
}

export function buildCycloneDxSbom(input: SbomInput): Record<string, unknown> {
  const byPath = [...input.closure].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const root = byPath.find((p) => p.path === input.root);
  if (!root) throw new Error(`the closure does not contain the image's root ${input.root}`);
  const known = new Set(byPath.map((p) => p.path));
  return {
    bomFormat: "CycloneDX",
    specVersion: "1.6",
    serialNumber: serialNumber(byPath),
    version: 1,
    metadata: {
      tools: { components: [{ type: "application", name: input.tool.name, version: input.tool.version }] },
      component: component(root, "application", input.meta, input.image),
    },
    components: byPath.filter((p) => p.path !== input.root).map((p) => component(p, "library")),
    // Self-references (a path that mentions its own hash) are not dependencies.
    dependencies: byPath.map((p) => ({ ref: p.path, dependsOn: p.references.filter((r) => r !== p.path && known.has(r)) })),
  };
}
