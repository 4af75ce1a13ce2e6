// Finds the commit a flake ref's branch/tag (or HEAD) points to, without Nix and without cloning:
// one `GET <repo>/info/refs?service=git-upload-pack` (git smart-HTTP ref discovery, protocol
// v0/v1, which every smart server speaks). So polling an unchanged revision costs one request, and
// reading stops as soon as the wanted ref has been seen (HEAD is the first line; branches come
// before the pull-request refs of big forges).
//
// github:/gitlab:/sourcehut: refs are resolved through their https clone URL (`cloneUrlOf`), so no
// forge API and no API rate limit is involved. Archives (tarball/https) have no revisions to poll:
// the controller learns their content from `nix flake metadata` during builds.
import { cloneUrlOf, FlakeRefError, parseFlakeRef, redactCredentials, type FlakeRef } from "./flake-ref.ts";
import { parseAddressRanges } from "./address-policy.ts";
import { AddressDeniedError, checkUrlHost, guardedFetch, guardedLookup } from "./guarded-fetch.ts";
import { openUploadPack, SshTransportError, type SshKeyCredentials } from "./ssh-upload-pack.ts";
import { GitProtocolError, GitServerMessageError, RefAdvertisementParser, type AdvertisementEvent, type AdvertisementFormat } from "./git-ref-advertisement.ts";

/** The commit a ref points to now. */
export interface ResolvedRevision {
  /** Commit hash (40 lower-case hex digits; 64 for SHA-256 repositories). */
  rev: string;
  /**
   * The full name of the ref that was resolved: `refs/heads/main`, `refs/tags/v1.0`; for HEAD the
   * branch HEAD points to when the server says so, else `HEAD`. For a flake ref pinned with `rev`,
   * the ref as written (or `HEAD`). Pin git refs with this name: Nix 2.8 fetches a short `ref` as
   * `refs/heads/<ref>` and a missing one as `master`, so `?ref=refs/tags/v1.0` or the real default
   * branch is what makes it fetch the same commit.
   */
  refName: string;
  /** True when the flake ref already named the commit and nothing was requested. */
  pinned?: boolean;
}

/** The flake ref has nothing that can be polled cheaply. */
interface UnpollableRevision {
  unpollable: true;
  reason: string;
}

export type RevisionResolution = ResolvedRevision | UnpollableRevision;

/** The subset of `fetch` the resolver uses (inject a counting or fake one in tests). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface ResolveRevisionOptions {
  signal?: AbortSignal;
  /** Whole request (all redirects and reading the body). Default 30 s. */
  timeoutMs?: number;
  fetchImpl?: FetchLike;
  /** Largest advertisement read (after content decoding). Default 16 MiB. */
  maxResponseBytes?: number;
  /** Redirects followed. Default 5. */
  maxRedirects?: number;
  userAgent?: string;
  /**
   * `Authorization` header value for private repositories (takes precedence over credentials in
   * the URL). Sent only to the origin of the first URL, never after a redirect to another origin.
   */
  authorization?: string;
  /**
   * CIDRs the poller may connect to although they are loopback, private, link-local or otherwise
   * special (`flakeRefPolicy.allowedAddressRanges`). Everything else in those ranges is refused,
   * on the first request and on every redirect, by literal address and by what a name resolves to.
   */
  allowedAddressRanges?: readonly string[];
  /** Key and known_hosts for git+ssh refs; without them those refs are unpollable. Held in memory for this call only. */
  ssh?: SshKeyCredentials;
}

const DEFAULT_RESOLVE_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_ADVERTISEMENT_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_REDIRECTS = 5;
/** libgit2's convention: servers that gate smart HTTP on a `git/` agent serve it to us as well. */
const DEFAULT_RESOLVER_USER_AGENT = "git/2.0 (nix-image-operator)";

