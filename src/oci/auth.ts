// Registry authentication: anonymous, HTTP Basic, and the bearer-token flow announced by
// `WWW-Authenticate: Bearer realm=…,service=…` (Docker token spec): a GET to the realm with Basic
// credentials (or anonymous), or an OAuth2 refresh-token POST for an `identitytoken`. Tokens are
// cached per scope set until shortly before they expire. Credentials and tokens never reach a
// log line or an error message.
import type { Logger } from "../log/logger.ts";
import type { Clock } from "../runtime/clock.ts";
import type { RegistryCredentials } from "./docker-config.ts";
import { secretsOf } from "./docker-config.ts";
import { readBody, type HttpTransport } from "./http-transport.ts";
import { parseRegistryErrors, RegistryError } from "./registry-error.ts";
import { findChallenge, parseWwwAuthenticate } from "./www-authenticate.ts";

/** `repository:<name>:<actions>` as the token spec writes scopes. */
export function repositoryScope(repository: string, actions: "pull" | "push" | "pull,push"): string {
  return `repository:${repository}:${actions}`;
}

export interface AuthenticatorOptions {
  /** Registry host (for messages and loopback checks). */
  host: string;
  credentials?: RegistryCredentials;
  transport: HttpTransport;
  clock: Clock;
  logger?: Logger;
  /** OAuth2 client id sent with refresh-token requests. */
  clientId?: string;
}

interface CachedToken {
  header: string;
  expiresAtMs: number;
}

interface BearerChallenge {
  realm: URL;
  service?: string;
}

const TOKEN_MARGIN_MS = 15_000;
const DEFAULT_TOKEN_LIFETIME_S = 60;

/** Scopes with the same `type:name` merged into one with the union of actions (pull first). */
function mergeScopes(scopes: readonly string[]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const scope of scopes) {
    const cut = scope.lastIndexOf(":");
    if (cut <= 0) continue;
    const resource = scope.slice(0, cut);
    const actions = byResource.get(resource) ?? new Set<string>();
    for (const action of scope.slice(cut + 1).split(",")) if (action) actions.add(action);
    byResource.set(resource, actions);
  }
  const order = (a: string) => (a === "pull" ? 0 : a === "push" ? 1 : 2);
  return [...byResource].map(([resource, actions]) => `${resource}:${[...actions].sort((a, b) => order(a) - order(b) || a.localeCompare(b)).join(",")}`);
}

