// Fault suite case 17 (docs/reliability.md): warm builds when the operator is down across a slot,
// and many NixImages on one schedule. The controller runs as a child process whose clock is moved
// (NIO_FAULT_CLOCK_OFFSET_MS, src/runtime/clock.ts), so a test puts it just before a slot and
// starts it again "after" the slot without waiting: each start gets its own offset, as if the
// process had been down that long. The NixImages are created as already built (their status
// seeded with the build the controller would have made), so the controller only has warm builds
// to do; the fake kubelet finishes the warm builds' pods.
import type { CoreV1Event } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { makeNixImageSchema, type NixImageStatus } from "../../src/api/niximage.ts";
import { operatorConfigSchema } from "../../src/config/operator-config.ts";
import { builderHash, specHash } from "../../src/controller/build-inputs.ts";
import { nextWarmTime, warmState } from "../../src/controller/warm-schedule.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { succeeded } from "../support/audit-log.ts";
import { waitForExit, type ControllerProcess } from "../support/controller-process.ts";
import { fakeRepository } from "../support/fake-kubelet.ts";
import { faultScenario, recordFigures, type FaultScenario } from "../support/fault-scenario.ts";
import { kubeClients, waitFor } from "../support/kube.ts";

const api = "/apis/niximage.io/v1alpha1";
const schedule = "0 3 * * *";
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

/** The first 03:00 UTC at least two hours away: a slot nothing in the test bed has seen yet. */
const nextSlot = () => nextWarmTime(schedule, "UTC", new Date(Date.now() + 2 * HOUR)).getTime();

/** The environment of a controller start whose clock reads `at` now. */
const clockAt = (at: number) => ({ NIO_FAULT_CLOCK_OFFSET_MS: String(at - Date.now()) });

/** NixImages with a warm schedule whose image was built already (status seeded as the controller writes it). */
async function createBuiltImages(s: FaultScenario, names: string[]): Promise<void> {
  const { kc } = kubeClients();
  const config = operatorConfigSchema.parse(s.config);
  const schema = makeNixImageSchema(config.flakeRefPolicy, config.nixConfigAllowlist);
  const create = async (name: string) => {
    const created = await kubeRequestJson<unknown>(kc, "POST", `${api}/namespaces/${s.namespace}/niximages`, {
      body: {
        apiVersion: "niximage.io/v1alpha1",
        kind: "NixImage",
        metadata: { name },
        spec: { flake: s.repo.flakeUrl, image: { repository: fakeRepository }, warm: { schedule } },
      },
    });
    const digest = `sha256:${"e".repeat(64)}`;
    const status: NixImageStatus = {
      lastBuild: {
        job: `${name}-build-1`,
        number: 1,
        kind: "Image",
        reasons: ["SpecChanged"],
        result: "Succeeded",
        digest,
        specHash: specHash(schema.parse(created)),
        builderHash: builderHash(config),
      },
      latestImage: `${fakeRepository}@${digest}`,
      buildCount: 1,
    };
    await kubeRequestJson(kc, "PATCH", `${api}/namespaces/${s.namespace}/niximages/${name}/status`, {
      body: { status },
      contentType: "application/merge-patch+json",
    });
  };
  for (let i = 0; i < names.length; i += 10) await Promise.all(names.slice(i, i + 10).map(create));
}

async function statuses(s: FaultScenario): Promise<Map<string, NixImageStatus>> {
  const list = await kubeRequestJson<{ items: { metadata: { name: string }; status?: NixImageStatus }[] }>(
    kubeClients().kc,
    "GET",
    `${api}/namespaces/${s.namespace}/niximages`,
  );
  return new Map(list.items.map((i) => [i.metadata.name, i.status ?? {}]));
}

/** Waits until every NixImage announces `slot` as its next warm build. */
async function waitAnnounced(s: FaultScenario, names: string[], slot: number, timeoutMs = 90_000): Promise<void> {
  await waitFor(
    `${names.length} NixImages announce the warm slot ${rfc3339(slot)}`,
    async () => {
      const all = await statuses(s);
      return names.every((n) => all.get(n)?.nextWarmBuild === rfc3339(slot));
    },
    { timeoutMs, intervalMs: 250 },
  );
}

