import type { KubernetesObject } from "@kubernetes/client-node";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Informer, annotationIndex, objectKey, ownerIndex, parseKey, type ListWatchSource, type WatchEventType } from "../../src/runtime/informer.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";

const logger = pino({ level: "silent" });

type Verb = "add" | "update" | "delete";
const eventType = { add: "ADDED", update: "MODIFIED", delete: "DELETED" } as const;

/**
 * Stands in for the API server: `state` is what a list returns; `emit` sends a watch event (and
 * updates the state); `plan` decides what the next lists do (default: answer from `state`).
 */
class FakeSource implements ListWatchSource<KubernetesObject> {
  readonly state = new Map<string, KubernetesObject>();
  lists = 0;
  watches = 0;
  watchedFrom: string[] = [];
  rv = 100;
  plan: ((source: FakeSource) => void)[] = [];
  #watch: { onEvent: (type: WatchEventType, obj: KubernetesObject) => void; resolve: () => void; reject: (err: unknown) => void } | undefined;

  async list(): Promise<{ items: KubernetesObject[]; resourceVersion: string }> {
    this.lists++;
    this.plan.shift()?.(this);
    return { items: [...this.state.values()], resourceVersion: String(this.rv) };
  }

  watch(resourceVersion: string, onEvent: (type: WatchEventType, obj: KubernetesObject) => void, signal: AbortSignal, onWatching: () => void): Promise<void> {
    this.watches++;
    this.watchedFrom.push(resourceVersion);
    return new Promise((resolve, reject) => {
      this.#watch = { onEvent, resolve, reject };
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      onWatching();
    });
  }

  /** A watch event (the state changes with it); `dropped` changes the state only, as if the event were lost. */
  emit(verb: Verb, o: KubernetesObject, options: { dropped?: boolean } = {}): void {
    this.rv++;
    if (verb === "delete") this.state.delete(objectKey(o));
    else this.state.set(objectKey(o), o);
    if (!options.dropped) this.#watch?.onEvent(eventType[verb], { ...o, metadata: { ...o.metadata, resourceVersion: o.metadata?.resourceVersion } });
  }

  endWatch(err?: unknown): void {
    const watch = this.#watch;
    this.#watch = undefined;
    if (err === undefined) watch?.resolve();
    else watch?.reject(err);
  }
}

function obj(name: string, namespace = "ns", rv = "1", extra: Partial<NonNullable<KubernetesObject["metadata"]>> = {}): KubernetesObject {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace, resourceVersion: rv, ...extra } };
}

/** Starts, waits for the first list and for the watch to be up. */
async function started(informer: Informer<KubernetesObject>): Promise<void> {
  informer.start();
  await informer.waitForSync();
  await flushAsync();
}

function setup(options: { backoffResetMs?: number; resyncPeriodMs?: number; relistPeriodMs?: number } = {}) {
  const clock = new FakeClock();
  const source = new FakeSource();
  const informer = new Informer({ name: "configmaps", source, logger, clock, ...options });
  return { clock, source, informer };
}

describe("objectKey / parseKey", () => {
  it.each([
    [obj("a", "ns"), "ns/a", { namespace: "ns", name: "a" }],
    [{ metadata: { name: "node-1" } }, "node-1", { namespace: undefined, name: "node-1" }],
  ])("%j -> %s", (o, key, parsed) => {
    expect(objectKey(o)).toBe(key);
    expect(parseKey(key)).toEqual(parsed);
  });
});