export type RevisionResolveErrorKind =
  /** The flake ref string does not parse. */
  | "invalid-ref"
  /** The repository is not there (404), or the server hides it behind authentication (401/403). */
  | "repository-not-found"
  | "unauthorized"
  /** The repository exists but has no such branch/tag (or no HEAD). */
  | "ref-not-found"
  /** Another unexpected HTTP status. */
  | "http-status"
  | "redirect"
  | "timeout"
  /** Connection refused, DNS, TLS, reset. */
  | "network"
  /** The response is not a git ref advertisement, or is malformed. */
  | "protocol"
  | "too-large"
  /** An ssh host key is unknown to, or differs from, the given known_hosts. */
  | "host-key"
  /** The host is, resolves to, or redirects to an address the flake ref policy denies. */
  | "address-denied";

/**
 * Resolving failed. The message says what was asked of which URL and what went wrong; URLs in it
 * never carry credentials.
 */
export class RevisionResolveError extends Error {
  override readonly name = "RevisionResolveError";
  readonly kind: RevisionResolveErrorKind;
  /** The URL requested, without credentials. */
  readonly url: string | undefined;
  /** HTTP status, when the server answered with an unexpected one. */
  readonly status: number | undefined;
  /** The ref that was looked up (`main`, `refs/tags/v1`, `HEAD`). */
  readonly ref: string | undefined;
  /** Worth retrying later as it is (network trouble, timeouts, 5xx, 429). */
  readonly transient: boolean;

  constructor(
    kind: RevisionResolveErrorKind,
    message: string,
    details: { url?: string; status?: number; ref?: string; transient?: boolean; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.kind = kind;
    this.url = details.url;
    this.status = details.status;
    this.ref = details.ref;
    this.transient = details.transient ?? false;
  }
}

/** `https://user:pw@host/x` -> `https://host/x`; also hides anything `redactCredentials` would. */
export function displayUrl(url: URL | string): string {
  try {
    const u = new URL(url.toString());
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return redactCredentials(url.toString());
  }
}

// ---------------------------------------------------------------------------------------------
// Which ref is wanted, and finding it in the advertisement.

type Wanted =
  /** The default branch. */
  | { kind: "head" }
  /** `refs/...` exactly. */
  | { kind: "full"; name: string }
  /** `main`: refs/heads/main, else refs/tags/main. */
  | { kind: "short"; name: string };

function wantedOf(ref: string): Wanted {
  if (ref === "HEAD") return { kind: "head" };
  if (ref.startsWith("refs/")) return { kind: "full", name: ref };
  return { kind: "short", name: ref };
}

const SAMPLE_NAMES = 12;

/** Consumes advertisement events and decides when the wanted ref has been found. */
class RefMatcher {
  readonly wanted: Wanted;
  #symrefs: ReadonlyMap<string, string> = new Map();
  #found: { name: string; oid: string; peeled?: string } | undefined;
  /** A match that may still get a peeled line (annotated tag). */
  #awaitingPeel = false;
  /** A tag that matches a short name; used only when no branch of that name turns up. */
  #tag: { name: string; oid: string; peeled?: string } | undefined;
  #result: ResolvedRevision | undefined;
  branches: string[] = [];
  tags: string[] = [];
  branchCount = 0;
  tagCount = 0;
  sawHead = false;
  complete = false;

  constructor(wanted: Wanted) {
    this.wanted = wanted;
  }

  /** The answer, once it is certain (possibly before the advertisement ends). */
  get result(): ResolvedRevision | undefined {
    return this.#result;
  }

