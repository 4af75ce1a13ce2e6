import { resolveRevision } from "../flake/revision-resolver.ts";

export interface PollOutcome {
  rev?: string;
  error?: string;
  /** When the next poll is due. */
  nextInMs: number;
}

type Resolve = typeof resolveRevision;

/**
 * Revision polling state, kept in memory on purpose: a poll that finds the same commit must
 * cost one small request and no API write. After a restart the first reconcile polls at once.
 */
export class RevisionPolls {
  readonly #last = new Map<string, { at: number; rev?: string; error?: string; flake: string }>();
  readonly #resolve: Resolve;

  constructor(resolve: Resolve = resolveRevision) {
    this.#resolve = resolve;
  }

  async poll(key: string, flake: string, intervalMs: number, now: Date, signal?: AbortSignal): Promise<PollOutcome> {
    const last = this.#last.get(key);
    const due = !last || last.flake !== flake || now.getTime() - last.at >= intervalMs;
    if (!due) return { ...(last.rev ? { rev: last.rev } : {}), ...(last.error ? { error: last.error } : {}), nextInMs: last.at + intervalMs - now.getTime() };
    let entry: { at: number; rev?: string; error?: string; flake: string };
    try {
      const resolved = await this.#resolve(flake, { signal, timeoutMs: 15_000 });
      entry = "rev" in resolved ? { at: now.getTime(), rev: resolved.rev, flake } : { at: now.getTime(), flake };
    } catch (error) {
      entry = { at: now.getTime(), rev: last?.flake === flake ? last.rev : undefined, error: `cannot resolve the revision of ${flake}: ${(error as Error).message}`, flake };
    }
    this.#last.set(key, entry);
    return { ...(entry.rev ? { rev: entry.rev } : {}), ...(entry.error ? { error: entry.error } : {}), nextInMs: intervalMs };
  }

  forget(key: string): void {
    this.#last.delete(key);
  }
}