function scopeKey(scopes: readonly string[]): string {
  return [...new Set(scopes)].sort().join(" ");
}

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, "utf8").toString("base64")}`;
}

function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || hostname === "::1" || /^127\./.test(hostname);
}

export class RegistryAuthenticator {
  readonly #host: string;
  readonly #credentials: RegistryCredentials | undefined;
  readonly #transport: HttpTransport;
  readonly #clock: Clock;
  readonly #logger: Logger | undefined;
  readonly #clientId: string;
  #scheme: "basic" | "bearer" | undefined;
  #bearer: BearerChallenge | undefined;
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  readonly #secrets: string[];

  constructor(options: AuthenticatorOptions) {
    this.#host = options.host;
    this.#credentials = options.credentials;
    this.#transport = options.transport;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#clientId = options.clientId ?? "nix-image-operator";
    this.#secrets = secretsOf(options.credentials);
  }

  /** Every secret this authenticator knows (credentials and tokens), for scrubbing messages. */
  get secrets(): readonly string[] {
    return this.#secrets;
  }

  get hasCredentials(): boolean {
    const c = this.#credentials;
    return c !== undefined && (c.password !== undefined || c.identityToken !== undefined || c.registryToken !== undefined);
  }

  /** The Authorization header to send proactively for a request needing `scopes`, if known. */
  async authorization(scopes: readonly string[]): Promise<string | undefined> {
    const creds = this.#credentials;
    if (creds?.registryToken !== undefined) return `Bearer ${creds.registryToken}`;
    if (this.#scheme === "basic" && creds?.username !== undefined && creds.password !== undefined) {
      return basicHeader(creds.username, creds.password);
    }
    if (this.#scheme === "bearer" && this.#bearer) {
      const cached = this.#tokens.get(scopeKey(scopes));
      if (cached && cached.expiresAtMs > this.#clock.now().getTime()) return cached.header;
      return (await this.#token(scopes)).header;
    }
    return undefined;
  }

  /**
   * Handles a 401: learns the challenge and prepares credentials. Returns true when a retry with
   * `authorization(scopes)` can succeed (a new header), false when it cannot (the same header was
   * already rejected, or the registry offers nothing we can answer).
   */
  async onUnauthorized(wwwAuthenticate: string | string[] | undefined, scopes: readonly string[], used: string | undefined): Promise<boolean> {
    const challenges = parseWwwAuthenticate(wwwAuthenticate);
    const bearer = findChallenge(challenges, "bearer");
    const basic = findChallenge(challenges, "basic");
    const creds = this.#credentials;
    if (creds?.registryToken !== undefined) return false; // a fixed token was rejected
    if (bearer && bearer.params.realm) {
      let realm: URL;
      try {
        realm = new URL(bearer.params.realm);
      } catch {
        throw new RegistryError({ operation: "authenticate", host: this.#host, status: 401, reason: "token realm is not a URL" });
      }
      this.#scheme = "bearer";
      this.#bearer = { realm, ...(bearer.params.service !== undefined ? { service: bearer.params.service } : {}) };
      // The registry's challenge may name the same repository with its own action order
      // (push,pull): merge per resource so one token covers both, in one canonical form.
      const wanted = mergeScopes([...scopes, ...(bearer.params.scope ?? "").split(" ").filter(Boolean)]);
      this.#tokens.delete(scopeKey(scopes));
      const token = await this.#token(wanted, scopes);
      return token.header !== used;
    }
    if (basic) {
      if (!creds || creds.username === undefined || creds.password === undefined) return false;
      this.#scheme = "basic";
      return basicHeader(creds.username, creds.password) !== used;
    }
    return false;
  }

  /** A token for `scopes`, shared by concurrent callers; cached under `cacheScopes`. */
  #token(scopes: readonly string[], cacheScopes: readonly string[] = scopes): Promise<CachedToken> {
    const key = scopeKey(cacheScopes);
    const running = this.#inflight.get(key);
    if (running) return running;
    const p = this.#fetchToken(scopes).then(
      (token) => {
        this.#tokens.set(key, token);
        this.#inflight.delete(key);
        return token;
      },
      (err: unknown) => {
        this.#inflight.delete(key);
        throw err;
      },
    );
    this.#inflight.set(key, p);
    return p;
  }

  async #fetchToken(scopes: readonly string[]): Promise<CachedToken> {
    const challenge = this.#bearer;
    if (!challenge) throw new Error("no bearer challenge");
    const creds = this.#credentials;
    const realm = new URL(challenge.realm.href);
    const op = `token request to ${realm.host}`;
    const haveSecret = creds !== undefined && (creds.password !== undefined || creds.identityToken !== undefined);
    if (realm.protocol !== "https:") {
      if (realm.protocol !== "http:") throw new RegistryError({ operation: op, host: this.#host, reason: "token realm must be http(s)" });
      if (haveSecret && !this.#transport.plainHttp && !isLoopback(realm.hostname)) {
        throw new RegistryError({
          operation: op,
          host: this.#host,
          reason: "refusing to send credentials to a plain-HTTP token realm (the registry is not configured for plain HTTP)",
        });
      }
    }
    const scopeList = [...new Set(scopes)];
    let res;
    try {
      if (creds?.identityToken !== undefined) {
        const form = new URLSearchParams();
        form.set("grant_type", "refresh_token");
        form.set("refresh_token", creds.identityToken);
        form.set("client_id", this.#clientId);
        if (challenge.service !== undefined) form.set("service", challenge.service);
        if (scopeList.length > 0) form.set("scope", scopeList.join(" "));
        res = await this.#transport.request({
          method: "POST",
          url: realm,
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: Buffer.from(form.toString(), "utf8"),
        });
      } else {
        if (challenge.service !== undefined) realm.searchParams.set("service", challenge.service);
        for (const s of scopeList) realm.searchParams.append("scope", s);
        const headers: Record<string, string> = {};
        if (creds?.username !== undefined && creds.password !== undefined) {
          headers.Authorization = basicHeader(creds.username, creds.password);
          realm.searchParams.set("account", creds.username);
        }
        res = await this.#transport.request({ method: "GET", url: realm, headers });
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new RegistryError({ operation: op, host: this.#host, reason: code ?? "connection failed", cause: err });
    }
    const body = await readBody(res.body, 1024 * 1024);
    if (res.status !== 200) {
      const errors = parseRegistryErrors(body, this.#secrets);
      const reason =
        res.status === 401 || res.status === 403
          ? this.hasCredentials
            ? "the token service rejected the credentials"
            : "the token service requires credentials and none are configured for this registry"
          : undefined;
      throw new RegistryError({ operation: op, host: this.#host, status: res.status, errors, ...(reason ? { reason } : {}) });
    }
    let json: unknown;
    try {
      json = JSON.parse(body.toString("utf8"));
    } catch {
      throw new RegistryError({ operation: op, host: this.#host, status: res.status, reason: "token response is not valid JSON" });
    }
    const o = (typeof json === "object" && json !== null ? json : {}) as Record<string, unknown>;
    const token = typeof o.token === "string" && o.token !== "" ? o.token : o.access_token;
    if (typeof token !== "string" || token === "") {
      throw new RegistryError({ operation: op, host: this.#host, status: res.status, reason: "token response has no token" });
    }
    this.#secrets.push(token);
    const lifetimeS = typeof o.expires_in === "number" && o.expires_in > 0 ? o.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    const issuedMs = typeof o.issued_at === "string" && !Number.isNaN(Date.parse(o.issued_at)) ? Date.parse(o.issued_at) : NaN;
    const nowMs = this.#clock.now().getTime();
    // Trust the server's issue time only when it is close to ours (clock skew).
    const baseMs = !Number.isNaN(issuedMs) && Math.abs(issuedMs - nowMs) < 60_000 ? issuedMs : nowMs;
    this.#logger?.debug({ realm: realm.host, scopes: scopeList, lifetimeS }, "registry token obtained");
    return { header: `Bearer ${token}`, expiresAtMs: baseMs + Math.max(lifetimeS * 1000 - TOKEN_MARGIN_MS, 1000) };
  }
}
