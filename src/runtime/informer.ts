import type { KubernetesObject } from "@kubernetes/client-node";
import type { KubeAccess } from "./kube-config.ts";
import type { Logger } from "../log/logger.ts";
import type { Clock } from "./clock.ts";
import { systemClock } from "./clock.ts";
import { kubeListAll, kubeWatch } from "./kube-request.ts";
import { ExponentialBackoffRateLimiter, type ExponentialBackoffOptions } from "./rate-limiter.ts";

/** One watch event as the API server sends it (after the informer's transform). */
export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";

/**
 * Where an informer gets its objects: a full list, and a watch from a resourceVersion. Kept this
 * small so the informer (cache, relist, restart, readiness) is tested without an API server.
 */
export interface ListWatchSource<T extends KubernetesObject> {
  /** Every object and the collection's resourceVersion to watch from. */
  list(signal: AbortSignal): Promise<{ items: T[]; resourceVersion: string }>;
  /**
   * Watches from `resourceVersion`, calling `onEvent` for each event. Resolves when the watch ends
   * cleanly (server timeout, idle timeout: watch again from the last resourceVersion); rejects on an
   * error (a `statusCode`/`code` of 410 means the resourceVersion is too old: list again).
   * `onWatching` is called once the server accepted the watch.
   */
  watch(resourceVersion: string, onEvent: (type: WatchEventType, obj: T) => void, signal: AbortSignal, onWatching: () => void): Promise<void>;
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
  /**
   * List again from the API server this often (0/undefined: only when needed), so an event the
   * watch lost (a dropped line, a stalled connection) is repaired within this bound. Only objects
   * whose resourceVersion changed are delivered.
   */
  relistPeriodMs?: number;
  /**
   * Applied to every object before it is cached (e.g. drop managedFields and fields never read):
   * the cache holds only what the controller uses. Must keep metadata.name/namespace/resourceVersion,
   * and be idempotent (the Kubernetes source applies it to list pages as they arrive as well).
   */
  transform?: (obj: T) => T;
}

/** The read side of an informer: what a reconciler may use (never start/stop or handlers). */
export interface InformerView<T extends KubernetesObject> {
  get(name: string, namespace?: string): T | undefined;
  getByKey(key: string): T | undefined;
  list(namespace?: string): T[];
  byIndex(name: string, value: string): T[];
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
 * A list-watch cache that does not give up: lists, then watches from the list's resourceVersion;
 * a watch that ends cleanly is resumed from the last resourceVersion seen, a 410 Gone lists again,
 * any other error restarts after a backoff. `relistPeriodMs` lists again now and then so that an
 * event lost on the way (a stalled or cut watch, a malformed line) is repaired within that bound.
 *
 * It keeps the only copy of the objects (after `transform`), so that updates come with the old
 * object, secondary indexes stay consistent, and handlers added late are replayed the objects
 * already known. Objects are the API server's JSON (timestamps are strings, whatever the model
 * types say); treat them as read-only.
 */
export class Informer<T extends KubernetesObject> implements InformerView<T> {
  readonly name: string;
  readonly #source: ListWatchSource<T>;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #backoff: ExponentialBackoffRateLimiter<string>;
  readonly #backoffResetMs: number;
  readonly #resyncPeriodMs: number;
  readonly #relistPeriodMs: number;
  readonly #transform: ((obj: T) => T) | undefined;

  readonly #objects = new Map<string, Map<string, T>>();
  readonly #handlers: InformerEventHandlers<T>[] = [];
  readonly #indexes = new Map<string, { fn: IndexFunc<T>; values: Map<string, Set<string>> }>();

  #started = false;
  #stopped = false;
  #synced = false;
  #watching = false;
  #downSinceMs: number;
  #syncWaiters: (() => void)[] = [];
  /** Aborts the list or watch in flight (stop, or a relist that is due). */
  #current: AbortController | undefined;
  #resourceVersion = "";
  #relistDue = true;
  #lastListMs = 0;
  #healthySinceMs: number | undefined;
  #resyncTimer: { cancel(): void } | undefined;
  #relistTimer: { cancel(): void } | undefined;
  #wake: (() => void) | undefined;
  #restarts = 0;
  #relists = 0;
  #lastError: string | undefined;
  #running: Promise<void> | undefined;

