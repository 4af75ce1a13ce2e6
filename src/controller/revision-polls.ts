import { cloneUrlOf, parseFlakeRef, redactCredentials } from "../flake/flake-ref.ts";
import { resolveRevision, RevisionResolveError } from "../flake/revision-resolver.ts";
import type { Logger } from "../log/logger.ts";
import { systemClock, type Clock } from "../runtime/clock.ts";
import { nextPollTime } from "./revision-poller.ts";
import { secretWords, sourceAuthorization, type SourceAuthorization, type SourceCredentialData } from "./source-authorization.ts";
import { SourceSecretError, type SecretRef, type SshCredentialData } from "./source-secret.ts";
import type { SshKeyCredentials } from "../flake/ssh-upload-pack.ts";

/** The last known answer for a NixImage's flake ref. */
export interface PollResult {
  rev?: string;
  /** Full ref name the commit was found under (refs/heads/main), to pin git refs exactly. */
  refName?: string;
  /** Why there is no newer answer (the last good rev, if any, is kept). */
  error?: string;
  /** Why this kind of flake ref is not polled at all (git+ssh, archives, ...). */
  unpollable?: string;
  /** The error will not pass by itself (a refused or missing credential): someone must act. */
  needsAction?: boolean;
}

type Resolve = typeof resolveRevision;

export interface RevisionPollsOptions {
  resolve?: Resolve;
  clock?: Clock;
  random?: () => number;
  logger?: Logger;
  /** Polls in flight at once. Default 8. */
  concurrency?: number;
  /** Polls in flight at once against one host, so a few slow hosts cannot take every slot. Default 2. */
  perHostLimit?: number;
  /** The first poll of a key (after start or a failover) is put at a random time in this window (capped at its interval). Default 60 s. */
  startSpreadMs?: number;
  /** One poll's time limit. Default 15 s. */
  timeoutMs?: number;
  /**
   * Reads a private source's credential Secret (spec.sourceCredentialsSecretRef), called at poll
   * time for each poll that has one; the answer is used for that one request and dropped.
   */
  readCredentials?: (secret: SecretRef, signal: AbortSignal, want: "http" | "ssh") => Promise<SourceCredentialData & SshCredentialData>;
}

interface Entry {
  flake: string;
  /** The Secret whose netrc / access-tokens authorize the poll (its name only; its data is read per poll). */
  secret: SecretRef | undefined;
  intervalMs: number;
  host: string;
  dueMs: number;
  running: boolean;
  lastMs?: number;
  result?: PollResult;
  /** Reconciles waiting for the first answer (`firstAnswer`). */
  waiters?: (() => void)[];
}

/**
 * Revision polling off the reconcile path (one small request per poll, no API write when the
 * commit is the same). The reconcile only registers the key's flake and interval (`observe`) and
 * reads the last known answer; a background loop, running only on the leader, polls what is due
 * with a global and a per-host concurrency limit, and calls `onChange(key)` when an answer
 * differs from the last one, so the key is reconciled again. The first poll of each key is spread
 * over a window, so a restart or a failover does not poll every NixImage at once; later polls
 * follow the interval plus a fixed per-key spread (revision-poller.ts). State is in memory on
 * purpose: after a restart the answers are found again within the spread window.
 */
export class RevisionPolls {
  readonly #entries = new Map<string, Entry>();
  readonly #resolve: Resolve;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #log: Logger | undefined;
  readonly #concurrency: number;
  readonly #perHostLimit: number;
  readonly #startSpreadMs: number;
  readonly #timeoutMs: number;
  readonly #readCredentials: RevisionPollsOptions["readCredentials"];
  readonly #runningByHost = new Map<string, number>();
  /** The last check request (niximage.io/check-revision value) honoured per key. */
  readonly #requested = new Map<string, string>();
  /** Keys with a check request before their first `observe`: polled at once instead of spread. */
  readonly #checkFirst = new Set<string>();
  #running = 0;
  #wake: (() => void) | undefined;

  constructor(options: RevisionPollsOptions = {}) {
    this.#resolve = options.resolve ?? resolveRevision;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#log = options.logger;
    this.#concurrency = options.concurrency ?? 8;
    this.#perHostLimit = Math.min(options.perHostLimit ?? 2, this.#concurrency);
    this.#startSpreadMs = options.startSpreadMs ?? 60_000;
    this.#timeoutMs = options.timeoutMs ?? 15_000;
    this.#readCredentials = options.readCredentials;
  }

