import { describe, expect, it } from "vitest";
import { buildSlotFor, type BuildSlots } from "../../src/controller/build-slots.ts";

const slots = (cap: number, running: Record<string, number>, waiting: string[] = []): BuildSlots => ({
  cap,
  running: Object.values(running).reduce((a, b) => a + b, 0),
  runningByNamespace: new Map(Object.entries(running)),
  waitingNamespaces: new Set(waiting),
});

describe("buildSlotFor", () => {
  it.each([
    ["alone, a namespace may use every slot", "a", slots(4, { a: 3 }), true],
    ["the global cap holds", "b", slots(4, { a: 4 }), false],
    ["a namespace beyond its share starts nothing while another waits", "a", slots(4, { a: 3 }, ["b"]), false],
    ["the waiting namespace gets the freed slot", "b", slots(4, { a: 3 }, ["b"]), true],
    ["two namespaces: two slots each", "a", slots(4, { a: 1, b: 2 }), true],
    ["three namespaces on four slots: ceil(4/3) = 2 each", "c", slots(4, { a: 2, b: 1 }), true],
    ["...but not a third for one of them while the others want builds", "a", slots(4, { a: 2, b: 1 }, ["c"]), false],
    ["more namespaces than slots: at least one each, the cap still holds", "z", slots(2, { a: 1 }, ["b", "c", "d"]), true],
  ])("%s", (_name, namespace, input, ok) => {
    expect(buildSlotFor(namespace, input).ok).toBe(ok);
  });

  it("says why it waits", () => {
    expect(buildSlotFor("a", slots(4, { a: 3 }, ["b"]))).toEqual({
      ok: false,
      message: "namespace a runs 3 of the 4 build slots (concurrency.builds); its fair share while 2 namespaces want builds is 2",
    });
    expect(buildSlotFor("b", slots(4, { a: 4 }))).toEqual({ ok: false, message: "4 builds are running, the operator's limit (concurrency.builds) is 4" });
  });

  it("a namespace hogging the cap is drained to its share as its builds finish (simulation)", () => {
    // Namespace a took all 8 slots before b and c came; builds finish one per tick and each freed
    // slot is offered to whoever asks first (a asks first every tick: the worst case for b and c).
    const running = new Map([["a", 8]]);
    for (let tick = 0; tick < 8; tick++) {
      running.set("a", running.get("a")! - 1);
      for (const ns of ["a", "b", "c"]) {
        const total = [...running.values()].reduce((x, y) => x + y, 0);
        if (buildSlotFor(ns, { cap: 8, running: total, runningByNamespace: running, waitingNamespaces: new Set(["a", "b", "c"]) }).ok) {
          running.set(ns, (running.get(ns) ?? 0) + 1);
          break;
        }
      }
    }
    expect(Object.fromEntries(running)).toEqual({ a: 3, b: 3, c: 2 });
  });
});