  constructor(options: InformerOptions<T>) {
    this.name = options.name;
    this.#source = options.source;
    this.#log = options.logger.child({ informer: options.name });
    this.#clock = options.clock ?? systemClock;
    this.#backoff = new ExponentialBackoffRateLimiter({ baseMs: 1_000, maxMs: 30_000, ...options.restartBackoff });
    this.#backoffResetMs = options.backoffResetMs ?? 60_000;
    this.#resyncPeriodMs = options.resyncPeriodMs ?? 0;
    this.#relistPeriodMs = options.relistPeriodMs ?? 0;
    this.#transform = options.transform;
    this.#downSinceMs = this.#clock.now().getTime();
  }

  /** Starts listing and watching; returns at once. Use `waitForSync` to wait for the first list. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#running = this.#run();
    if (this.#resyncPeriodMs > 0) this.#scheduleResync();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#watching = false;
    this.#resyncTimer?.cancel();
    this.#relistTimer?.cancel();
    this.#current?.abort(new Error("informer stopped"));
    this.#wake?.();
    await this.#running;
  }

  /** True once the first full list is in the cache (and stays true across restarts). */
  hasSynced(): boolean {
    return this.#synced;
  }

  /** True while a watch is established: events arrive as they happen. */
  isWatching(): boolean {
    return this.#watching;
  }