  /**
   * Called by the reconcile of a NixImage that polls: registers (or updates) its flake and
   * interval and returns the last known answer, undefined before the first poll. Never waits.
   * `secret` names the Secret a private source is polled with.
   */
  observe(key: string, flake: string, intervalMs: number, secret?: SecretRef): PollResult | undefined {
    const nowMs = this.#clock.now().getTime();
    const entry = this.#entries.get(key);
    if (entry && entry.flake === flake && sameSecret(entry.secret, secret)) {
      if (entry.intervalMs !== intervalMs && entry.lastMs !== undefined) {
        entry.intervalMs = intervalMs;
        entry.dueMs = this.#nextDue(key, entry.lastMs, intervalMs, nowMs);
        // The loop may sleep until the old, later due time: let it plan again.
        this.#wake?.();
      }
      // The loop sleeps until the earliest due time; a clock that jumped (tests) is noticed here.
      if (entry.dueMs <= nowMs && !entry.running) this.#wake?.();
      return entry.result;
    }
    const spread = this.#checkFirst.delete(key) ? 0 : Math.floor(this.#random() * Math.min(this.#startSpreadMs, intervalMs));
    this.#entries.set(key, { flake, secret, intervalMs, host: hostOf(flake), dueMs: nowMs + spread, running: false });
    this.#wake?.();
    return undefined;
  }

