import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "../log/logger.ts";
import type { Clock } from "./clock.ts";
import { systemClock } from "./clock.ts";
import { kubeListAll } from "./kube-request.ts";
import { ExponentialBackoffRateLimiter, type ExponentialBackoffOptions } from "./rate-limiter.ts";

/** The part of client-node's list-watch (`ListWatch`, `makeInformer`) this wrapper uses. */
export interface ListWatchSource<T extends KubernetesObject> {
  on(verb: "add" | "update" | "delete", cb: (obj: T) => void): void;
  on(verb: "error" | "connect", cb: (err?: unknown) => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface InformerEventHandlers<T> {
  add?(obj: T): void;
  /** `oldObj` is the cached object before the change (the same object on a resync). */
  update?(oldObj: T, newObj: T): void;
  /** The last state seen: the watch event's object, or the cached one when a relist found it gone. */
  delete?(obj: T): void;
}

/** Values an object is indexed under; the same object must always give the same values. */
export type IndexFunc<T> = (obj: T) => readonly string[];

export interface InformerOptions<T extends KubernetesObject> {
  /** For logs: e.g. "niximages". */
  name: string;
  source: ListWatchSource<T>;
  logger: Logger;
  clock?: Clock;
  /** Delay before restarting after an error. Default 1 s doubling to 30 s. */
  restartBackoff?: ExponentialBackoffOptions;
  /** After this long without an error the restart backoff starts over. Default 60 s. */
  backoffResetMs?: number;
  /** Re-deliver every cached object as an update this often (0/undefined: never). */
  resyncPeriodMs?: number;
}

/** `namespace/name`, or `name` for cluster-scoped objects: the work-queue key. */
export function objectKey(obj: KubernetesObject): string {
  const name = obj.metadata?.name ?? "";
  const namespace = obj.metadata?.namespace;
  return namespace ? `${namespace}/${name}` : name;
}

/** Splits a key made by `objectKey`. */
export function parseKey(key: string): { namespace: string | undefined; name: string } {
  const slash = key.indexOf("/");
  return slash < 0 ? { namespace: undefined, name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** Index by owner: the keys (`namespace/name`) of the owners of the given kind. */
export function ownerIndex<T extends KubernetesObject>(ownerKind: string, ownerApiGroup?: string): IndexFunc<T> {
  return (obj) =>
    (obj.metadata?.ownerReferences ?? [])
      .filter((ref) => ref.kind === ownerKind && (ownerApiGroup === undefined || apiGroup(ref.apiVersion) === ownerApiGroup))
      .map((ref) => keyOf(obj.metadata?.namespace, ref.name));
}

/** Index by an annotation whose value names an object in the same namespace: gives that object's key. */
export function annotationIndex<T extends KubernetesObject>(annotation: string): IndexFunc<T> {
  return (obj) => {
    const value = obj.metadata?.annotations?.[annotation];
    return value ? [keyOf(obj.metadata?.namespace, value)] : [];
  };
}

function apiGroup(apiVersion: string): string {
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? "" : apiVersion.slice(0, slash);
}

function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

/**
 * A list-watch cache that does not give up. client-node's `ListWatch` re-lists on 410 Gone and
 * re-watches on timeouts, but stops for good on any other error; this wrapper restarts it with
 * backoff on every error (from the resource version it had, so a re-list happens only when needed).
 *
 * It keeps its own copy of the objects so that updates come with the old object, secondary indexes
 * stay consistent, and handlers added late are replayed the objects already known.
 * Objects are the API server's JSON as-is (timestamps are strings, whatever the model types say);
 * treat them as read-only.
 */
export class Informer<T extends KubernetesObject> {
  readonly name: string;
  readonly #source: ListWatchSource<T>;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #backoff: ExponentialBackoffRateLimiter<string>;
  readonly #backoffResetMs: number;
  readonly #resyncPeriodMs: number;

  readonly #objects = new Map<string, Map<string, T>>();
  readonly #handlers: InformerEventHandlers<T>[] = [];
  readonly #indexes = new Map<string, { fn: IndexFunc<T>; values: Map<string, Set<string>> }>();

  #started = false;
  #stopped = false;
  #synced = false;
  #syncWaiters: (() => void)[] = [];
  #attempt = 0;
  #attemptFailed = false;
  #healthySinceMs: number | undefined;
  #restartTimer: { cancel(): void } | undefined;
  #resyncTimer: { cancel(): void } | undefined;
  #restarts = 0;
  #lastError: string | undefined;

  constructor(options: InformerOptions<T>) {
    this.name = options.name;
    this.#source = options.source;
    this.#log = options.logger.child({ informer: options.name });
    this.#clock = options.clock ?? systemClock;
    this.#backoff = new ExponentialBackoffRateLimiter({ baseMs: 1_000, maxMs: 30_000, ...options.restartBackoff });
    this.#backoffResetMs = options.backoffResetMs ?? 60_000;
    this.#resyncPeriodMs = options.resyncPeriodMs ?? 0;
    this.#source.on("add", (obj) => this.#onAddOrUpdate(obj));
    this.#source.on("update", (obj) => this.#onAddOrUpdate(obj));
    this.#source.on("delete", (obj) => this.#onDelete(obj));
    this.#source.on("error", (err) => this.#onError(err));
  }

  /** Starts listing and watching; returns at once. Use `waitForSync` to wait for the first list. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    void this.#run();
    if (this.#resyncPeriodMs > 0) this.#scheduleResync();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#restartTimer?.cancel();
    this.#restartTimer = undefined;
    this.#resyncTimer?.cancel();
    this.#resyncTimer = undefined;
    await this.#source.stop();
  }

  /** True once the first full list is in the cache (and stays true across restarts). */
  hasSynced(): boolean {
    return this.#synced;
  }

  /** Resolves once synced; rejects when the signal aborts first. */
  waitForSync(signal?: AbortSignal): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => reject(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#syncWaiters.push(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
    });
  }

  /** How many times the list-watch was restarted after an error, and the last error's message. */
  status(): { synced: boolean; restarts: number; lastError: string | undefined } {
    return { synced: this.#synced, restarts: this.#restarts, lastError: this.#lastError };
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#objects.get(namespace ?? "")?.get(name);
  }

  getByKey(key: string): T | undefined {
    const { namespace, name } = parseKey(key);
    return this.get(name, namespace);
  }

  /** All cached objects, or those of one namespace. */
  list(namespace?: string): T[] {
    if (namespace !== undefined) return [...(this.#objects.get(namespace)?.values() ?? [])];
    const all: T[] = [];
    for (const byName of this.#objects.values()) all.push(...byName.values());
    return all;
  }

  /**
   * Adds handlers. Objects already in the cache are delivered to `add` at once, so a handler added
   * after the sync misses nothing. Returns a function that removes the handlers.
   */
  addEventHandler(handlers: InformerEventHandlers<T>): () => void {
    this.#handlers.push(handlers);
    if (handlers.add) for (const obj of this.list()) this.#call(() => handlers.add?.(obj));
    return () => {
      const index = this.#handlers.indexOf(handlers);
      if (index >= 0) this.#handlers.splice(index, 1);
    };
  }

  /** Calls `fn` with the (new) object on every add, update and delete: the usual "enqueue its key". */
  onChange(fn: (obj: T) => void): () => void {
    return this.addEventHandler({ add: fn, update: (_old, obj) => fn(obj), delete: fn });
  }

  /** Adds a secondary index; may be called before or after start. */
  addIndex(name: string, fn: IndexFunc<T>): void {
    if (this.#indexes.has(name)) throw new Error(`informer ${this.name} already has an index ${name}`);
    const index = { fn, values: new Map<string, Set<string>>() };
    this.#indexes.set(name, index);
    for (const obj of this.list()) this.#indexAdd(index, obj);
  }

  /** Cached objects the named index maps to `value`. */
  byIndex(name: string, value: string): T[] {
    const index = this.#indexes.get(name);
    if (!index) throw new Error(`informer ${this.name} has no index ${name}`);
    const result: T[] = [];
    for (const key of index.values.get(value) ?? []) {
      const obj = this.getByKey(key);
      if (obj !== undefined) result.push(obj);
    }
    return result;
  }

  async #run(): Promise<void> {
    if (this.#stopped) return;
    const attempt = ++this.#attempt;
    this.#attemptFailed = false;
    try {
      await this.#source.start();
    } catch (err) {
      if (attempt === this.#attempt) this.#onError(err);
      return;
    }
    if (this.#stopped || attempt !== this.#attempt || this.#attemptFailed) return;
    this.#healthySinceMs = this.#clock.now().getTime();
    if (!this.#synced) {
      this.#synced = true;
      this.#log.info({ objects: this.list().length }, "informer synced");
      const waiters = this.#syncWaiters;
      this.#syncWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  #onError(err: unknown): void {
    if (this.#stopped) return;
    this.#attemptFailed = true;
    if (this.#restartTimer !== undefined) return;
    const nowMs = this.#clock.now().getTime();
    if (this.#healthySinceMs !== undefined && nowMs - this.#healthySinceMs >= this.#backoffResetMs) {
      this.#backoff.forget("restart");
    }
    this.#healthySinceMs = undefined;
    const delayMs = this.#backoff.when("restart");
    this.#lastError = describeError(err);
    this.#log.warn({ error: this.#lastError, delayMs, restarts: this.#restarts }, "list-watch failed; restarting after backoff");
    this.#restartTimer = this.#clock.setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#stopped) return;
      this.#restarts++;
      void this.#run();
    }, delayMs);
  }

  #onAddOrUpdate(obj: T): void {
    if (this.#stopped) return;
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    let byName = this.#objects.get(namespace);
    if (!byName) {
      byName = new Map();
      this.#objects.set(namespace, byName);
    }
    const old = byName.get(name);
    byName.set(name, obj);
    for (const index of this.#indexes.values()) {
      if (old !== undefined) this.#indexRemove(index, old);
      this.#indexAdd(index, obj);
    }
    for (const handlers of [...this.#handlers]) {
      if (old === undefined) this.#call(() => handlers.add?.(obj));
      else this.#call(() => handlers.update?.(old, obj));
    }
  }

  #onDelete(obj: T): void {
    if (this.#stopped) return;
    const namespace = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    const byName = this.#objects.get(namespace);
    const old = byName?.get(name);
    if (byName === undefined || old === undefined) return;
    byName.delete(name);
    if (byName.size === 0) this.#objects.delete(namespace);
    for (const index of this.#indexes.values()) this.#indexRemove(index, old);
    for (const handlers of [...this.#handlers]) this.#call(() => handlers.delete?.(obj));
  }

  #indexAdd(index: { fn: IndexFunc<T>; values: Map<string, Set<string>> }, obj: T): void {
    const key = objectKey(obj);
    for (const value of this.#indexValues(index.fn, obj)) {
      let keys = index.values.get(value);
      if (!keys) {
        keys = new Set();
        index.values.set(value, keys);
      }
      keys.add(key);
    }
  }

  #indexRemove(index: { fn: IndexFunc<T>; values: Map<string, Set<string>> }, obj: T): void {
    const key = objectKey(obj);
    for (const value of this.#indexValues(index.fn, obj)) {
      const keys = index.values.get(value);
      keys?.delete(key);
      if (keys?.size === 0) index.values.delete(value);
    }
  }

  #indexValues(fn: IndexFunc<T>, obj: T): readonly string[] {
    try {
      return fn(obj);
    } catch (err) {
      this.#log.error({ error: describeError(err), key: objectKey(obj) }, "index function failed");
      return [];
    }
  }

  #call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ error: describeError(err) }, "informer event handler failed");
    }
  }

  #scheduleResync(): void {
    this.#resyncTimer = this.#clock.setTimeout(() => {
      if (this.#stopped) return;
      for (const obj of this.list()) {
        for (const handlers of [...this.#handlers]) this.#call(() => handlers.update?.(obj, obj));
      }
      this.#scheduleResync();
    }, this.#resyncPeriodMs);
  }
}

/** A short, secret-free description of a list/watch error (no bodies, no headers). */
function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { statusCode?: unknown; code?: unknown }).statusCode ?? (err as { code?: unknown }).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return `${err.name}${code !== undefined ? ` ${String(code)}` : ""}: ${err.message.slice(0, 300)}${cause.slice(0, 200)}`;
  }
  return String(err).slice(0, 300);
}

export interface KubeInformerOptions extends Omit<InformerOptions<KubernetesObject>, "source" | "name"> {
  /** Collection path, e.g. `/apis/niximage.io/v1alpha1/niximages` or `/api/v1/namespaces/x/pods`. */
  path: string;
  name?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Replaces the default list (a paginated raw GET of `path`). */
  list?: () => Promise<KubernetesListObject<KubernetesObject>>;
}

/** An informer over client-node's `ListWatch` for one collection path. */
export function createInformer<T extends KubernetesObject>(kc: KubeConfig, options: KubeInformerOptions): Informer<T> {
  const list =
    (options.list as (() => Promise<KubernetesListObject<T>>) | undefined) ??
    (() => kubeListAll<T>(kc, options.path, { labelSelector: options.labelSelector, fieldSelector: options.fieldSelector }));
  const source = new ListWatch<T>(options.path, new Watch(kc), list, false, options.labelSelector, options.fieldSelector);
  return new Informer<T>({ ...options, name: options.name ?? options.path, source: source as ListWatchSource<T> });
}