  /** Since when (clock ms) no watch has been established; undefined while watching. */
  notWatchingSince(): number | undefined {
    return this.#watching ? undefined : this.#downSinceMs;
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

  /** Restarts after errors, periodic relists, and the last error's message. */
  status(): { synced: boolean; watching: boolean; restarts: number; relists: number; lastError: string | undefined } {
    return { synced: this.#synced, watching: this.#watching, restarts: this.#restarts, relists: this.#relists, lastError: this.#lastError };
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
    while (!this.#stopped) {
      const current = new AbortController();
      this.#current = current;
      let listed = false;
      try {
        if (this.#relistDue || this.#resourceVersion === "") {
          await this.#list(current.signal);
          listed = true;
        }
        if (this.#stopped) return;
        await this.#source.watch(
          this.#resourceVersion,
          (type, obj) => this.#onEvent(type, obj),
          current.signal,
          () => this.#onWatching(),
        );
        this.#watchEnded();
      } catch (err) {
        this.#watchEnded();
        if (this.#stopped) return;
        if (current.signal.aborted) continue; // a relist cut the watch on purpose
        if (statusOf(err) === 410 && !listed) {
          // Too old a resourceVersion: list again at once (what client-go does).
          this.#relistDue = true;
          this.#log.info("watch expired (410 Gone); listing again");
          continue;
        }
        await this.#backOff(err);
      }
    }
  }

  async #list(signal: AbortSignal): Promise<void> {
    const { items, resourceVersion } = await this.#source.list(signal);
    if (this.#stopped) return;
    if (this.#lastListMs > 0) this.#relists++;
    this.#replace(items);
    this.#resourceVersion = resourceVersion;
    this.#relistDue = false;
    this.#lastListMs = this.#clock.now().getTime();
    this.#scheduleRelist();
    if (!this.#synced) {
      this.#synced = true;
      this.#log.info({ objects: this.list().length }, "informer synced");
      const waiters = this.#syncWaiters;
      this.#syncWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  #watchEnded(): void {
    if (this.#watching) this.#downSinceMs = this.#clock.now().getTime();
    this.#watching = false;
  }

  #onWatching(): void {
    if (this.#stopped) return;
    this.#watching = true;
    this.#healthySinceMs ??= this.#clock.now().getTime();
  }

  /** Waits out the restart backoff (shorter when the last error is long ago). */
  async #backOff(err: unknown): Promise<void> {
    const nowMs = this.#clock.now().getTime();
    if (this.#healthySinceMs !== undefined && nowMs - this.#healthySinceMs >= this.#backoffResetMs) this.#backoff.forget("restart");
    this.#healthySinceMs = undefined;
    const delayMs = this.#backoff.when("restart");
    this.#lastError = describeError(err);
    this.#log.warn({ error: this.#lastError, delayMs, restarts: this.#restarts }, "list-watch failed; restarting after backoff");
    await new Promise<void>((resolve) => {
      const timer = this.#clock.setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, delayMs);
      this.#wake = () => {
        timer.cancel();
        resolve();
      };
    });
    if (!this.#stopped) this.#restarts++;
  }

  #onEvent(type: WatchEventType, raw: T): void {
    if (this.#stopped) return;
    const resourceVersion = raw.metadata?.resourceVersion;
    if (type === "BOOKMARK") {
      if (resourceVersion) this.#resourceVersion = resourceVersion;
      return;
    }
    const obj = this.#transform ? this.#transform(raw) : raw;
    if (type === "DELETED") this.#delete(obj);
    else this.#addOrUpdate(obj);
    if (resourceVersion) this.#resourceVersion = resourceVersion;
  }

  /** A full list: deliver what is new or changed, delete what is gone. */
  #replace(items: T[]): void {
    const seen = new Map<string, Set<string>>();
    for (const raw of items) {
      const obj = this.#transform ? this.#transform(raw) : raw;
      const namespace = obj.metadata?.namespace ?? "";
      const name = obj.metadata?.name ?? "";
      let names = seen.get(namespace);
      if (!names) seen.set(namespace, (names = new Set()));
      names.add(name);
      const old = this.get(name, namespace);
      if (old === undefined || old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.#addOrUpdate(obj);
    }
    for (const [namespace, byName] of [...this.#objects]) {
      for (const [name, obj] of [...byName]) if (!seen.get(namespace)?.has(name)) this.#delete(obj);
    }
  }

  #addOrUpdate(obj: T): void {
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

  #delete(obj: T): void {
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

  /** After each list: the next one is due relistPeriod later; it cuts the watch and lists. */
  #scheduleRelist(): void {
    if (!(this.#relistPeriodMs > 0) || this.#stopped) return;
    this.#relistTimer?.cancel();
    this.#relistTimer = this.#clock.setTimeout(() => {
      if (this.#stopped) return;
      this.#relistDue = true;
      this.#current?.abort(new Error("periodic relist"));
    }, this.#relistPeriodMs);
  }
}

function statusOf(err: unknown): number | undefined {
  const e = err as { statusCode?: unknown; code?: unknown } | undefined;
  const code = e?.statusCode ?? e?.code;
  return typeof code === "number" ? code : undefined;
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

export interface KubeInformerOptions<T extends KubernetesObject> extends Omit<InformerOptions<T>, "source" | "name"> {
  /** Collection path, e.g. `/apis/niximage.io/v1alpha1/niximages` or `/api/v1/namespaces/x/pods`. */
  path: string;
  name?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** A watch that sends nothing (not even a bookmark) for this long is ended and resumed. Default 60 s. */
  idleTimeoutMs?: number;
}

/** An informer over one collection path: paginated raw lists and a raw watch (plain JSON, no model classes). */
export function createInformer<T extends KubernetesObject>(kc: KubeAccess, options: KubeInformerOptions<T>): Informer<T> {
  return new Informer<T>({ ...options, name: options.name ?? options.path, source: kubeListWatch<T>(kc, options) });
}

function kubeListWatch<T extends KubernetesObject>(
  kc: KubeAccess,
  options: Pick<KubeInformerOptions<T>, "path" | "labelSelector" | "fieldSelector" | "idleTimeoutMs" | "transform">,
): ListWatchSource<T> {
  const selectors = { labelSelector: options.labelSelector, fieldSelector: options.fieldSelector };
  return {
    async list(signal) {
      const list = await kubeListAll<T>(kc, options.path, { ...selectors, signal, limit: 250, map: options.transform });
      return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? "" };
    },
    watch: (resourceVersion, onEvent, signal, onWatching) =>
      kubeWatch<T>(kc, options.path, {
        query: { ...selectors, resourceVersion },
        idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
        signal,
        onWatching,
        onEvent: (type, obj) => onEvent(type as WatchEventType, obj),
      }),
  };
}
