import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { LeaderElector, type LeaderElectorOptions } from "../../src/runtime/leader-election.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";
import { FakeLeaseStore, InMemoryLeaseServer } from "../support/fake-lease-store.ts";

const logger = pino({ level: "silent" });
const LEASE = 15_000;
const RENEW_DEADLINE = 10_000;
const RETRY = 2_000;

interface Candidate {
  elector: LeaderElector;
  store: FakeLeaseStore;
  events: string[];
  leaderSignal: AbortSignal | undefined;
  running: Promise<void>;
}

function world() {
  const clock = new FakeClock();
  const server = new InMemoryLeaseServer();
  const candidate = (identity: string, extra: Partial<LeaderElectorOptions> = {}): Candidate => {
    const store = new FakeLeaseStore(server);
    const c = { store, events: [] as string[], leaderSignal: undefined as AbortSignal | undefined } as Candidate;
    c.elector = new LeaderElector({
      store,
      identity,
      clock,
      logger,
      random: () => 0,
      leaseDurationMs: LEASE,
      renewDeadlineMs: RENEW_DEADLINE,
      retryPeriodMs: RETRY,
      onStartedLeading: (signal) => {
        c.leaderSignal = signal;
        c.events.push(`started@${clock.nowMs() - t0}`);
      },
      onStoppedLeading: () => c.events.push(`stopped@${clock.nowMs() - t0}`),
      onLost: () => c.events.push(`lost@${clock.nowMs() - t0}`),
      onNewLeader: (id) => c.events.push(`leader=${id}`),
      ...extra,
    });
    c.running = c.elector.run();
    return c;
  };
  const t0 = clock.nowMs();
  /** Advances in small steps so the leaders' timers interleave naturally. */
  const advance = async (ms: number, step = 100) => {
    for (let done = 0; done < ms; done += step) await clock.advance(Math.min(step, ms - done));
  };
  const since = () => clock.nowMs() - t0;
  return { clock, server, candidate, advance, since };
}