  /**
   * For a NixImage that never built: polls it first and waits for that answer (at most one poll's
   * time limit plus a little), so its first build is pinned to a known commit. Existing NixImages
   * never wait: they use `observe`.
   */
  async firstAnswer(key: string, flake: string, intervalMs: number, signal?: AbortSignal, secret?: SecretRef): Promise<PollResult | undefined> {
    const known = this.observe(key, flake, intervalMs, secret);
    if (known) return known;
    const entry = this.#entries.get(key)!;
    entry.dueMs = Math.min(entry.dueMs, this.#clock.now().getTime());
    this.#wake?.();
    await new Promise<void>((resolve) => {
      const done = () => {
        timer.cancel();
        signal?.removeEventListener("abort", done);
        entry.waiters = entry.waiters?.filter((w) => w !== done);
        resolve();
      };
      const timer = this.#clock.setTimeout(done, this.#timeoutMs + 5_000);
      signal?.addEventListener("abort", done, { once: true });
      (entry.waiters ??= []).push(done);
    });
    return entry.result;
  }

  /**
   * A check was requested (a forge webhook sets niximage.io/check-revision, or a human) with
   * `token`: the key is polled as soon as a slot is free, unless this token was honoured already.
   * True when it made the poll due.
   */
  requestCheck(key: string, token: string): boolean {
    if (this.#requested.get(key) === token) return false;
    this.#requested.set(key, token);
    const entry = this.#entries.get(key);
    if (entry) entry.dueMs = Math.min(entry.dueMs, this.#clock.now().getTime());
    else this.#checkFirst.add(key);
    this.#wake?.();
    return true;
  }

  /** The NixImage is gone, suspended or polls no more. */
  forget(key: string): void {
    this.#entries.delete(key);
    this.#requested.delete(key);
    this.#checkFirst.delete(key);
  }

  /**
   * Polls the matching keys as soon as a slot is free (e.g. a forge webhook said a branch moved).
   * Returns how many keys matched.
   */
  expedite(matches: (flake: string, key: string) => boolean): number {
    const nowMs = this.#clock.now().getTime();
    let count = 0;
    for (const [key, entry] of this.#entries) {
      if (!matches(entry.flake, key)) continue;
      entry.dueMs = Math.min(entry.dueMs, nowMs);
      count++;
    }
    if (count > 0) this.#wake?.();
    return count;
  }

  /** Keys known and polls in flight (metrics, tests). */
  stats(): { keys: number; running: number } {
    return { keys: this.#entries.size, running: this.#running };
  }

  /** The background loop: polls what is due until `signal` aborts (leadership ends, or stop). */
  async run(signal: AbortSignal, onChange: (key: string) => void): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    while (!signal.aborted) {
      const nowMs = this.#clock.now().getTime();
      let nextDueMs = Number.POSITIVE_INFINITY;
      const due = [...this.#entries].filter(([, e]) => !e.running).sort((a, b) => a[1].dueMs - b[1].dueMs);
      for (const [key, entry] of due) {
        if (entry.dueMs > nowMs) {
          nextDueMs = Math.min(nextDueMs, entry.dueMs);
          break;
        }
        if (this.#running >= this.#concurrency) break;
        if ((this.#runningByHost.get(entry.host) ?? 0) >= this.#perHostLimit) continue;
        const poll = this.#poll(key, entry, signal, onChange).finally(() => inFlight.delete(poll));
        inFlight.add(poll);
      }
      await this.#sleep(nextDueMs === Number.POSITIVE_INFINITY ? 60_000 : nextDueMs - nowMs, signal);
    }
    await Promise.all(inFlight);
  }

  async #poll(key: string, entry: Entry, signal: AbortSignal, onChange: (key: string) => void): Promise<void> {
    const { flake, host, secret } = entry;
    entry.running = true;
    this.#running++;
    this.#runningByHost.set(host, (this.#runningByHost.get(host) ?? 0) + 1);
    let result: PollResult;
    // The Secret's words, only to scrub them from a message; dropped with this call.
    let scrub: string[] = [];
    let authorization: SourceAuthorization | undefined;
    let ssh: SshKeyCredentials | undefined;
    try {
      const target = httpTargetOf(flake);
      const overSsh = isSshFlake(flake);
      if (secret && (target || overSsh) && !this.#readCredentials)
        throw new SourceSecretError("this controller was started without access to source credentials", false);
      if (secret && target) {
        const data = await this.#readCredentials!(secret, signal, "http");
        scrub = secretWords(data);
        authorization = sourceAuthorization(data, target.url, target.preferTokens);
      } else if (secret && overSsh) {
        const data = await this.#readCredentials!(secret, signal, "ssh");
        if (data.sshPrivateKey === undefined || data.knownHosts === undefined) {
          throw new SourceSecretError(
            `Secret ${secret.namespace}/${secret.name} has no ${data.sshPrivateKey === undefined ? "ssh-privatekey" : "known_hosts"}: a git+ssh ref is polled with both (host keys are always checked)`,
            false,
          );
        }
        scrub = data.sshPrivateKey.split("\n").filter((l) => l.length >= 16 && !l.startsWith("-----"));
        ssh = { privateKey: data.sshPrivateKey, knownHosts: data.knownHosts };
      }
      const resolved = await this.#resolve(flake, {
        signal,
        timeoutMs: this.#timeoutMs,
        ...(authorization ? { authorization: authorization.header } : {}),
        ...(ssh ? { ssh } : {}),
      });
      result = "rev" in resolved ? { rev: resolved.rev, refName: resolved.refName } : { unpollable: resolved.reason };
    } catch (error) {
      // Keep the last good answer; say why there is no newer one (never with URL credentials or a secret).
      const failure = describeFailure(flake, error, secret, authorization);
      let message = redactCredentials(failure.message);
      for (const word of scrub) message = message.split(word).join("***");
      result = {
        ...(entry.result?.rev ? { rev: entry.result.rev } : {}),
        ...(entry.result?.refName ? { refName: entry.result.refName } : {}),
        error: message,
        ...(failure.needsAction ? { needsAction: true } : {}),
      };
    } finally {
      entry.running = false;
      this.#running--;
      const left = (this.#runningByHost.get(host) ?? 1) - 1;
      if (left > 0) this.#runningByHost.set(host, left);
      else this.#runningByHost.delete(host);
      this.#wake?.();
    }
    // Forgotten, or the flake changed while the poll ran: this answer is for nobody.
    if (signal.aborted || this.#entries.get(key) !== entry || entry.flake !== flake) {
      for (const wake of entry.waiters ?? []) wake();
      return;
    }
    const nowMs = this.#clock.now().getTime();
    const changed = !sameResult(entry.result, result);
    entry.result = result;
    entry.lastMs = nowMs;
    entry.dueMs = this.#nextDue(key, nowMs, entry.intervalMs, nowMs);
    for (const wake of entry.waiters ?? []) wake();
    if (changed) {
      this.#log?.debug({ key, rev: result.rev, error: result.error !== undefined }, "revision poll: new answer");
      onChange(key);
    }
  }

  #nextDue(key: string, lastMs: number, intervalMs: number, nowMs: number): number {
    return nextPollTime(new Date(lastMs), intervalMs, new Date(nowMs), { key })!.getTime();
  }

  /** Sleeps until `ms` passed, something changed (a poll finished, a key was added or expedited) or `signal` aborts. */
  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        timer.cancel();
        signal.removeEventListener("abort", done);
        this.#wake = undefined;
        resolve();
      };
      const timer = this.#clock.setTimeout(done, Math.max(0, ms));
      signal.addEventListener("abort", done, { once: true });
      this.#wake = done;
    });
  }
}

function sameSecret(a: SecretRef | undefined, b: SecretRef | undefined): boolean {
  return a?.namespace === b?.namespace && a?.name === b?.name;
}

function isSshFlake(flake: string): boolean {
  try {
    const ref = parseFlakeRef(flake);
    return ref.type === "git" && (ref.url.startsWith("ssh:") || ref.scheme === "git+ssh") && ref.rev === undefined;
  } catch {
    return false;
  }
}

/** The https URL a poll requests (git+https, github:, gitlab:, sourcehut:), and whether forge tokens come first; undefined for refs polled without HTTP. */
function httpTargetOf(flake: string): { url: URL; preferTokens: boolean } | undefined {
  try {
    const ref = parseFlakeRef(flake);
    const target = cloneUrlOf(ref);
    if (!target || target.rev !== undefined) return undefined;
    const url = new URL(target.url);
    if (url.protocol !== "https:" && url.protocol !== "http:") return undefined;
    return { url, preferTokens: ref.type === "github" || ref.type === "gitlab" || ref.type === "sourcehut" };
  } catch {
    return undefined;
  }
}

/** What a failed poll says, and whether it needs someone to act (a refused or missing credential). */
function describeFailure(
  flake: string,
  error: unknown,
  secret: SecretRef | undefined,
  authorization: SourceAuthorization | undefined,
): { message: string; needsAction: boolean } {
  const what = `cannot resolve the revision of ${flake}`;
  if (error instanceof SourceSecretError) return { message: `${what}: ${error.message}`, needsAction: !error.transient };
  if (error instanceof RevisionResolveError && isSshFlake(flake) && (error.kind === "unauthorized" || error.kind === "host-key")) {
    return { message: `${what}: polling failed with the key of Secret ${secret?.namespace}/${secret?.name}: ${error.message}`, needsAction: true };
  }
  if (!(error instanceof RevisionResolveError) || error.kind !== "unauthorized") return { message: `${what}: ${(error as Error).message}`, needsAction: false };
  const status = `HTTP ${error.status ?? 401}`;
  const shown = secret ? `Secret ${secret.namespace}/${secret.name}` : "";
  const host = httpTargetOf(flake)?.url.host ?? "its host";
  if (authorization) {
    return {
      message: `${what}: polling failed: the server refused the credential from ${shown} (${authorization.from}) with ${status}: correct that entry (login and password, or a token allowed to read the repository); the next poll reads the Secret again`,
      needsAction: true,
    };
  }
  if (secret) {
    return {
      message: `${what}: polling failed: the server refused anonymous access (${status}) and ${shown} has no netrc machine or access-tokens entry for ${host}: add one`,
      needsAction: true,
    };
  }
  return {
    message: `${what}: polling failed: the server refused anonymous access (${status}): for a private repository, name a Secret with a netrc or access-tokens entry for ${host} in spec.sourceCredentialsSecretRef`,
    needsAction: true,
  };
}

function sameResult(a: PollResult | undefined, b: PollResult): boolean {
  return a !== undefined && a.rev === b.rev && a.refName === b.refName && a.error === b.error;
}

/** The host a flake ref is fetched from (for the per-host limit); refs without one share a bucket. */
function hostOf(flake: string): string {
  try {
    const target = cloneUrlOf(parseFlakeRef(flake));
    return target ? new URL(target.url).host : "-";
  } catch {
    return "-";
  }
}