  accept(e: AdvertisementEvent): void {
    if (this.#result) return;
    if (e.type === "capabilities") {
      this.#symrefs = e.symrefs;
      return;
    }
    if (e.type === "peeled") {
      if (this.#found && this.#awaitingPeel && this.#found.name === e.name) {
        this.#found.peeled = e.oid;
        this.#settle();
      } else if (this.#tag && this.#tag.name === e.name) {
        this.#tag.peeled = e.oid;
      }
      return;
    }
    if (e.type === "end") {
      this.complete = true;
      if (this.#found) this.#settle();
      else if (this.#tag) {
        this.#found = this.#tag;
        this.#settle();
      }
      return;
    }
    // A ref line: whatever awaited a peel line did not get one.
    if (this.#found && this.#awaitingPeel) {
      this.#settle();
      return;
    }
    this.#count(e.name);
    const w = this.wanted;
    if (w.kind === "head") {
      if (e.name === "HEAD") {
        this.sawHead = true;
        this.#found = { name: this.#symrefs.get("HEAD") ?? "HEAD", oid: e.oid };
        this.#settle();
      }
    } else if (w.kind === "full") {
      if (e.name === w.name) {
        this.#found = { name: e.name, oid: e.oid };
        this.#awaitingPeel = e.name.startsWith("refs/tags/");
        if (!this.#awaitingPeel) this.#settle();
      }
    } else if (e.name === `refs/heads/${w.name}`) {
      // A branch wins over a tag of the same name, wherever the tag was.
      this.#found = { name: e.name, oid: e.oid };
      this.#settle();
    } else if (e.name === `refs/tags/${w.name}`) {
      this.#tag = { name: e.name, oid: e.oid };
    }
  }

  #settle(): void {
    const f = this.#found!;
    this.#awaitingPeel = false;
    this.#result = { rev: f.peeled ?? f.oid, refName: f.name };
  }

  #count(name: string): void {
    if (name.startsWith("refs/heads/")) {
      this.branchCount++;
      if (this.branches.length < SAMPLE_NAMES) this.branches.push(name.slice("refs/heads/".length));
    } else if (name.startsWith("refs/tags/")) {
      this.tagCount++;
      if (this.tags.length < SAMPLE_NAMES) this.tags.push(name.slice("refs/tags/".length));
    } else if (name === "HEAD") {
      this.sawHead = true;
    }
  }
}

function listNames(kind: string, names: string[], count: number): string {
  if (count === 0) return `no ${kind}`;
  const more = count - names.length;
  return `${kind} ${names.join(", ")}${more > 0 ? ` (and ${more} more)` : ""}`;
}

function notFoundMessage(m: RefMatcher, refText: string, url: string, format: AdvertisementFormat): string {
  if (m.wanted.kind === "head") {
    if (format === "dumb") {
      return `cannot resolve the default branch of ${url}: the server speaks only the dumb HTTP protocol, which does not say where HEAD points; name a branch in the flake ref (?ref=main)`;
    }
    if (m.branchCount === 0 && m.tagCount === 0) return `cannot resolve the default branch of ${url}: the repository is empty (no commits pushed yet)`;
    return `cannot resolve the default branch of ${url}: the repository has no HEAD; name a branch in the flake ref (it has ${listNames("branches", m.branches, m.branchCount)})`;
  }
  if (m.branchCount === 0 && m.tagCount === 0) {
    return `ref "${refText}" not found in ${url}: the repository is empty (no branches or tags)`;
  }
  return `ref "${refText}" not found in ${url}; the repository has ${listNames("branches", m.branches, m.branchCount)} and ${listNames("tags", m.tags, m.tagCount)}`;
}

// ---------------------------------------------------------------------------------------------
// HTTP.

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

function addressDenied(e: unknown): AddressDeniedError | undefined {
  for (let cur = e, depth = 0; cur instanceof Error && depth < 4; cur = cur.cause, depth++) {
    if (cur instanceof AddressDeniedError) return cur;
  }
  return undefined;
}

function isAbortError(e: unknown): boolean {
  return e instanceof Error && (e.name === "AbortError" || e.name === "TimeoutError");
}

function describeNetworkError(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur instanceof Error && depth < 4; depth++) {
    const code = (cur as { code?: unknown }).code;
    const msg = redactCredentials(cur.message);
    if (msg && !parts.includes(msg)) parts.push(typeof code === "string" && !msg.includes(code) ? `${msg} (${code})` : msg);
    cur = cur.cause;
  }
  return parts.join(": ") || "unknown network error";
}

function formatOf(contentType: string | null, url: string): AdvertisementFormat {
  const ct = (contentType ?? "").toLowerCase().split(";")[0]!.trim();
  if (ct === "application/x-git-upload-pack-advertisement") return "smart";
  if (ct === "text/plain" || ct === "application/octet-stream" || ct === "") return "dumb";
  if (ct.includes("html")) {
    throw new RevisionResolveError("protocol", `${url} answered with an HTML page, not a git ref advertisement: is this the URL of a git repository?`, { url });
  }
  throw new RevisionResolveError("protocol", `${url} answered with content type '${ct}', not a git ref advertisement: is this the URL of a git repository?`, {
    url,
  });
}

function statusError(status: number, url: string, repo: string, ref: string): RevisionResolveError {
  const details = { url, status, ref };
  if (status === 404 || status === 410) {
    return new RevisionResolveError("repository-not-found", `repository ${repo} not found (HTTP ${status} from ${url})`, details);
  }
  if (status === 401 || status === 403) {
    return new RevisionResolveError("unauthorized", `${repo} refused anonymous access (HTTP ${status}): the repository is private or does not exist`, details);
  }
  const transient = status === 408 || status === 429 || status >= 500;
  return new RevisionResolveError("http-status", `${url} answered HTTP ${status} to git ref discovery`, { ...details, transient });
}

interface Target {
  url: URL;
  authorization: string | undefined;
}

/** Splits credentials out of the URL (fetch refuses URLs that carry them) into a Basic header. */
function targetOf(base: string, authorization: string | undefined): Target {
  const trimmed = base.replace(/\/+$/, "");
  let url: URL;
  try {
    url = new URL(`${trimmed}/info/refs?service=git-upload-pack`);
  } catch (e) {
    throw new RevisionResolveError("invalid-ref", `'${displayUrl(trimmed)}' is not a valid URL`, { cause: e });
  }
  let auth = authorization;
  if (url.username !== "" || url.password !== "") {
    if (auth === undefined) {
      const user = decodeURIComponent(url.username);
      const pass = decodeURIComponent(url.password);
      auth = "Basic " + Buffer.from(`${user}:${pass}`).toString("base64");
    }
    url.username = "";
    url.password = "";
  }
  return { url, authorization: auth };
}

/**
 * Resolves the branch/tag a flake ref names (or its default branch) to a commit, with one HTTP
 * request (plus one per redirect). Returns `{ unpollable }` for refs that have no cheap way to
 * poll (archives, ssh, Mercurial, paths, registry refs). Throws RevisionResolveError; an abort
 * through `options.signal` rejects with the signal's reason.
 */
export async function resolveRevision(ref: FlakeRef | string, options: ResolveRevisionOptions = {}): Promise<RevisionResolution> {
  let flakeRef: FlakeRef;
  if (typeof ref === "string") {
    try {
      flakeRef = parseFlakeRef(ref);
    } catch (e) {
      if (e instanceof FlakeRefError) throw new RevisionResolveError("invalid-ref", e.message, { cause: e });
      throw e;
    }
  } else {
    flakeRef = ref;
  }

  if (isSshRef(flakeRef) && options.ssh !== undefined && flakeRef.type === "git") {
    const refText = flakeRef.ref ?? "HEAD";
    if (flakeRef.rev !== undefined)
      return { rev: flakeRef.rev, refName: refText === "HEAD" || refText.startsWith("refs/") ? refText : `refs/heads/${refText}`, pinned: true };
    return discoverOverSsh(flakeRef.url, refText, options, options.ssh);
  }
  const unpollable = unpollableReason(flakeRef);
  if (unpollable !== undefined) return { unpollable: true, reason: unpollable };
  const target = cloneUrlOf(flakeRef);
  if (target === undefined) {
    return { unpollable: true, reason: `a ${flakeRef.scheme}: flake ref has no git URL to poll` };
  }
  if (target.rev !== undefined) {
    return { rev: target.rev, refName: target.ref === "HEAD" || target.ref.startsWith("refs/") ? target.ref : `refs/heads/${target.ref}`, pinned: true };
  }
  return discover(target.url, target.ref, options);
}

function unpollableReason(ref: FlakeRef): string | undefined {
  switch (ref.type) {
    case "tarball":
    case "file":
      return "an archive URL has no branches or commits to poll; its content is checked by nix flake metadata during builds";
    case "mercurial":
      return "Mercurial refs are not polled; they are resolved during builds";
    case "path":
      return "a path ref has no remote to poll";
    case "indirect":
      return "a registry (indirect) ref has no remote to poll";
    case "git":
      if (ref.url.startsWith("https:") || ref.url.startsWith("http:")) return undefined;
      if (isSshRef(ref)) {
        return "a git+ssh ref is polled only with an ssh key: name a Secret with ssh-privatekey and known_hosts in spec.sshKeySecretRef (or spec.sourceCredentialsSecretRef)";
      }
      return `a ${ref.scheme}: ref is not polled; only git over http(s) is`;
    default:
      return undefined;
  }
}

function isSshRef(ref: FlakeRef): boolean {
  return ref.type === "git" && (ref.url.startsWith("ssh:") || ref.scheme === "git+ssh");
}

/** Like `discover`, over ssh: git-upload-pack's advertisement is read until the ref is certain, then the channel is closed. */
async function discoverOverSsh(repoUrl: string, refText: string, options: ResolveRevisionOptions, ssh: SshKeyCredentials): Promise<ResolvedRevision> {
  const ranges = parseAddressRanges(options.allowedAddressRanges ?? []);
  const timeoutMs = options.timeoutMs ?? DEFAULT_RESOLVE_TIMEOUT_MS;
  const maxBytes = options.maxResponseBytes ?? DEFAULT_MAX_ADVERTISEMENT_BYTES;
  options.signal?.throwIfAborted();
  let url: URL;
  try {
    url = new URL(repoUrl);
  } catch (e) {
    throw new RevisionResolveError("invalid-ref", `'${displayUrl(repoUrl)}' is not a valid URL`, { cause: e });
  }
  const shown = displayUrl(url);
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = AbortSignal.any([timeout, ...(options.signal ? [options.signal] : [])]);
  const fail = (e: unknown): never => {
    if (options.signal?.aborted) throw options.signal.reason;
    if (e instanceof RevisionResolveError) throw e;
    const denied = addressDenied(e);
    if (denied) throw new RevisionResolveError("address-denied", `refusing to poll ${shown}: ${denied.message}`, { url: shown, ref: refText, cause: e });
    if (e instanceof SshTransportError) {
      const kind =
        e.kind === "auth"
          ? "unauthorized"
          : e.kind === "host-key"
            ? "host-key"
            : e.kind === "timeout"
              ? "timeout"
              : e.kind === "network"
                ? "network"
                : "protocol";
      throw new RevisionResolveError(kind, e.message, { url: shown, ref: refText, transient: e.transient, cause: e });
    }
    if (timeout.aborted || isAbortError(e)) {
      throw new RevisionResolveError("timeout", `git ref discovery at ${shown} timed out after ${timeoutMs} ms`, {
        url: shown,
        ref: refText,
        transient: true,
        cause: e,
      });
    }
    if (e instanceof GitServerMessageError) throw new RevisionResolveError("protocol", `${shown}: ${e.message}`, { url: shown, ref: refText, cause: e });
    if (e instanceof GitProtocolError) {
      throw new RevisionResolveError("protocol", `${shown} did not answer with a valid git ref advertisement: ${e.message}`, {
        url: shown,
        ref: refText,
        cause: e,
      });
    }
    throw new RevisionResolveError("network", `cannot reach ${shown}: ${describeNetworkError(e)}`, { url: shown, ref: refText, transient: true, cause: e });
  };
  let session: Awaited<ReturnType<typeof openUploadPack>> | undefined;
  try {
    session = await openUploadPack(url, { credentials: ssh, timeoutMs, signal, lookup: guardedLookup(ranges), checkHost: (u) => checkUrlHost(u, ranges) });
    const opened = session;
    try {
      return await readRefs(opened.body, "smart", refText, { shown, shownRepo: shown, maxBytes }, fail);
    } catch (e) {
      // upload-pack says why it sent nothing (no such repository, access denied) on stderr.
      const said = opened.stderr();
      if (said !== "" && (e instanceof GitProtocolError || (e instanceof RevisionResolveError && e.kind === "protocol"))) {
        throw new RevisionResolveError(
          /not (appear to be )?a git repository|not found|does not exist/i.test(said) ? "repository-not-found" : "protocol",
          `${shown}: ${said}`,
          {
            url: shown,
            ref: refText,
            cause: e,
          },
        );
      }
      throw e;
    }
  } catch (e) {
    return fail(e);
  } finally {
    session?.close();
  }
}

async function discover(cloneUrl: string, refText: string, options: ResolveRevisionOptions): Promise<ResolvedRevision> {
  const ranges = parseAddressRanges(options.allowedAddressRanges ?? []);
  const fetchImpl: FetchLike = options.fetchImpl ?? guardedFetch(ranges);
  const timeoutMs = options.timeoutMs ?? DEFAULT_RESOLVE_TIMEOUT_MS;
  const maxBytes = options.maxResponseBytes ?? DEFAULT_MAX_ADVERTISEMENT_BYTES;
  const maxRedirects = options.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  const first = targetOf(cloneUrl, options.authorization);
  const firstOrigin = first.url.origin;
  const shownRepo = displayUrl(cloneUrl.replace(/\/+$/, ""));

  const timeout = AbortSignal.timeout(timeoutMs);
  const stop = new AbortController();
  const signal = AbortSignal.any([timeout, stop.signal, ...(options.signal ? [options.signal] : [])]);
  options.signal?.throwIfAborted();

  let url = first.url;
  let shown = displayUrl(url);
  /** The URL that redirected to `url`, for messages. */
  let via: string | undefined;
  const fail = (e: unknown): never => {
    if (options.signal?.aborted) throw options.signal.reason;
    if (e instanceof RevisionResolveError) throw e;
    const denied = addressDenied(e);
    if (denied)
      throw new RevisionResolveError("address-denied", `refusing to poll ${shown}${via === undefined ? "" : ` (redirected from ${via})`}: ${denied.message}`, {
        url: shown,
        ref: refText,
        cause: e,
      });
    if (timeout.aborted || isAbortError(e)) {
      throw new RevisionResolveError("timeout", `git ref discovery at ${shown} timed out after ${timeoutMs} ms`, {
        url: shown,
        ref: refText,
        transient: true,
        cause: e,
      });
    }
    if (e instanceof GitServerMessageError) {
      throw new RevisionResolveError("protocol", `${shown}: ${e.message}`, { url: shown, ref: refText, cause: e });
    }
    if (e instanceof GitProtocolError) {
      throw new RevisionResolveError("protocol", `${shown} did not answer with a valid git ref advertisement: ${e.message}`, {
        url: shown,
        ref: refText,
        cause: e,
      });
    }
    throw new RevisionResolveError("network", `cannot reach ${shown}: ${describeNetworkError(e)}`, { url: shown, ref: refText, transient: true, cause: e });
  };

  try {
    let response: Response | undefined;
    for (let redirects = 0; ; redirects++) {
      const headers: Record<string, string> = {
        "User-Agent": options.userAgent ?? DEFAULT_RESOLVER_USER_AGENT,
        Accept: "*/*",
        "Cache-Control": "no-cache",
        Pragma: "no-cache",
      };
      if (first.authorization !== undefined && url.origin === firstOrigin) headers.Authorization = first.authorization;
      let res: Response;
      try {
        checkUrlHost(url, ranges);
        res = await fetchImpl(url.toString(), { method: "GET", headers, redirect: "manual", signal });
      } catch (e) {
        return fail(e);
      }
      if (!REDIRECT_STATUSES.has(res.status)) {
        response = res;
        break;
      }
      await res.body?.cancel().catch(() => {});
      const location = res.headers.get("location");
      if (location === null) {
        throw new RevisionResolveError("redirect", `${shown} answered HTTP ${res.status} without a Location header`, {
          url: shown,
          status: res.status,
          ref: refText,
        });
      }
      if (redirects >= maxRedirects) {
        throw new RevisionResolveError("redirect", `${shownRepo}: more than ${maxRedirects} redirects (last to ${displayUrl(new URL(location, url))})`, {
          url: shown,
          status: res.status,
          ref: refText,
        });
      }
      const next = new URL(location, url);
      if (next.protocol !== "https:" && next.protocol !== "http:") {
        throw new RevisionResolveError("redirect", `${shown} redirected to a ${next.protocol} URL`, { url: shown, status: res.status, ref: refText });
      }
      if (url.protocol === "https:" && next.protocol === "http:") {
        throw new RevisionResolveError("redirect", `${shown} redirected from https to plain http (${displayUrl(next)}); refusing the downgrade`, {
          url: shown,
          status: res.status,
          ref: refText,
        });
      }
      next.username = "";
      next.password = "";
      via = shown;
      url = next;
      shown = displayUrl(url);
    }

    if (response.status !== 200) {
      await response.body?.cancel().catch(() => {});
      throw statusError(response.status, shown, shownRepo, refText);
    }
    const format = formatOf(response.headers.get("content-type"), shown);
    const body = response.body;
    if (body === null) throw new RevisionResolveError("protocol", `${shown} answered with an empty body`, { url: shown, ref: refText });
    return await readRefs(body, format, refText, { shown, shownRepo, maxBytes }, fail);
  } catch (e) {
    return fail(e);
  } finally {
    stop.abort();
  }
}

/** Reads a ref advertisement until the wanted ref is certain (then stops reading), or it ends. */
async function readRefs(
  body: ReadableStream<Uint8Array>,
  format: AdvertisementFormat,
  refText: string,
  { shown, shownRepo, maxBytes }: { shown: string; shownRepo: string; maxBytes: number },
  fail: (e: unknown) => never,
): Promise<ResolvedRevision> {
  const parser = new RefAdvertisementParser(format);
  const matcher = new RefMatcher(wantedOf(refText));
  const reader = body.getReader();
  let total = 0;
  try {
    while (matcher.result === undefined && !matcher.complete) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (e) {
        return fail(e);
      }
      if (chunk.done) {
        for (const ev of parser.end()) matcher.accept(ev);
        break;
      }
      total += chunk.value.length;
      for (const ev of parser.push(chunk.value)) {
        matcher.accept(ev);
        if (matcher.result !== undefined) break;
      }
      if (total > maxBytes && matcher.result === undefined && !matcher.complete) {
        throw new RevisionResolveError(
          "too-large",
          `the ref advertisement of ${shownRepo} is larger than ${maxBytes} bytes before ref "${refText}" turned up; the repository advertises too many refs for polling`,
          { url: shown, ref: refText },
        );
      }
    }
  } finally {
    // Stop reading: the rest of the advertisement is not needed (closes the connection when unread).
    if (matcher.result !== undefined || !matcher.complete) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  const result = matcher.result;
  if (result === undefined) {
    throw new RevisionResolveError("ref-not-found", notFoundMessage(matcher, refText, shownRepo, format), { url: shown, ref: refText });
  }
  return result;
}
