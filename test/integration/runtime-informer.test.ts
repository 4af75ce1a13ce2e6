// The informer against the real kube-apiserver: add/update/delete events, secondary indexes, and
// recovery after its connection is broken (through a TCP proxy that resets every connection),
// next to client-node's bare ListWatch, which stops for good in the same situation.
import { KubeConfig, ListWatch, Watch, type KubernetesObject, type V1ConfigMap } from "@kubernetes/client-node";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { annotationIndex, createInformer, objectKey, type Informer } from "../../src/runtime/informer.ts";
import { kubeListAll, kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { kubeClients, kubectl, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.ts";
import { startApiFaultProxy } from "../support/api-fault-proxy.ts";
import { readFile } from "node:fs/promises";
import { join } from "node:path";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function configMap(namespace: string, name: string, data: Record<string, string>, annotations?: Record<string, string>): V1ConfigMap {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace, annotations }, data };
}

/** A copy of the admin kubeconfig that talks to the API server through `proxy`. */
function viaProxy(kc: KubeConfig, proxy: TcpProxy): KubeConfig {
  const proxied = new KubeConfig();
  proxied.loadFromOptions({
    clusters: kc.clusters.map((c) => ({ ...c, server: `https://127.0.0.1:${proxy.port}` })),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return proxied;
}

function recordEvents(informer: Informer<V1ConfigMap>): string[] {
  const events: string[] = [];
  informer.addEventHandler({
    add: (o) => events.push(`add ${o.metadata?.name}`),
    update: (old, o) => events.push(`update ${o.metadata?.name} ${old.data?.v}->${o.data?.v}`),
    delete: (o) => events.push(`delete ${o.metadata?.name}`),
  });
  return events;
}

describe("informer on the real API server", () => {
  it("lists, then sees add, update and delete, with the old object on update and indexes kept", async () => {
    const ns = await testNamespace("informer-events");
    const { core, kc } = kubeClients();
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "pre", { v: "0" }) });

    const informer = createInformer<V1ConfigMap>(kc, { path: `/api/v1/namespaces/${ns}/configmaps`, logger });
    cleanups.push(() => informer.stop());
    informer.addIndex("from", annotationIndex("niximage.io/from"));
    const events = recordEvents(informer);
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(20_000));
    expect(informer.get("pre", ns)).toMatchObject({ apiVersion: "v1", kind: "ConfigMap", data: { v: "0" } }); // kind filled in from the list
    // The namespace may hold kube-root-ca.crt (made by kube-controller-manager); only ours matter.
    expect(events.filter((e) => !e.includes("kube-root-ca"))).toEqual(["add pre"]);

    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "a", { v: "1" }, { "niximage.io/from": "web" }) });
    await waitFor("add a", () => events.includes("add a"));
    expect(informer.byIndex("from", `${ns}/web`).map(objectKey)).toEqual([`${ns}/a`]);

    await core.replaceNamespacedConfigMap({ namespace: ns, name: "a", body: configMap(ns, "a", { v: "2" }, { "niximage.io/from": "api" }) });
    await waitFor("update a", () => events.includes("update a 1->2"));
    expect(informer.byIndex("from", `${ns}/web`)).toEqual([]);
    expect(informer.byIndex("from", `${ns}/api`).map(objectKey)).toEqual([`${ns}/a`]);

    await core.deleteNamespacedConfigMap({ namespace: ns, name: "a" });
    await waitFor("delete a", () => events.includes("delete a"));
    expect(informer.get("a", ns)).toBeUndefined();
    expect(informer.byIndex("from", `${ns}/api`)).toEqual([]);
    expect(informer.hasSynced()).toBe(true);
    expect(informer.status().restarts).toBe(0);
  });

  it("recovers after its connection is broken, and catches up on what changed meanwhile; a bare ListWatch does not", async () => {
    const ns = await testNamespace("informer-recovery");
    const { core, kc } = kubeClients();
    const server = new URL(testbed().kube.server);
    const proxy = await startTcpProxy({ host: server.hostname, port: Number(server.port) });
    cleanups.push(() => proxy.close());
    const proxied = viaProxy(kc, proxy);
    const path = `/api/v1/namespaces/${ns}/configmaps`;

    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "keep", { v: "1" }) });
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "gone", { v: "1" }) });

    const informer = createInformer<V1ConfigMap>(proxied, {
      path,
      logger,
      restartBackoff: { baseMs: 200, maxMs: 1_000 },
    });
    cleanups.push(() => informer.stop());
    const events = recordEvents(informer);
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(20_000));

    // client-node's own list-watch on the same proxied connection, for comparison.
    const bare = new ListWatch<KubernetesObject>(path, new Watch(proxied), () => kubeListAll(proxied, path), false);
    const bareErrors: unknown[] = [];
    bare.on("error", (err) => bareErrors.push(err));
    await bare.start();
    cleanups.push(() => bare.stop());
    expect(bare.get("keep", ns)).toBeDefined();

    // Break every connection and keep refusing for a while; change things meanwhile.
    proxy.break();
    await waitFor("the informer to notice", () => informer.status().restarts > 0 || informer.status().lastError !== undefined, {
      timeoutMs: 10_000,
    });
    await core.replaceNamespacedConfigMap({ namespace: ns, name: "keep", body: configMap(ns, "keep", { v: "2" }) });
    await core.deleteNamespacedConfigMap({ namespace: ns, name: "gone" });
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "new", { v: "1" }) });
    await new Promise((r) => setTimeout(r, 1_500)); // several failed restarts with backoff
    expect(informer.get("new", ns)).toBeUndefined();
    proxy.restore();

    await waitFor("the informer to catch up", () => informer.get("new", ns) !== undefined && informer.get("gone", ns) === undefined, {
      timeoutMs: 15_000,
    });
    expect(informer.get("keep", ns)?.data).toEqual({ v: "2" });
    expect(events).toEqual(expect.arrayContaining(["update keep 1->2", "delete gone", "add new"]));
    expect(informer.hasSynced()).toBe(true);
    const { restarts, lastError } = informer.status();
    expect(restarts).toBeGreaterThanOrEqual(1);
    expect(lastError).toBeDefined();

    // And it keeps working after the recovery.
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "after", { v: "1" }) });
    await waitFor("add after", () => events.includes("add after"), { timeoutMs: 10_000 });

    // The bare ListWatch hit a non-410 error, reported it, and stopped for good.
    expect(bareErrors.length).toBeGreaterThanOrEqual(1);
    expect(bare.get("new", ns)).toBeUndefined();
    expect(bare.get("after", ns)).toBeUndefined();
    process.stderr.write(`informer recovery: ${restarts} restarts; last error: ${lastError}\n`);
  });

  it("a watch that goes silent loses no change: the periodic relist repairs it within its period; a malformed line and a 410 Gone lose nothing either", async () => {
    const ns = await testNamespace("informer-relist");
    const { core, kc } = kubeClients();
    const bed = testbed();
    const proxy = await startApiFaultProxy({
      upstream: bed.kube.server,
      upstreamCaFile: bed.kube.caFile,
      dir: join(bed.logDir, `informer-relist-proxy-${ns}`),
    });
    cleanups.push(() => proxy.close());
    // The proxy forwards the client's Authorization header: a token of a ServiceAccount that may read ConfigMaps here.
    await kubectl(["create", "serviceaccount", "reader", "-n", ns]);
    await kubectl(["create", "rolebinding", "reader", "--clusterrole=view", `--serviceaccount=${ns}:reader`, "-n", ns]);
    const token = await kubeRequestJson<{ status: { token: string } }>(kc, "POST", `/api/v1/namespaces/${ns}/serviceaccounts/reader/token`, {
      body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 3600 } },
    });
    const proxied = new KubeConfig();
    proxied.loadFromOptions({
      clusters: [{ name: "proxy", server: proxy.url, caData: (await readFile(proxy.caFile)).toString("base64") }],
      users: [{ name: "reader", token: token.status.token }],
      contexts: [{ name: "proxy", cluster: "proxy", user: "reader" }],
      currentContext: "proxy",
    });
    const relistPeriodMs = 3_000;
    const informer = createInformer<V1ConfigMap>(proxied, { path: `/api/v1/namespaces/${ns}/configmaps`, logger, relistPeriodMs });
    cleanups.push(() => informer.stop());
    const events = recordEvents(informer);
    informer.start();
    await informer.waitForSync(AbortSignal.timeout(20_000));
    await waitFor("the watch to be open", () => informer.isWatching() && proxy.openWatches() > 0);

    // Silent watch: the change is not delivered by it; the next relist finds it.
    proxy.blackholeWatches();
    const t0 = performance.now();
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "while-silent", { v: "1" }) });
    await waitFor("the relist to find the change", () => informer.get("while-silent", ns) !== undefined, { timeoutMs: 30_000 });
    const repairedMs = performance.now() - t0;
    expect(events).toContain("add while-silent");
    expect(informer.status().relists).toBeGreaterThanOrEqual(1);
    proxy.restoreWatches();

    // A malformed line: the watch is resumed from the last good resourceVersion.
    await waitFor("a flowing watch", () => informer.isWatching() && proxy.openWatches() > 0, { timeoutMs: 15_000 });
    expect(proxy.malformedWatches()).toBeGreaterThanOrEqual(1);
    await core.createNamespacedConfigMap({ namespace: ns, body: configMap(ns, "after-malformed", { v: "1" }) });
    await waitFor("after-malformed", () => events.includes("add after-malformed"), { timeoutMs: 15_000 });

    // 410 Gone mid-stream: a fresh list, and deletes made meanwhile are delivered.
    expect(proxy.goneWatches()).toBeGreaterThanOrEqual(1);
    await core.deleteNamespacedConfigMap({ namespace: ns, name: "while-silent" });
    await waitFor("delete while-silent", () => events.includes("delete while-silent"), { timeoutMs: 15_000 });
    expect(informer.hasSynced()).toBe(true);
    process.stderr.write(`informer relist: a change behind a silent watch was seen after ${Math.round(repairedMs)} ms (relist period ${relistPeriodMs} ms)\n`);
  });
});
