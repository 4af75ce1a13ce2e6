import { redactCredentials } from "../flake/flake-ref.ts";
import { resolveRevision } from "../flake/revision-resolver.ts";
import { nextPollTime } from "./revision-poller.ts";

export interface PollOutcome {
  rev?: string;
  /** Full ref name the commit was found under (refs/heads/main), to pin git refs exactly. */
  refName?: string;
  error?: string;
  /** When the next poll is due. */
  nextInMs: number;
}

type Resolve = typeof resolveRevision;
interface LastPoll {
  at: Date;
  flake: string;
  rev?: string;
  refName?: string;
  error?: string;
}

/**
 * Revision polling state, kept in memory on purpose: a poll that finds the same commit must
 * cost one small request and no API write. After a restart the first reconcile polls at once.
 * Timing (interval floor, a fixed per-key spread) comes from revision-poller.ts.
 */
export class RevisionPolls {
  readonly #last = new Map<string, LastPoll>();
  /** The last check request (niximage.io/check-revision value) honoured per key. */
  readonly #requested = new Map<string, string>();
  readonly #resolve: Resolve;

  constructor(resolve: Resolve = resolveRevision) {
    this.#resolve = resolve;
  }

  async poll(key: string, flake: string, intervalMs: number, now: Date, signal?: AbortSignal): Promise<PollOutcome> {
    const last = this.#last.get(key);
    const known = last?.flake === flake ? last : undefined;
    const due = nextPollTime(known?.at, intervalMs, now, { key })!;
    if (known && due.getTime() > now.getTime()) return outcome(known, due.getTime() - now.getTime());

    let entry: LastPoll;
    try {
      const resolved = await this.#resolve(flake, { signal, timeoutMs: 15_000 });
      entry = "rev" in resolved ? { at: now, flake, rev: resolved.rev, refName: resolved.refName } : { at: now, flake };
    } catch (error) {
      // Keep the last good answer; say why there is no newer one (never with URL credentials).
      entry = {
        at: now,
        flake,
        rev: known?.rev,
        refName: known?.refName,
        error: redactCredentials(`cannot resolve the revision of ${flake}: ${(error as Error).message}`),
      };
    }
    this.#last.set(key, entry);
    return outcome(entry, nextPollTime(now, intervalMs, now, { key })!.getTime() - now.getTime());
  }

  /**
   * A check was requested (a forge webhook, or by hand) with `token`: the next `poll` of `key`
   * resolves at once, unless this token was honoured already. True when it makes the poll due.
   */
  requestCheck(key: string, token: string): boolean {
    if (this.#requested.get(key) === token) return false;
    this.#requested.set(key, token);
    const last = this.#last.get(key);
    if (last) this.#last.set(key, { ...last, at: new Date(0) });
    return true;
  }

  forget(key: string): void {
    this.#last.delete(key);
    this.#requested.delete(key);
  }
}

function outcome(poll: LastPoll, nextInMs: number): PollOutcome {
  return {
    ...(poll.rev ? { rev: poll.rev } : {}),
    ...(poll.refName ? { refName: poll.refName } : {}),
    ...(poll.error ? { error: poll.error } : {}),
    nextInMs,
  };
}