describe("Informer cache and events", () => {
  it("syncs after the first successful start and serves get/list by namespace", async () => {
    const { source, informer } = setup();
    source.plan.push((s) => {
      s.emit("add", obj("a", "x"));
      s.emit("add", obj("b", "x"));
      s.emit("add", obj("c", "y"));
    });
    expect(informer.hasSynced()).toBe(false);
    await started(informer);
    expect(informer.hasSynced()).toBe(true);
    expect(informer.get("a", "x")?.metadata?.name).toBe("a");
    expect(informer.getByKey("y/c")?.metadata?.name).toBe("c");
    expect(informer.get("a", "y")).toBeUndefined();
    expect(informer.list("x").map(objectKey).sort()).toEqual(["x/a", "x/b"]);
    expect(informer.list().map(objectKey).sort()).toEqual(["x/a", "x/b", "y/c"]);
    expect(informer.list("nope")).toEqual([]);
  });

  it("delivers add, update (with the old object) and delete; late handlers get existing objects as adds", async () => {
    const { source, informer } = setup();
    const seen: string[] = [];
    informer.addEventHandler({
      add: (o) => seen.push(`add ${objectKey(o)}@${o.metadata?.resourceVersion}`),
      update: (old, o) => seen.push(`update ${objectKey(o)} ${old.metadata?.resourceVersion}->${o.metadata?.resourceVersion}`),
      delete: (o) => seen.push(`delete ${objectKey(o)}`),
    });
    await started(informer);
    source.emit("add", obj("a"));
    source.emit("update", obj("a", "ns", "2"));
    source.emit("delete", obj("a", "ns", "3"));
    source.emit("delete", obj("ghost")); // unknown: ignored
    source.emit("add", obj("b"));
    expect(seen).toEqual(["add ns/a@1", "update ns/a 1->2", "delete ns/a", "add ns/b@1"]);
    expect(informer.list().map(objectKey)).toEqual(["ns/b"]);

    const late: string[] = [];
    const remove = informer.onChange((o) => late.push(objectKey(o)));
    expect(late).toEqual(["ns/b"]);
    remove();
    source.emit("add", obj("c"));
    expect(late).toEqual(["ns/b"]);
  });

  it("a throwing handler does not stop the others", async () => {
    const { source, informer } = setup();
    const seen: string[] = [];
    informer.onChange(() => {
      throw new Error("bad handler");
    });
    informer.onChange((o) => seen.push(objectKey(o)));
    await started(informer);
    source.emit("add", obj("a"));
    expect(seen).toEqual(["ns/a"]);
  });
});

describe("Informer secondary indexes", () => {
  const owned = (name: string, owner: string | undefined, rv = "1") =>
    obj(name, "shop", rv, owner ? { ownerReferences: [{ apiVersion: "niximage.io/v1alpha1", kind: "NixImage", name: owner, uid: `uid-${owner}` }] } : {});
  const annotated = (name: string, from: string | undefined, rv = "1") => obj(name, "shop", rv, from ? { annotations: { "niximage.io/from": from } } : {});

  it("keeps owner and annotation indexes right through add, update and delete", async () => {
    const { source, informer } = setup();
    informer.addIndex("owner", ownerIndex("NixImage", "niximage.io"));
    informer.addIndex("from", annotationIndex("niximage.io/from"));
    await started(informer);
    source.emit("add", owned("web-build-1", "web"));
    source.emit("add", owned("web-build-2", "web"));
    source.emit("add", owned("api-build-1", "api"));
    source.emit("add", annotated("deploy-web", "web"));
    const names = (index: string, value: string) =>
      informer
        .byIndex(index, value)
        .map((o) => o.metadata?.name)
        .sort();
    expect(names("owner", "shop/web")).toEqual(["web-build-1", "web-build-2"]);
    expect(names("owner", "shop/api")).toEqual(["api-build-1"]);
    expect(names("from", "shop/web")).toEqual(["deploy-web"]);

    source.emit("update", annotated("deploy-web", "api", "2"));
    expect(names("from", "shop/web")).toEqual([]);
    expect(names("from", "shop/api")).toEqual(["deploy-web"]);
    source.emit("update", annotated("deploy-web", undefined, "3"));
    expect(names("from", "shop/api")).toEqual([]);

    source.emit("delete", owned("web-build-1", "web"));
    expect(names("owner", "shop/web")).toEqual(["web-build-2"]);
    expect(names("owner", "shop/nothing")).toEqual([]);
  });

  it("an index added after objects are cached covers them; unknown and duplicate indexes throw", async () => {
    const { source, informer } = setup();
    await started(informer);
    source.emit("add", owned("b1", "web"));
    source.emit("add", obj("other", "shop", "1", { ownerReferences: [{ apiVersion: "apps/v1", kind: "NixImage", name: "web", uid: "u" }] }));
    informer.addIndex("owner", ownerIndex("NixImage", "niximage.io"));
    expect(informer.byIndex("owner", "shop/web").map((o) => o.metadata?.name)).toEqual(["b1"]);
    expect(() => informer.byIndex("nope", "x")).toThrow(/no index/);
    expect(() => informer.addIndex("owner", () => [])).toThrow(/already/);
  });
});

