import type { KubernetesObject } from "@kubernetes/client-node";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Informer, annotationIndex, objectKey, ownerIndex, parseKey, type ListWatchSource } from "../../src/runtime/informer.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";

const logger = pino({ level: "silent" });

type Verb = "add" | "update" | "delete" | "error" | "connect";

/** Stands in for client-node's ListWatch: the test decides what each start() does. */
class FakeSource implements ListWatchSource<KubernetesObject> {
  readonly callbacks: Record<Verb, ((x?: unknown) => void)[]> = { add: [], update: [], delete: [], error: [], connect: [] };
  starts = 0;
  stops = 0;
  /** Behaviour of the next start() calls, in order; default: succeed. */
  plan: ((source: FakeSource) => Promise<void> | void)[] = [];

  on(verb: "add" | "update" | "delete", cb: (obj: KubernetesObject) => void): void;
  on(verb: "error" | "connect", cb: (err?: unknown) => void): void;
  on(verb: Verb, cb: (x: never) => void): void {
    this.callbacks[verb].push(cb as (x?: unknown) => void);
  }

  async start(): Promise<void> {
    this.starts++;
    const step = this.plan.shift();
    if (step) await step(this);
  }

  async stop(): Promise<void> {
    this.stops++;
  }

  emit(verb: Verb, arg?: unknown): void {
    for (const cb of this.callbacks[verb]) cb(arg);
  }
}

function obj(name: string, namespace = "ns", rv = "1", extra: Partial<NonNullable<KubernetesObject["metadata"]>> = {}): KubernetesObject {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace, resourceVersion: rv, ...extra } };
}

function setup(options: { backoffResetMs?: number; resyncPeriodMs?: number } = {}) {
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
    informer.start();
    await informer.waitForSync();
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
    informer.start();
    await informer.waitForSync();
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
    informer.start();
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
    informer.start();
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
    informer.start();
    source.emit("add", owned("b1", "web"));
    source.emit("add", obj("other", "shop", "1", { ownerReferences: [{ apiVersion: "apps/v1", kind: "NixImage", name: "web", uid: "u" }] }));
    informer.addIndex("owner", ownerIndex("NixImage", "niximage.io"));
    expect(informer.byIndex("owner", "shop/web").map((o) => o.metadata?.name)).toEqual(["b1"]);
    expect(() => informer.byIndex("nope", "x")).toThrow(/no index/);
    expect(() => informer.addIndex("owner", () => [])).toThrow(/already/);
  });
});

describe("Informer restarts", () => {
  it("restarts with growing backoff while starts fail, then syncs", async () => {
    const { clock, source, informer } = setup();
    const fail = (s: FakeSource) => s.emit("error", new Error("list failed: connection refused"));
    source.plan.push(fail, fail, fail, (s) => s.emit("add", obj("a")));
    informer.start();
    await flushAsync();
    expect(source.starts).toBe(1);
    expect(informer.hasSynced()).toBe(false);
    const startTimes: number[] = [];
    const t0 = clock.nowMs();
    while (source.starts < 4) {
      await clock.advanceToNext();
      startTimes.push(clock.nowMs() - t0);
    }
    expect(startTimes).toEqual([1000, 3000, 7000]);
    expect(informer.hasSynced()).toBe(true);
    expect(informer.status()).toMatchObject({ synced: true, restarts: 3, lastError: "Error: list failed: connection refused" });
    expect(informer.get("a", "ns")).toBeDefined();
  });

  it("restarts after a broken watch, keeps the cache and stays synced", async () => {
    const { clock, source, informer } = setup();
    source.plan.push((s) => s.emit("add", obj("a")));
    informer.start();
    await informer.waitForSync();
    source.emit("error", Object.assign(new Error("Internal Server Error"), { statusCode: 500 }));
    expect(informer.hasSynced()).toBe(true);
    expect(informer.list()).toHaveLength(1);
    await clock.advance(999);
    expect(source.starts).toBe(1);
    await clock.advance(1);
    expect(source.starts).toBe(2);
    source.emit("add", obj("b"));
    expect(informer.list()).toHaveLength(2);
    expect(informer.status().lastError).toBe("Error 500: Internal Server Error");
  });

  it("treats a rejected start like an error, and only one restart is pending at a time", async () => {
    const { clock, source, informer } = setup();
    source.plan.push(async (s) => {
      s.emit("error", new Error("first"));
      throw new Error("No currently active cluster");
    });
    informer.start();
    await flushAsync();
    expect(clock.pending()).toBe(1);
    await clock.advance(1000);
    expect(source.starts).toBe(2);
    expect(informer.hasSynced()).toBe(true);
  });

  it("the backoff starts over after a healthy stretch", async () => {
    const { clock, source, informer } = setup({ backoffResetMs: 60_000 });
    const fail = (s: FakeSource) => s.emit("error", new Error("x"));
    source.plan.push(fail, fail, () => {}); // two failures, then healthy
    informer.start();
    await clock.advance(1000);
    await clock.advance(2000);
    expect(source.starts).toBe(3);
    // Healthy for a minute, then the watch breaks: the delay is back to 1 s, not 4 s.
    await clock.advance(60_000);
    source.emit("error", new Error("watch broke"));
    expect(clock.nextDueInMs()).toBe(1000);
    await clock.advance(1000);
    // Breaks again at once: the backoff grows from there.
    source.emit("error", new Error("again"));
    expect(clock.nextDueInMs()).toBe(2000);
  });

  it("stop cancels a pending restart and ignores later errors and events", async () => {
    const { clock, source, informer } = setup();
    informer.start();
    await informer.waitForSync();
    source.emit("error", new Error("x"));
    expect(clock.pending()).toBe(1);
    await informer.stop();
    expect(clock.pending()).toBe(0);
    expect(source.stops).toBe(1);
    source.emit("error", new Error("after stop"));
    source.emit("add", obj("late"));
    expect(clock.pending()).toBe(0);
    expect(informer.list()).toEqual([]);
  });

  it("waitForSync rejects when its signal aborts first", async () => {
    const { source, informer } = setup();
    source.plan.push((s) => s.emit("error", new Error("down")));
    informer.start();
    const abort = new AbortController();
    const waiting = informer.waitForSync(abort.signal);
    abort.abort(new Error("gave up"));
    await expect(waiting).rejects.toThrow("gave up");
  });
});

describe("Informer resync", () => {
  it("re-delivers every cached object as an update each period", async () => {
    const { clock, source, informer } = setup({ resyncPeriodMs: 10_000 });
    const updates: string[] = [];
    informer.addEventHandler({ update: (old, o) => updates.push(`${objectKey(o)}:${old === o}`) });
    informer.start();
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
