import { describe, expect, it } from "vitest";
import type { Condition } from "../../src/api/niximage.ts";
import { conditionsFor, mergeConditions, reasons } from "../../src/controller/conditions.ts";

const t0 = new Date("2026-11-22T10:00:00.000Z");
const t1 = new Date("2026-11-22T11:30:00.250Z");

describe("conditionsFor", () => {
  const table: [Parameters<typeof conditionsFor>[0]["phase"], string, string, string][] = [
    // phase, Ready, Reconciling, Stalled
    ["Ready", "True", "False", "False"],
    ["InProgress", "Unknown", "True", "False"],
    ["Stalled", "False", "False", "True"],
    ["Suspended", "Unknown", "False", "False"],
  ];
  it.each(table)("%s -> Ready=%s Reconciling=%s Stalled=%s", (phase, ready, reconciling, stalled) => {
    const out = conditionsFor({ phase, reason: reasons.Building, message: "m" });
    expect(out.map((c) => [c.type, c.status])).toEqual([
      ["Ready", ready],
      ["Reconciling", reconciling],
      ["Stalled", stalled],
    ]);
    for (const c of out) expect(c).toMatchObject({ reason: "Building", message: "m" });
  });

  it("reasons are PascalCase constants equal to their keys", () => {
    for (const [key, value] of Object.entries(reasons)) {
      expect(value).toBe(key);
      expect(value).toMatch(/^[A-Z][A-Za-z]*$/);
    }
  });
});

describe("mergeConditions", () => {
  const ready = conditionsFor({ phase: "Ready", reason: reasons.Succeeded, message: "image@sha256:1 is the latest build" });
  const building = conditionsFor({ phase: "InProgress", reason: reasons.Building, message: "started web-build-2" });
  const waiting = conditionsFor({ phase: "InProgress", reason: reasons.WaitingForStoreVolume, message: "all volumes in use" });
  const stalled = conditionsFor({ phase: "Stalled", reason: reasons.BuildFailed, message: "failed" });
  const byType = (cs: Condition[]) => Object.fromEntries(cs.map((c) => [c.type, c]));

  it("new conditions get now (RFC 3339 without milliseconds) and the generation", () => {
    const out = mergeConditions(undefined, ready, 3, t0);
    expect(out).toEqual([
      {
        type: "Ready",
        status: "True",
        observedGeneration: 3,
        lastTransitionTime: "2026-11-22T10:00:00Z",
        reason: "Succeeded",
        message: "image@sha256:1 is the latest build",
      },
      {
        type: "Reconciling",
        status: "False",
        observedGeneration: 3,
        lastTransitionTime: "2026-11-22T10:00:00Z",
        reason: "Succeeded",
        message: "image@sha256:1 is the latest build",
      },
      {
        type: "Stalled",
        status: "False",
        observedGeneration: 3,
        lastTransitionTime: "2026-11-22T10:00:00Z",
        reason: "Succeeded",
        message: "image@sha256:1 is the latest build",
      },
    ]);
  });

  it("the same state again changes nothing, not even the time", () => {
    const first = mergeConditions(undefined, ready, 3, t0);
    expect(mergeConditions(first, ready, 3, t1)).toEqual(first);
  });

  it("lastTransitionTime moves only for conditions whose status flips", () => {
    const first = byType(mergeConditions(undefined, ready, 1, t0));
    const next = byType(mergeConditions(Object.values(first), building, 2, t1));
    expect(next.Ready).toMatchObject({ status: "Unknown", lastTransitionTime: "2026-11-22T11:30:00Z", reason: "Building", observedGeneration: 2 });
    expect(next.Reconciling).toMatchObject({ status: "True", lastTransitionTime: "2026-11-22T11:30:00Z" });
    // Stalled stays False: its time stays, its reason and message follow.
    expect(next.Stalled).toMatchObject({ status: "False", lastTransitionTime: "2026-11-22T10:00:00Z", reason: "Building", message: "started web-build-2" });
  });

  it("a new reason with the same status keeps the time", () => {
    const first = mergeConditions(undefined, building, 1, t0);
    const next = byType(mergeConditions(first, waiting, 1, t1));
    for (const type of ["Ready", "Reconciling", "Stalled"]) expect(next[type]?.lastTransitionTime).toBe("2026-11-22T10:00:00Z");
    expect(next.Reconciling?.reason).toBe("WaitingForStoreVolume");
  });

  it("Ready -> Stalled -> Ready: each flip is timed, the untouched condition keeps its time", () => {
    const a = mergeConditions(undefined, ready, 1, t0);
    const b = byType(mergeConditions(a, stalled, 1, t1));
    expect([b.Ready?.lastTransitionTime, b.Reconciling?.lastTransitionTime, b.Stalled?.lastTransitionTime]).toEqual([
      "2026-11-22T11:30:00Z",
      "2026-11-22T10:00:00Z",
      "2026-11-22T11:30:00Z",
    ]);
    const t2 = new Date("2026-11-22T12:00:00Z");
    const c = byType(mergeConditions(Object.values(b), ready, 2, t2));
    expect([c.Ready?.lastTransitionTime, c.Reconciling?.lastTransitionTime, c.Stalled?.lastTransitionTime]).toEqual([
      "2026-11-22T12:00:00Z",
      "2026-11-22T10:00:00Z",
      "2026-11-22T12:00:00Z",
    ]);
  });

  it("conditions of other types are dropped; the order is always Ready, Reconciling, Stalled", () => {
    const current: Condition[] = [
      { type: "Stalled", status: "False", lastTransitionTime: "2026-01-01T00:00:00Z", reason: "X", message: "" },
      { type: "Legacy", status: "True", lastTransitionTime: "2026-01-01T00:00:00Z", reason: "X", message: "" },
    ];
    const out = mergeConditions(current, ready, 1, t0);
    expect(out.map((c) => c.type)).toEqual(["Ready", "Reconciling", "Stalled"]);
    expect(out[2]?.lastTransitionTime).toBe("2026-01-01T00:00:00Z");
  });
});