describe("Informer restarts", () => {
  it("retries the first list with growing backoff, then syncs", async () => {
    const { clock, source, informer } = setup();
    const fail = () => {
      throw new Error("list failed: connection refused");
    };
    source.plan.push(fail, fail, fail, (s) => s.state.set("ns/a", obj("a")));
    informer.start();
    await flushAsync();
    expect(source.lists).toBe(1);
    expect(informer.hasSynced()).toBe(false);
    const listTimes: number[] = [];
    const t0 = clock.nowMs();
    while (source.lists < 4) {
      await clock.advanceToNext();
      listTimes.push(clock.nowMs() - t0);
    }
    expect(listTimes).toEqual([1000, 3000, 7000]);
    expect(informer.hasSynced()).toBe(true);
    expect(informer.status()).toMatchObject({ synced: true, watching: true, restarts: 3, lastError: "Error: list failed: connection refused" });
    expect(informer.get("a", "ns")).toBeDefined();
  });

  it("after a broken watch: not watching during the backoff, then watches again from the last resourceVersion without a list", async () => {
    const { clock, source, informer } = setup();
    source.state.set("ns/a", obj("a"));
    await started(informer);
    source.emit("add", obj("b", "ns", "101"));
    source.endWatch(Object.assign(new Error("Internal Server Error"), { statusCode: 500 }));
    await flushAsync();
    expect(informer.hasSynced()).toBe(true);
    expect(informer.isWatching()).toBe(false);
    expect(informer.list()).toHaveLength(2);
    await clock.advance(999);
    expect(source.watches).toBe(1);
    await clock.advance(1);
    expect(source.watches).toBe(2);
    expect(source.watchedFrom).toEqual(["100", "101"]);
    expect(source.lists).toBe(1);
    expect(informer.isWatching()).toBe(true);
    expect(informer.status().lastError).toBe("Error 500: Internal Server Error");
  });

  it("a watch that ends cleanly is resumed at once; 410 Gone lists again and delivers only what changed", async () => {
    const { clock, source, informer } = setup();
    source.state.set("ns/keep", obj("keep"));
    source.state.set("ns/gone", obj("gone"));
    source.state.set("ns/changed", obj("changed"));
    const seen: string[] = [];
    await started(informer);
    informer.addEventHandler({
      update: (o, n) => seen.push(`update ${objectKey(n)} ${o.metadata?.resourceVersion}->${n.metadata?.resourceVersion}`),
      delete: (o) => seen.push(`delete ${objectKey(o)}`),
    });
    source.endWatch();
    await flushAsync();
    expect(source.watches).toBe(2);
    expect(clock.pending()).toBe(0);

    source.emit("delete", obj("gone"), { dropped: true });
    source.emit("update", obj("changed", "ns", "2"), { dropped: true });
    source.emit("add", obj("new"), { dropped: true });
    source.endWatch(Object.assign(new Error("too old resource version"), { statusCode: 410 }));
    await flushAsync();
    expect(source.lists).toBe(2);
    expect(seen).toEqual(["update ns/changed 1->2", "delete ns/gone"]);
    expect(informer.list().map(objectKey).sort()).toEqual(["ns/changed", "ns/keep", "ns/new"]);
    expect(informer.status().restarts).toBe(0);
  });

  it("the backoff starts over after a healthy stretch", async () => {
    const { clock, source, informer } = setup({ backoffResetMs: 60_000 });
    await started(informer);
    source.endWatch(new Error("x"));
    await clock.advance(1000);
    source.endWatch(new Error("x"));
    await flushAsync();
    expect(clock.nextDueInMs()).toBe(2000);
    await clock.advance(2000);
    // Healthy for a minute, then the watch breaks: the delay is back to 1 s, not 4 s.
    await clock.advance(60_000);
    source.endWatch(new Error("watch broke"));
    await flushAsync();
    expect(clock.nextDueInMs()).toBe(1000);
    await clock.advance(1000);
    // Breaks again at once: the backoff grows from there.
    source.endWatch(new Error("again"));
    await flushAsync();
    expect(clock.nextDueInMs()).toBe(2000);
  });

  it("stop cancels a pending restart and ignores later events", async () => {
    const { clock, source, informer } = setup();
    await started(informer);
    source.endWatch(new Error("x"));
    await flushAsync();
    expect(clock.pending()).toBe(1);
    await informer.stop();
    expect(clock.pending()).toBe(0);
    source.emit("add", obj("late"));
    await clock.advance(10_000);
    expect(source.watches).toBe(1);
    expect(informer.list()).toEqual([]);
  });

  it("waitForSync rejects when its signal aborts first", async () => {
    const { source, informer } = setup();
    source.plan.push(() => {
      throw new Error("down");
    });
    informer.start();
    const abort = new AbortController();
    const waiting = informer.waitForSync(abort.signal);
    abort.abort(new Error("gave up"));
    await expect(waiting).rejects.toThrow("gave up");
  });
});