describe("LeaderElector", () => {
  it("creates the Lease when missing and becomes leader with the right record", async () => {
    const { server, candidate, clock } = world();
    const a = candidate("a");
    await flushAsync();
    expect(a.elector.isLeader()).toBe(true);
    expect(a.events).toEqual(["leader=a", "started@0"]);
    expect(server.lease?.record).toEqual({
      holderIdentity: "a",
      leaseDurationSeconds: 15,
      acquireTime: clock.now(),
      renewTime: clock.now(),
      leaseTransitions: 0,
    });
  });

  it("renews every retry period with a direct update (no read), keeping acquireTime", async () => {
    const { server, candidate, advance, clock } = world();
    const a = candidate("a");
    await flushAsync();
    const acquired = server.lease?.record.acquireTime;
    a.store.calls.length = 0;
    await advance(3 * RETRY);
    expect(a.store.calls).toEqual(["update", "update", "update"]);
    expect(server.lease?.record.renewTime).toEqual(clock.now());
    expect(server.lease?.record.acquireTime).toEqual(acquired);
    expect(server.lease?.record.leaseTransitions).toBe(0);
  });

  it("with two candidates only one leads, and the other keeps watching", async () => {
    const { candidate, advance } = world();
    const a = candidate("a");
    const b = candidate("b");
    await advance(60_000);
    expect(a.elector.isLeader()).toBe(true);
    expect(b.elector.isLeader()).toBe(false);
    expect(b.elector.leader()).toBe("a");
    expect(b.events).toEqual(["leader=a"]);
    // b reads about once per retry period, never writes.
    expect(b.store.calls.filter((c) => c !== "get")).toEqual(["create"]);
  });

  it("when the leader stops it releases the Lease and the other takes over within one retry period", async () => {
    const { server, candidate, advance, since } = world();
    const a = candidate("a");
    await flushAsync();
    const b = candidate("b");
    await advance(10_000);
    const stoppedAt = since();
    await a.elector.stop();
    await a.running;
    expect(a.events).toEqual(["leader=a", "started@0", `stopped@${stoppedAt}`]);
    expect(a.leaderSignal?.aborted).toBe(true);
    expect(server.lease?.record.holderIdentity).toBeUndefined();
    await advance(RETRY);
    expect(b.elector.isLeader()).toBe(true);
    const started = Number(b.events.find((e) => e.startsWith("started@"))?.slice(8));
    expect(started - stoppedAt).toBeLessThanOrEqual(RETRY);
    expect(server.lease?.record).toMatchObject({ holderIdentity: "b", leaseTransitions: 1 });
  });

  it("when the leader dies (no release) the other takes over after the lease duration, never before", async () => {
    const { server, candidate, advance, since } = world();
    const a = candidate("a");
    await flushAsync();
    const b = candidate("b");
    await advance(10_000);
    // a is cut off: its requests hang; it can neither renew nor release.
    a.store.mode = "hang";
    const diedAt = since();
    const lastRenewAt = (server.lease?.record.renewTime?.getTime() as number) - (server.writes[0]?.record.acquireTime?.getTime() as number);
    await advance(LEASE + 2 * RETRY);
    expect(b.elector.isLeader()).toBe(true);
    const takeover = Number(b.events.find((e) => e.startsWith("started@"))?.slice(8));
    // Not before the lease ran out (as b saw it), and within lease duration + one retry of a's death.
    expect(takeover - lastRenewAt).toBeGreaterThanOrEqual(LEASE);
    expect(takeover - diedAt).toBeLessThanOrEqual(LEASE + RETRY);
    // a gave up after the renew deadline, before b took over: never two leaders at once.
    const lost = Number(a.events.find((e) => e.startsWith("lost@"))?.slice(5));
    expect(lost - diedAt).toBeLessThanOrEqual(RENEW_DEADLINE);
    expect(lost).toBeLessThan(takeover);
    expect(a.elector.isLeader()).toBe(false);
    expect(a.leaderSignal?.aborted).toBe(true);
    await a.running;
    expect(server.lease?.record).toMatchObject({ holderIdentity: "b", leaseTransitions: 1 });
  });

  it("a renew that fails once is retried within the deadline; leadership is kept", async () => {
    const { candidate, advance } = world();
    const a = candidate("a");
    await flushAsync();
    a.store.failNext = 2; // fast-path update fails, then the read fails
    await advance(3 * RETRY);
    expect(a.elector.isLeader()).toBe(true);
    expect(a.events.some((e) => e.startsWith("lost"))).toBe(false);
  });

  it("renewals failing past the renew deadline lose leadership and call onLost once", async () => {
    const { candidate, advance } = world();
    const a = candidate("a");
    await flushAsync();
    a.store.mode = "fail";
    await advance(RENEW_DEADLINE + RETRY);
    expect(a.elector.isLeader()).toBe(false);
    expect(a.events.filter((e) => e.startsWith("lost@"))).toEqual([`lost@${RENEW_DEADLINE}`]);
    await a.running;
  });

  it("holdsLease (the write fence) turns false renewDeadline after the last renewal, even while a renew hangs", async () => {
    const { candidate, advance, clock } = world();
    const a = candidate("a");
    await flushAsync();
    expect(a.elector.holdsLease()).toBe(true);
    await advance(RETRY); // renewed at RETRY
    a.store.mode = "hang";
    // The next renewal (due at 2 * RETRY) hangs; the fence holds until RETRY + RENEW_DEADLINE.
    await advance(RENEW_DEADLINE - 100);
    expect(a.elector.holdsLease()).toBe(true);
    await clock.advance(100);
    expect(a.elector.holdsLease()).toBe(false);
    expect(LEASE).toBeGreaterThan(RENEW_DEADLINE); // a new leader needs LEASE after its first sight
  });

  it("waits a full lease duration from its own first sight of a Lease held by another (clock skew safe)", async () => {
    const { server, candidate, advance, clock, since } = world();
    // A Lease from a dead process, with a renewTime far in the past by our clock.
    server.create({ holderIdentity: "ghost", leaseDurationSeconds: 15, renewTime: new Date(clock.nowMs() - 3_600_000), leaseTransitions: 4 });
    const b = candidate("b");
    await advance(LEASE - RETRY);
    expect(b.elector.isLeader()).toBe(false);
    await advance(2 * RETRY);
    expect(b.elector.isLeader()).toBe(true);
    expect(since()).toBeLessThanOrEqual(LEASE + RETRY);
    expect(server.lease?.record).toMatchObject({ holderIdentity: "b", leaseTransitions: 5 });
  });

  it("a released Lease (no holder) is taken at once", async () => {
    const { server, candidate } = world();
    server.create({ leaseDurationSeconds: 1, leaseTransitions: 2 });
    const b = candidate("b");
    await flushAsync();
    expect(b.elector.isLeader()).toBe(true);
    expect(server.lease?.record.leaseTransitions).toBe(3);
  });

  it("stopping a follower writes nothing and ends run()", async () => {
    const { server, candidate, advance } = world();
    candidate("a");
    await flushAsync();
    const b = candidate("b");
    await advance(5_000);
    const writes = server.writes.length;
    await b.elector.stop();
    await b.running;
    expect(server.writes.length).toBe(writes);
    expect(b.events).toEqual(["leader=a"]);
  });

  it("stop() returns even when the API server hangs", async () => {
    const { candidate, advance, clock } = world();
    const a = candidate("a");
    await flushAsync();
    a.store.mode = "hang";
    await advance(RETRY); // a renew is now in flight and will never answer
    const stopping = a.elector.stop();
    await advance(RENEW_DEADLINE * 2);
    await stopping;
    expect(a.elector.isLeader()).toBe(false);
    expect(clock.pending()).toBe(0);
  });

  it.each([
    [{ leaseDurationMs: 10_000, renewDeadlineMs: 10_000 }, /leaseDuration/],
    [{ renewDeadlineMs: 2_000, retryPeriodMs: 2_000 }, /renewDeadline/],
    [{ identity: "" }, /identity/],
  ])("rejects bad timings %j", (bad, message) => {
    const server = new InMemoryLeaseServer();
    expect(() => new LeaderElector({ store: new FakeLeaseStore(server), identity: "x", logger, ...bad })).toThrow(message);
  });
});
