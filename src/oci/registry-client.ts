// An OCI distribution (v2) client for pushing images: blob HEAD, cross-repository mount, streamed
// chunked upload (POST, PATCH, PUT ?digest=), monolithic upload of small blobs, manifest PUT/GET,
// tag list. Every response digest is checked. Requests without a body or with a byte body are
// retried on 5xx/429/connection failures; a streamed upload is retried as a whole (a fresh
// stream from its source). Errors carry the registry's code and message, never credentials.
import type { Readable } from "node:stream";
import type { Logger } from "../log/logger.ts";
import { systemClock, type Clock } from "../runtime/clock.ts";
import { RegistryAuthenticator, repositoryScope } from "./auth.ts";
import { assertDigest, isDigest, sha256Digest, type Digest } from "./digest.ts";
import type { RegistryCredentials } from "./docker-config.ts";
import { drain, HttpTransport, readBody, type HttpResponse, type TlsOptions } from "./http-transport.ts";
import { isValidRepository, isValidTag, registryApiHost } from "./image-reference.ts";
import { MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST } from "./image-manifest.ts";
import { classifyRegistryFailure, parseRegistryErrors, redactSecrets, RegistryError } from "./registry-error.ts";
import { DEFAULT_RETRY_POLICY, parseRetryAfter, withRetry, type RetryPolicy } from "./retry.ts";

export interface RegistryClientOptions extends TlsOptions {
  /** `host[:port]` as written in image references. */
  host: string;
  credentials?: RegistryCredentials;
  clock?: Clock;
  /** Jitter source for backoff, [0, 1). */
  random?: () => number;
  retry?: RetryPolicy;
  logger?: Logger;
  /** Socket idle timeout per request. */
  timeoutMs?: number;
  /** Parallel connections to the registry. */
  maxSockets?: number;
  userAgent?: string;
  /** Aborts every request, a stalled upload included, and every wait between retries. */
  signal?: AbortSignal;
}

export interface BlobInfo {
  digest: Digest;
  size: number;
}

/** A blob produced while it is uploaded: its digest is known only once its stream has ended. */
export interface BlobStreamSource<T extends BlobInfo = BlobInfo> {
  /** Opens a fresh stream of the blob (called again when the upload is retried). */
  open(): { stream: Readable; result: Promise<T> };
}

export interface ManifestData {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

type Body = Buffer | Readable | undefined;

interface SendSpec {
  method: string;
  /** Absolute URL, or a path below the registry's base URL. */
  url: URL | string;
  operation: string;
  scopes: string[];
  headers?: Record<string, string>;
  body?: Body;
  /** Accepted statuses; anything else (after auth) is an error. */
  expect: number[];
}

const MANIFEST_ACCEPT = [MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST].join(", ");

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

function shortDigest(d: string): string {
  return d.length > 19 ? `${d.slice(0, 19)}…` : d;
}

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Appends `digest=` to an upload URL that may already carry a query string. */
export function withDigestParam(location: URL, digest: Digest): URL {
  const href = location.href;
  const hashAt = href.indexOf("#");
  const base = hashAt >= 0 ? href.slice(0, hashAt) : href;
  const sep = base.includes("?") ? (base.endsWith("?") || base.endsWith("&") ? "" : "&") : "?";
  return new URL(`${base}${sep}digest=${encodeURIComponent(digest)}`);
}

/** The `next` URL of an RFC 8288 Link header (tag list pagination). */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(",")) {
    const m = /<([^>]*)>\s*(.*)$/.exec(part.trim());
    if (m && /rel="?next"?/i.test(m[2] ?? "")) return m[1];
  }
  return undefined;
}

export class RegistryClient {
  /** The host as written in references (e.g. `docker.io`, `127.0.0.1:5000`). */
  readonly host: string;
  readonly #base: URL;
  readonly #transport: HttpTransport;
  readonly #auth: RegistryAuthenticator;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #retry: RetryPolicy;
  readonly #logger: Logger | undefined;
  readonly #signal: AbortSignal | undefined;