async function warmJobs(s: FaultScenario) {
  return (await kubeClients().batch.listNamespacedJob({ namespace: s.namespace, labelSelector: "niximage.io/build-kind=Warm" })).items;
}

async function skipEvents(s: FaultScenario): Promise<CoreV1Event[]> {
  return (await kubeClients().core.listNamespacedEvent({ namespace: s.namespace, fieldSelector: "reason=WarmBuildSkipped" })).items;
}

/** Starts the controller "before the slot", waits until every NixImage announces it, then kills it. */
async function announceThenKill(s: FaultScenario, names: string[], slot: number): Promise<ControllerProcess> {
  const ctl = await s.startController("one", { env: clockAt(slot - 10 * 60_000) });
  await waitAnnounced(s, names, slot);
  ctl.signal("SIGKILL");
  await waitForExit(ctl, "SIGKILL");
  return ctl;
}

describe("faults: warm builds", () => {
  it("case 17: operator down across the slot, back within the starting deadline -> exactly one catch-up warm build per NixImage", async () => {
    const s = await faultScenario({ prefix: "warm-catchup", config: { warm: { startingDeadline: "1h", spread: "0s" } } });
    const names = ["w1", "w2", "w3"];
    await createBuiltImages(s, names);
    const slot = nextSlot();
    const ctl = await announceThenKill(s, names, slot);

    // Back 20 minutes after the slot: within the hour's deadline.
    const restartedAt = Date.now();
    await ctl.restart(clockAt(slot + 20 * 60_000));
    await waitFor(
      "a finished warm build per NixImage",
      async () => {
        const all = await statuses(s);
        return names.every((n) => all.get(n)?.lastWarmBuild?.result === "Succeeded");
      },
      { timeoutMs: 90_000, intervalMs: 250 },
    );
    const catchUpMs = Date.now() - restartedAt;
    await s.waitWritesSettle();
    const jobs = (await warmJobs(s)).map((j) => j.metadata?.name).sort();
    expect(jobs).toEqual(names.map((n) => `${n}-warm-1`));
    const all = await statuses(s);
    for (const n of names) expect(all.get(n)?.nextWarmBuild).toBe(rfc3339(slot + DAY));
    expect(await skipEvents(s)).toEqual([]);
    // Another restart in the same night starts nothing more.
    const before = await s.leaseHolder();
    ctl.signal("SIGKILL");
    await waitForExit(ctl, "SIGKILL");
    await ctl.restart(clockAt(slot + 40 * 60_000));
    await s.waitLeading(ctl, before);
    await s.waitWritesSettle();
    expect((await warmJobs(s)).length).toBe(names.length);
    await recordFigures("17-catchup", { images: names.length, downMinutesAfterSlot: 20, warmJobs: jobs.length, catchUpMs });
  }, 240_000);

  it("case 17: operator down across two slots and back after the deadline -> no warm build, one WarmBuildSkipped Event naming the slot", async () => {
    const s = await faultScenario({ prefix: "warm-skip", config: { warm: { startingDeadline: "1h", spread: "0s" } } });
    const names = ["k1", "k2", "k3"];
    await createBuiltImages(s, names);
    const slot = nextSlot();
    const ctl = await announceThenKill(s, names, slot);

    // Back a day and two hours later: last night's slot and tonight's are both past; tonight's deadline too.
    const restartedAt = Date.now();
    await ctl.restart(clockAt(slot + DAY + 2 * HOUR));
    await waitAnnounced(s, names, slot + 2 * DAY);
    const events = await waitFor("a WarmBuildSkipped Event per NixImage", async () => {
      const found = await skipEvents(s);
      return names.every((n) => found.some((e) => e.involvedObject.name === n)) ? found : undefined;
    });
    const skipMs = Date.now() - restartedAt;
    await s.waitWritesSettle();
    expect(await warmJobs(s)).toEqual([]);
    for (const e of events) {
      expect(e.type).toBe("Warning");
      expect(e.message).toContain(`warm build for the slot ${rfc3339(slot + DAY)} skipped`);
      expect(e.message).toContain("config.warm.startingDeadline 1h");
    }
    // Said once: a restart later that night neither builds nor says it again.
    const before = await s.leaseHolder();
    ctl.signal("SIGKILL");
    await waitForExit(ctl, "SIGKILL");
    await ctl.restart(clockAt(slot + DAY + 3 * HOUR));
    await s.waitLeading(ctl, before);
    await s.waitWritesSettle();
    expect(await warmJobs(s)).toEqual([]);
    expect((await skipEvents(s)).length).toBe(names.length);
    await recordFigures("17-skip", { images: names.length, hoursLate: 2, warmJobs: 0, skipEvents: events.length, skipMs, message: events[0]?.message });
  }, 240_000);

  const fleet = Number(process.env.NIO_FAULT_WARM_IMAGES ?? 30);
  it(`case 17: ${fleet} NixImages on one schedule -> starts spread per NixImage, the build cap holds, one warm build each`, async () => {
    const cap = 3;
    const spreadMs = 20_000;
    const s = await faultScenario({
      prefix: "warm-fleet",
      config: { warm: { startingDeadline: "1h", spread: "20s" }, concurrency: { builds: cap }, store: { poolSize: cap + 1 } },
      kubelet: { holdMs: () => 1000 },
    });
    const names = Array.from({ length: fleet }, (_, i) => `f${i}`);
    await createBuiltImages(s, names);
    const slot = nextSlot();
    const ctl = await announceThenKill(s, names, slot);
    // Back just before the slot, so the whole spread happens while it runs.
    const restartedAt = Date.now();
    await ctl.restart(clockAt(slot - 3_000));
    await waitFor(
      `a finished warm build for each of ${fleet} NixImages`,
      async () => {
        const all = await statuses(s);
        return names.every((n) => all.get(n)?.lastWarmBuild?.result === "Succeeded");
      },
      { timeoutMs: 600_000, intervalMs: 1000 },
    );
    const allDoneMs = Date.now() - restartedAt;
    await s.waitWritesSettle();

    // One warm build each, none skipped.
    const jobs = await warmJobs(s);
    expect(jobs.map((j) => j.metadata?.name).sort()).toEqual(names.map((n) => `${n}-warm-1`).sort());
    expect(await skipEvents(s)).toEqual([]);

    // The spread: no NixImage's build was started before its own start time (the slot plus its fixed offset).
    const offsets: number[] = [];
    const started: number[] = [];
    for (const job of jobs) {
      const name = job.metadata!.labels!["niximage.io/image"]!;
      const { upcoming } = warmState(schedule, "UTC", undefined, new Date(slot - 1), new Date(slot - 1), {
        key: `${s.namespace}/${name}`,
        spreadMs,
        startingDeadlineMs: HOUR,
      });
      const requestedAt = Date.parse(job.metadata!.annotations!["niximage.io/requested-at"]!);
      expect(requestedAt).toBeGreaterThanOrEqual(Math.floor(upcoming.startAt.getTime() / 1000) * 1000);
      offsets.push(upcoming.startAt.getTime() - slot);
      started.push(requestedAt - slot);
    }

    // The cap, from the audit log: right after each Job create, the warm builds created so far minus those whose pod had finished.
    const creates = (await s.operatorWrites((w) => w.resource === "jobs" && w.verb === "create" && succeeded(w)))
      .map((w) => w.receivedAt)
      .sort((a, b) => a - b);
    const finishes = s.kubelet.finished.filter((f) => f.job.includes("-warm-")).map((f) => f.at);
    const maxRunning = Math.max(...creates.map((at, i) => i + 1 - finishes.filter((f) => f < at).length));
    expect(creates.length).toBe(fleet);
    expect(maxRunning).toBeLessThanOrEqual(cap);

    const perSecond = new Map<number, number>();
    for (const o of offsets) perSecond.set(Math.floor(o / 1000), (perSecond.get(Math.floor(o / 1000)) ?? 0) + 1);
    await recordFigures("17-fleet", {
      images: fleet,
      cap,
      spreadMs,
      maxRunning,
      startOffsetsMs: { min: Math.min(...offsets), max: Math.max(...offsets) },
      busiestSecondOfSpread: Math.max(...perSecond.values()),
      startedAfterSlotMs: { first: Math.min(...started), last: Math.max(...started) },
      allDoneMs,
    });
  }, 900_000);
});