describe("Informer periodic relist", () => {
  it("repairs a lost event within the relist period, and re-delivers nothing unchanged", async () => {
    const { clock, source, informer } = setup({ relistPeriodMs: 300_000 });
    source.state.set("ns/a", obj("a"));
    await started(informer);
    const seen: string[] = [];
    informer.addEventHandler({
      update: (_o, n) => seen.push(`update ${objectKey(n)}`),
      delete: (o) => seen.push(`delete ${objectKey(o)}`),
      add: (o) => seen.push(`add ${objectKey(o)}`),
    });
    expect(seen).toEqual(["add ns/a"]);
    source.emit("add", obj("b"), { dropped: true });
    await clock.advance(299_999);
    expect(informer.get("b", "ns")).toBeUndefined();
    await clock.advance(1);
    expect(informer.get("b", "ns")).toBeDefined();
    expect(seen).toEqual(["add ns/a", "add ns/b"]);
    expect(informer.status()).toMatchObject({ relists: 1, restarts: 0, watching: true });
    expect(source.watches).toBe(2);
    // And again one period after that list.
    await clock.advance(300_000);
    expect(source.lists).toBe(3);
  });
});

describe("Informer transform", () => {
  it("caches the transformed object from lists and watch events", async () => {
    const clock = new FakeClock();
    const source = new FakeSource();
    const slim = (o: KubernetesObject): KubernetesObject => ({
      metadata: { name: o.metadata?.name, namespace: o.metadata?.namespace, resourceVersion: o.metadata?.resourceVersion },
    });
    const informer = new Informer({ name: "x", source, logger, clock, transform: slim });
    source.state.set("ns/a", obj("a", "ns", "1", { managedFields: [{ manager: "kubectl" }] }));
    await started(informer);
    source.emit("add", obj("b", "ns", "1", { managedFields: [{ manager: "kubectl" }] }));
    expect(informer.list().map((o) => Object.keys(o.metadata ?? {}).sort())).toEqual([
      ["name", "namespace", "resourceVersion"],
      ["name", "namespace", "resourceVersion"],
    ]);
  });
});

describe("Informer resync", () => {
  it("re-delivers every cached object as an update each period", async () => {
    const { clock, source, informer } = setup({ resyncPeriodMs: 10_000 });
    const updates: string[] = [];
    informer.addEventHandler({ update: (old, o) => updates.push(`${objectKey(o)}:${old === o}`) });
    await started(informer);
    source.emit("add", obj("a"));
    await clock.advance(10_000);
    expect(updates).toEqual(["ns/a:true"]);
    await clock.advance(10_000);
    expect(updates).toHaveLength(2);
    await informer.stop();
    await clock.advance(10_000);
    expect(updates).toHaveLength(2);
  });
});
