// Leader election against the real kube-apiserver: candidates in separate processes (so one can
// really die), a Lease in a namespace of its own per test.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { kubeGetJson } from "../../src/runtime/kube-request.ts";
import { LeaderElector } from "../../src/runtime/leader-election.ts";
import { KubeLeaseStore } from "../../src/runtime/lease-store.ts";
import { kubeClients, kubeConfig, testbed, testNamespace, waitFor } from "../support/kube.ts";

const LEASE_MS = 3_000;
const RENEW_DEADLINE_MS = 2_000;
const RETRY_MS = 500;
const childScript = fileURLToPath(new URL("../support/lease-elector-child.ts", import.meta.url));

interface ChildEvent {
  event: string;
  at: number;
  identity: string;
  leader?: string;
}

interface Candidate {
  identity: string;
  proc: ChildProcess;
  events: ChildEvent[];
  exited: Promise<number | null>;
  has(event: string): ChildEvent | undefined;
}

const children: Candidate[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
});

function candidate(namespace: string, lease: string, identity: string): Candidate {
  const proc = spawn(
    process.execPath,
    [childScript, testbed().kube.kubeconfig, namespace, lease, identity, String(LEASE_MS), String(RENEW_DEADLINE_MS), String(RETRY_MS)],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LOG_LEVEL: "warn" } },
  );
  const events: ChildEvent[] = [];
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    try {
      events.push(JSON.parse(line) as ChildEvent);
    } catch {
      // not ours
    }
  });
  let stderr = "";
  proc.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  const c: Candidate = {
    identity,
    proc,
    events,
    exited,
    has: (event) => events.find((e) => e.event === event),
  };
  void exited.then((code) => {
    if (code !== 0 && code !== null) process.stderr.write(`[${identity}] exited ${code}; stderr tail:\n${stderr}\n`);
  });
  children.push(c);
  return c;
}

interface RawLease {
  metadata: { resourceVersion: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

async function readLease(namespace: string, name: string): Promise<RawLease> {
  return kubeGetJson<RawLease>(kubeConfig(), `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${name}`);
}

describe("leader election on a real Lease", () => {
  it("two candidates: one leads; on SIGTERM it releases and the other takes over at once; on SIGKILL a third takes over after the lease duration", async () => {
    const ns = await testNamespace("leader-election");
    const lease = "operator-lock";

    // 1. Two candidates, only one leads.
    const a = candidate(ns, lease, "a");
    await waitFor("a leading", () => a.has("started"), { timeoutMs: 20_000 });
    const b = candidate(ns, lease, "b");
    await waitFor("b observing a as leader", () => b.events.some((e) => e.event === "leader" && e.leader === "a"), { timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 2 * LEASE_MS)); // longer than a lease: a keeps renewing
    expect(b.has("started")).toBeUndefined();
    const held = await readLease(ns, lease);
    expect(held.spec).toMatchObject({ holderIdentity: "a", leaseDurationSeconds: 3, leaseTransitions: 0 });
    // MicroTime goes out and comes back with six fractional digits; renewTime moves, acquireTime stays.
    expect(held.spec.renewTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(Date.parse(held.spec.renewTime!)).toBeGreaterThan(Date.parse(held.spec.acquireTime!) + LEASE_MS);

    // 2. Graceful stop: a releases, b takes over within about one retry period (far less than a lease).
    const termAt = Date.now();
    a.proc.kill("SIGTERM");
    expect(await a.exited).toBe(0);
    expect(a.has("stopped")).toBeDefined();
    const bStarted = await waitFor("b leading", () => b.has("started"), { timeoutMs: LEASE_MS * 3 });
    expect(bStarted.at - termAt).toBeLessThan(LEASE_MS);
    const afterRelease = await readLease(ns, lease);
    expect(afterRelease.spec).toMatchObject({ holderIdentity: "b", leaseTransitions: 1 });

    // 3. Death: b is killed without a chance to release; c waits for the lease to run out, then takes over.
    const c = candidate(ns, lease, "c");
    await waitFor("c observing b as leader", () => c.events.some((e) => e.event === "leader" && e.leader === "b"), { timeoutMs: 20_000 });
    const killAt = Date.now();
    b.proc.kill("SIGKILL");
    await b.exited;
    const cStarted = await waitFor("c leading", () => c.has("started"), { timeoutMs: LEASE_MS * 4 });
    const takeoverMs = cStarted.at - killAt;
    // Not before the lease ran out (b renewed at most one retry period before dying) ...
    expect(takeoverMs).toBeGreaterThanOrEqual(LEASE_MS - RETRY_MS - 100);
    // ... and within the lease duration plus c's polling (one or two retry periods with jitter) and API latency.
    expect(takeoverMs).toBeLessThanOrEqual(LEASE_MS + 2.4 * RETRY_MS + 500);
    const afterDeath = await readLease(ns, lease);
    expect(afterDeath.spec).toMatchObject({ holderIdentity: "c", leaseTransitions: 2 });
    process.stderr.write(`leader election: takeover after release ${bStarted.at - termAt} ms, after kill ${takeoverMs} ms\n`);
  });

  it("a leader whose Lease is taken from under it stops leading within the renew deadline and reports it lost", async () => {
    const ns = await testNamespace("leader-lost");
    const kc = kubeConfig();
    const events: string[] = [];
    let leaderSignal: AbortSignal | undefined;
    const elector = new LeaderElector({
      store: new KubeLeaseStore(kc, ns, "lock"),
      identity: "victim",
      logger: pino({ level: "silent" }),
      leaseDurationMs: LEASE_MS,
      renewDeadlineMs: RENEW_DEADLINE_MS,
      retryPeriodMs: RETRY_MS,
      onStartedLeading: (signal) => {
        leaderSignal = signal;
        events.push("started");
      },
      onLost: () => events.push("lost"),
    });
    const running = elector.run();
    await waitFor("leading", () => elector.isLeader(), { timeoutMs: 20_000 });

    // Someone else (with a long lease) overwrites the Lease, as a misconfigured second operator would.
    const current = await readLease(ns, "lock");
    const stolenAt = Date.now();
    const now = new Date().toISOString().replace("Z", "000Z");
    await kubeClients(kc).objects.replace({
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: "lock", namespace: ns, resourceVersion: current.metadata.resourceVersion },
      spec: { holderIdentity: "intruder", leaseDurationSeconds: 60, acquireTime: now, renewTime: now, leaseTransitions: 1 },
    } as never);

    await running;
    expect(events).toEqual(["started", "lost"]);
    expect(leaderSignal?.aborted).toBe(true);
    expect(elector.isLeader()).toBe(false);
    expect(Date.now() - stolenAt).toBeLessThanOrEqual(RENEW_DEADLINE_MS + RETRY_MS + 500);
    expect((await readLease(ns, "lock")).spec.holderIdentity).toBe("intruder");
  });
});
