// PURE: parses and formats `host[:port]/path[:tag][@sha256:<hex>]` (the registry host is required:
// no implicit Docker Hub) following the distribution reference grammar.
import { isDigest, type Digest } from "./digest.ts";

export interface ImageReference {
  /** `registry.example.com`, `127.0.0.1:5000`, `[::1]:5000`, `localhost`. */
  host: string;
  /** Repository path inside the registry, e.g. `acme/web`. */
  repository: string;
  tag?: string;
  digest?: Digest;
}

export class ImageReferenceError extends Error {
  override name = "ImageReferenceError";
}

const hostComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const hostPattern = new RegExp(`^(?:${hostComponent}(?:\\.${hostComponent})*|\\[[0-9a-fA-F:.]+\\])(?::([0-9]{1,5}))?$`);
const pathComponentPattern = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const MAX_NAME_LENGTH = 255;

function shown(s: string): string {
  return JSON.stringify(s.length > 300 ? `${s.slice(0, 300)}…` : s);
}

function isValidHost(host: string): boolean {
  const m = hostPattern.exec(host);
  if (!m) return false;
  if (m[1] !== undefined) {
    const port = Number(m[1]);
    if (port < 1 || port > 65535) return false;
  }
  return true;
}

export function isValidRepository(repository: string): boolean {
  return repository.length > 0 && repository.split("/").every((c) => pathComponentPattern.test(c));
}

export function isValidTag(tag: string): boolean {
  return tagPattern.test(tag);
}

function looksLikeHost(component: string): boolean {
  return component === "localhost" || component.includes(".") || component.includes(":") || component.startsWith("[");
}

/** Parses a full reference; `what` names it in error messages (e.g. "spec.image.repository"). */
export function parseImageReference(text: string, what = "image reference"): ImageReference {
  if (typeof text !== "string" || text.length === 0) throw new ImageReferenceError(`${what} is empty`);
  if (text.length > 1024 || /\s/.test(text)) throw new ImageReferenceError(`${what} ${shown(text)} is not a valid reference`);
  let rest = text;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw new ImageReferenceError(`${what} ${shown(text)}: digest must be sha256:<64 lowercase hex>`);
    digest = d;
    rest = rest.slice(0, at);
  }
  const slash = rest.indexOf("/");
  if (slash < 0) {
    throw new ImageReferenceError(`${what} ${shown(text)}: must start with a registry host (host[:port]/repository)`);
  }
  const host = rest.slice(0, slash);
  let path = rest.slice(slash + 1);
  if (!looksLikeHost(host) || !isValidHost(host)) {
    throw new ImageReferenceError(`${what} ${shown(text)}: ${shown(host)} is not a registry host (host[:port])`);
  }
  let tag: string | undefined;
  const colon = path.lastIndexOf(":");
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!isValidTag(tag)) throw new ImageReferenceError(`${what} ${shown(text)}: bad tag ${shown(tag)}`);
  }
  if (!isValidRepository(path)) {
    throw new ImageReferenceError(`${what} ${shown(text)}: bad repository ${shown(path)} (lowercase letters, digits, separators . _ __ - and /)`);
  }
  if (host.length + 1 + path.length > MAX_NAME_LENGTH) {
    throw new ImageReferenceError(`${what} ${shown(text)}: name longer than ${MAX_NAME_LENGTH} characters`);
  }
  const ref: ImageReference = { host, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `host/repository[:tag][@digest]`. */
export function formatImageReference(ref: ImageReference): string {
  return `${ref.host}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ""}${ref.digest !== undefined ? `@${ref.digest}` : ""}`;
}

/** The host to talk the registry API to (Docker Hub's API lives on another name). */
export function registryApiHost(host: string): string {
  return host === "docker.io" || host === "index.docker.io" ? "registry-1.docker.io" : host;
}