  constructor(options: RegistryClientOptions) {
    this.host = options.host;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#retry = options.retry ?? DEFAULT_RETRY_POLICY;
    this.#logger = options.logger;
    this.#signal = options.signal;
    this.#transport = new HttpTransport(options);
    this.#base = this.#transport.baseUrl(registryApiHost(options.host));
    this.#auth = new RegistryAuthenticator({
      host: options.host,
      transport: this.#transport,
      clock: this.#clock,
      ...(options.credentials ? { credentials: options.credentials } : {}),
      ...(options.logger ? { logger: options.logger } : {}),
    });
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.#transport.close();
  }

  #repoPath(repository: string, rest: string): string {
    if (!isValidRepository(repository)) throw new Error(`invalid repository name ${JSON.stringify(repository.slice(0, 300))}`);
    return `/v2/${repository}/${rest}`;
  }

  #resolve(url: URL | string): URL {
    return typeof url === "string" ? new URL(url, this.#base) : url;
  }

  #error(operation: string, fields: { status?: number; body?: Buffer; res?: HttpResponse; reason?: string; cause?: unknown }): RegistryError {
    const retryAfter = fields.res ? header(fields.res, "retry-after") : undefined;
    const retryAfterMs = parseRetryAfter(retryAfter, this.#clock.now());
    return new RegistryError({
      operation,
      host: this.host,
      ...(fields.status !== undefined ? { status: fields.status } : {}),
      errors: parseRegistryErrors(fields.body, this.#auth.secrets),
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      ...(fields.reason !== undefined ? { reason: redactSecrets(fields.reason, this.#auth.secrets) } : {}),
      ...(fields.cause !== undefined ? { cause: fields.cause } : {}),
    });
  }

  /**
   * One request with authentication: sends what is known, answers a 401 challenge once, and
   * returns a response whose status is in `expect` (its body still unread). A stream body cannot
   * be sent twice, so callers authenticate first with a bodiless request to the same scope.
   */
  async #sendOnce(spec: SendSpec): Promise<HttpResponse> {
    const url = this.#resolve(spec.url);
    const sameOrigin = url.origin === this.#base.origin;
    const replayable = spec.body === undefined || Buffer.isBuffer(spec.body);
    for (let round = 0; ; round++) {
      const auth = sameOrigin ? await this.#auth.authorization(spec.scopes) : undefined;
      const headers: Record<string, string> = { ...spec.headers };
      if (auth !== undefined) headers.Authorization = auth;
      let res: HttpResponse;
      try {
        res = await this.#transport.request({ method: spec.method, url, headers, ...(spec.body !== undefined ? { body: spec.body } : {}) });
      } catch (err) {
        if (err instanceof RegistryError) throw err;
        const e = err as NodeJS.ErrnoException;
        const network = typeof e.code === "string" && /^E[A-Z]+$|^ERR_/.test(e.code);
        throw this.#error(spec.operation, { reason: network ? `${e.code}: ${e.message}` : e.message, cause: err });
      }
      this.#logger?.debug({ method: spec.method, path: url.pathname, status: res.status }, "registry request");
      if (res.status === 401 && sameOrigin && round === 0) {
        const body = await readBody(res.body, 64 * 1024);
        const retry = await this.#auth.onUnauthorized(res.headers["www-authenticate"], spec.scopes, auth);
        if (retry && replayable) continue;
        const reason = retry
          ? "authentication required for a streamed request (authenticate first)"
          : auth !== undefined
            ? "the registry rejected the credentials"
            : this.#auth.hasCredentials
              ? "the registry did not accept the configured credentials"
              : "the registry requires authentication and no credentials are configured for it";
        throw this.#error(spec.operation, { status: 401, body, res, reason });
      }
      if (spec.expect.includes(res.status)) return res;
      const body = spec.method === "HEAD" ? undefined : await readBody(res.body, 64 * 1024);
      if (spec.method === "HEAD") await drain(res.body);
      const reason = res.status === 401 ? "the registry rejected the credentials" : undefined;
      throw this.#error(spec.operation, { status: res.status, res, ...(body ? { body } : {}), ...(reason ? { reason } : {}) });
    }
  }

  /** `#sendOnce` with retries; only for bodiless or byte-bodied requests. */
  #send(spec: SendSpec): Promise<HttpResponse> {
    return this.#withRetry(spec.operation, () => this.#sendOnce(spec));
  }

  #withRetry<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(fn, {
      policy: this.#retry,
      clock: this.#clock,
      random: this.#random,
      classify: classifyRegistryFailure,
      ...(this.#signal ? { signal: this.#signal } : {}),
      onRetry: ({ attempt, delayMs, error }) =>
        this.#logger?.warn({ operation, attempt, delayMs, error: error instanceof Error ? error.message : String(error) }, "registry request failed, retrying"),
    });
  }

  /** GET /v2/: checks that the registry speaks v2 and that we may talk to it. */
  async ping(): Promise<void> {
    const res = await this.#send({ method: "GET", url: "/v2/", operation: "GET /v2/", scopes: [], expect: [200] });
    await drain(res.body);
  }

  /** The blob's size when the repository has it; undefined on 404 (its Content-Length is ignored). */
  async hasBlob(repository: string, digest: Digest): Promise<BlobInfo | undefined> {
    assertDigest(digest);
    const res = await this.#send({
      method: "HEAD",
      url: this.#repoPath(repository, `blobs/${digest}`),
      operation: `HEAD blob ${repository}@${shortDigest(digest)}`,
      scopes: [repositoryScope(repository, "pull,push")],
      expect: [200, 404],
    });
    await drain(res.body);
    if (res.status === 404) return undefined;
    const size = Number(header(res, "content-length"));
    return { digest, size: Number.isSafeInteger(size) ? size : -1 };
  }

  /**
   * Cross-repository mount of a blob from another repository of this registry. True when mounted
   * (201); false when the registry started an ordinary upload instead (202; that session is
   * cancelled). Other outcomes throw.
   */
  async mountBlob(repository: string, digest: Digest, fromRepository: string): Promise<boolean> {
    assertDigest(digest);
    if (!isValidRepository(fromRepository)) throw new Error("invalid source repository name");
    const q = `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(fromRepository)}`;
    const res = await this.#send({
      method: "POST",
      url: this.#repoPath(repository, `blobs/uploads/${q}`),
      operation: `mount blob ${shortDigest(digest)} from ${fromRepository} into ${repository}`,
      scopes: [repositoryScope(repository, "pull,push"), repositoryScope(fromRepository, "pull")],
      expect: [201, 202],
    });
    await drain(res.body);
    if (res.status === 201) return true;
    const location = header(res, "location");
    if (location) await this.#cancelUpload(repository, location);
    return false;
  }

  async #cancelUpload(repository: string, location: string): Promise<void> {
    try {
      const res = await this.#sendOnce({
        method: "DELETE",
        url: new URL(location, this.#base),
        operation: `cancel upload to ${repository}`,
        scopes: [repositoryScope(repository, "pull,push")],
        expect: [200, 202, 204, 404],
      });
      await drain(res.body);
    } catch (err) {
      this.#logger?.debug({ repository, error: (err as Error).message }, "could not cancel an upload session");
    }
  }

  /** POST /blobs/uploads/: starts an upload session; returns its absolute location. */
  async #startUpload(repository: string): Promise<URL> {
    const res = await this.#sendOnce({
      method: "POST",
      url: this.#repoPath(repository, "blobs/uploads/"),
      operation: `start upload to ${repository}`,
      scopes: [repositoryScope(repository, "pull,push")],
      expect: [202],
    });
    await drain(res.body);
    const location = header(res, "location");
    if (!location) throw this.#error(`start upload to ${repository}`, { status: res.status, reason: "no Location header" });
    return new URL(location, this.#base);
  }

  async #finishUpload(repository: string, location: URL, digest: Digest, body: Buffer | undefined): Promise<void> {
    const operation = `finish upload of ${shortDigest(digest)} to ${repository}`;
    const res = await this.#sendOnce({
      method: "PUT",
      url: withDigestParam(location, digest),
      operation,
      scopes: [repositoryScope(repository, "pull,push")],
      headers: { "Content-Type": "application/octet-stream" },
      ...(body !== undefined ? { body } : {}),
      expect: [201, 204],
    });
    await drain(res.body);
    const returned = header(res, "docker-content-digest");
    if (returned !== undefined && returned !== digest) {
      throw this.#error(operation, { status: res.status, reason: `the registry stored digest ${shortDigest(returned)}, expected ${shortDigest(digest)}` });
    }
  }

  /** Uploads a small blob held in memory (POST, then PUT with the bytes). Skips nothing: callers HEAD first. */
  async uploadBlob(repository: string, bytes: Buffer): Promise<BlobInfo> {
    const digest = sha256Digest(bytes);
    await this.#withRetry(`upload blob ${shortDigest(digest)} to ${repository}`, async () => {
      const location = await this.#startUpload(repository);
      await this.#finishUpload(repository, location, digest, bytes);
    });
    return { digest, size: bytes.length };
  }

  /**
   * Streams a blob of unknown length and digest: POST, one chunked PATCH with the stream, then
   * PUT ?digest= with the digest the source computed while streaming. A failure (including one
   * of the source) aborts the session; retryable failures start over with a fresh stream.
   */
  async uploadBlobStream<T extends BlobInfo>(repository: string, source: BlobStreamSource<T>): Promise<T> {
    return this.#withRetry(`upload blob to ${repository}`, async () => {
      const location = await this.#startUpload(repository);
      const { stream, result } = source.open();
      result.catch(() => undefined); // observed below; avoid an unhandled rejection meanwhile
      let next: URL;
      let uploaded: number | undefined;
      try {
        const res = await this.#sendOnce({
          method: "PATCH",
          url: location,
          operation: `upload blob data to ${repository}`,
          scopes: [repositoryScope(repository, "pull,push")],
          headers: { "Content-Type": "application/octet-stream" },
          body: stream,
          expect: [202, 204],
        });
        await drain(res.body);
        const loc = header(res, "location");
        next = loc ? new URL(loc, location) : location;
        const range = /^(?:bytes=)?0-(\d+)$/.exec(header(res, "range") ?? "");
        if (range) uploaded = Number(range[1]) + 1;
      } catch (err) {
        stream.destroy();
        await this.#cancelUpload(repository, location.href);
        // A failing source is the real cause; report it rather than the aborted request.
        const sourceError = await result.then(
          () => undefined,
          (e: unknown) => e,
        );
        throw sourceError ?? err;
      }
      const info = await result;
      assertDigest(info.digest, "computed blob digest");
      if (uploaded !== undefined && info.size > 0 && uploaded !== info.size) {
        throw this.#error(`upload blob ${shortDigest(info.digest)} to ${repository}`, {
          reason: `the registry received ${uploaded} bytes, ${info.size} were sent`,
        });
      }
      await this.#finishUpload(repository, next, info.digest, undefined);
      return info;
    });
  }

  /** PUTs manifest bytes as they are under a tag or digest; returns (and checks) their digest. */
  async putManifest(repository: string, reference: string, manifest: { bytes: Buffer; mediaType: string }): Promise<Digest> {
    if (!isValidTag(reference) && !isDigest(reference)) throw new Error(`invalid tag or digest ${JSON.stringify(reference.slice(0, 200))}`);
    const digest = sha256Digest(manifest.bytes);
    if (isDigest(reference) && reference !== digest) throw new Error("manifest bytes do not match the digest they are pushed under");
    const operation = `PUT manifest ${repository}:${shortDigest(reference)}`;
    const res = await this.#send({
      method: "PUT",
      url: this.#repoPath(repository, `manifests/${reference}`),
      operation,
      scopes: [repositoryScope(repository, "pull,push")],
      headers: { "Content-Type": manifest.mediaType },
      body: manifest.bytes,
      expect: [200, 201, 202],
    });
    await drain(res.body);
    const returned = header(res, "docker-content-digest");
    if (returned !== undefined && returned !== digest) {
      throw this.#error(operation, { status: res.status, reason: `the registry computed digest ${shortDigest(returned)}, expected ${shortDigest(digest)}` });
    }
    return digest;
  }

  /** GETs a manifest (or index) by tag or digest; a digest reference is verified against the bytes. */
  async getManifest(repository: string, reference: string, accept: string = MANIFEST_ACCEPT): Promise<ManifestData> {
    const found = await this.#getManifest(repository, reference, accept, false);
    return found!;
  }

  /** Like getManifest, but undefined when the registry answers 404 (no such tag or manifest). */
  findManifest(repository: string, reference: string, accept: string = MANIFEST_ACCEPT): Promise<ManifestData | undefined> {
    return this.#getManifest(repository, reference, accept, true);
  }

  /**
   * The OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`): the index of manifests whose
   * subject is `digest`; undefined when the registry does not implement it (404), as distribution
   * 2.8 and 3.x do not (then the tag schema `sha256-<hex>` is the fallback).
   */
  async referrers(repository: string, digest: Digest): Promise<ManifestData | undefined> {
    assertDigest(digest);
    const operation = `GET referrers of ${repository}@${shortDigest(digest)}`;
    const res = await this.#send({
      method: "GET",
      url: this.#repoPath(repository, `referrers/${digest}`),
      operation,
      scopes: [repositoryScope(repository, "pull")],
      headers: { Accept: MEDIA_TYPE_OCI_INDEX },
      expect: [200, 404],
    });
    const bytes = await readBody(res.body, MAX_MANIFEST_BYTES + 1);
    const mediaType = (header(res, "content-type") ?? "").split(";")[0]!.trim();
    // A registry without the API may answer 200 with something else (an HTML page, a v2 error).
    if (res.status === 404 || mediaType !== MEDIA_TYPE_OCI_INDEX || bytes.length > MAX_MANIFEST_BYTES) return undefined;
    return { bytes, mediaType, digest: sha256Digest(bytes) };
  }

  async #getManifest(repository: string, reference: string, accept: string, optional: boolean): Promise<ManifestData | undefined> {
    if (!isValidTag(reference) && !isDigest(reference)) throw new Error(`invalid tag or digest ${JSON.stringify(reference.slice(0, 200))}`);
    const operation = `GET manifest ${repository}:${shortDigest(reference)}`;
    const res = await this.#send({
      method: "GET",
      url: this.#repoPath(repository, `manifests/${reference}`),
      operation,
      scopes: [repositoryScope(repository, "pull")],
      headers: { Accept: accept },
      expect: optional ? [200, 404] : [200],
    });
    const bytes = await readBody(res.body, MAX_MANIFEST_BYTES + 1);
    if (res.status === 404) return undefined;
    if (bytes.length > MAX_MANIFEST_BYTES) throw this.#error(operation, { status: 200, reason: "manifest larger than 4 MiB" });
    const digest = sha256Digest(bytes);
    if (isDigest(reference) && digest !== reference) throw this.#error(operation, { status: 200, reason: "manifest bytes do not match the requested digest" });
    const mediaType = (header(res, "content-type") ?? "").split(";")[0]!.trim();
    return { bytes, mediaType, digest };
  }

  /** Every tag of a repository (following pagination); [] when the repository does not exist. */
  async listTags(repository: string): Promise<string[]> {
    const tags: string[] = [];
    let url: URL | undefined = new URL(this.#repoPath(repository, "tags/list?n=1000"), this.#base);
    for (let page = 0; url !== undefined && page < 1000; page++) {
      const current: URL = url;
      const res = await this.#send({
        method: "GET",
        url: current,
        operation: `list tags of ${repository}`,
        scopes: [repositoryScope(repository, "pull")],
        expect: [200, 404],
      });
      const body = await readBody(res.body, 16 * 1024 * 1024);
      if (res.status === 404) return [];
      let json: unknown;
      try {
        json = JSON.parse(body.toString("utf8"));
      } catch {
        throw this.#error(`list tags of ${repository}`, { status: 200, reason: "response is not valid JSON" });
      }
      const list = (json as { tags?: unknown } | null)?.tags;
      if (Array.isArray(list)) for (const t of list) if (typeof t === "string") tags.push(t);
      const next = nextLink(header(res, "link"));
      url = next ? new URL(next, current) : undefined;
      if (url && url.origin !== this.#base.origin) throw this.#error(`list tags of ${repository}`, { reason: "pagination link to another host" });
    }
    return tags;
  }
}
