import { describe, expect, it } from "vitest";
import { deepEqual, mergePatch } from "../../src/controller/status-patch.ts";

/** RFC 7386 apply, to check that a patch really turns `from` into `to`. */
function apply(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target !== null && typeof target === "object" && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    if (value === null) delete out[key];
    else out[key] = apply(out[key], value);
  }
  return out;
}

describe("mergePatch", () => {
  const table: [string, unknown, unknown, unknown][] = [
    ["unchanged -> undefined", { a: 1, b: { c: [1, 2] } }, { a: 1, b: { c: [1, 2] } }, undefined],
    ["key order does not matter", { a: 1, b: 2 }, { b: 2, a: 1 }, undefined],
    ["changed value", { a: 1, b: 2 }, { a: 1, b: 3 }, { b: 3 }],
    ["added key", { a: 1 }, { a: 1, b: "x" }, { b: "x" }],
    ["removed key -> null", { a: 1, b: 2 }, { a: 1 }, { b: null }],
    ["key set to undefined counts as removed", { a: 1, b: 2 }, { a: 1, b: undefined }, { b: null }],
    ["undefined on both sides: nothing", { a: 1, b: undefined }, { a: 1 }, undefined],
    [
      "nested change",
      { s: { lastBuild: { job: "a", result: "Running" } } },
      { s: { lastBuild: { job: "a", result: "Succeeded" } } },
      { s: { lastBuild: { result: "Succeeded" } } },
    ],
    [
      "nested removal",
      { s: { lastBuild: { job: "a", failure: { step: "build" } } } },
      { s: { lastBuild: { job: "a" } } },
      { s: { lastBuild: { failure: null } } },
    ],
    [
      "arrays are replaced whole",
      { c: [{ type: "Ready", status: "True" }, { type: "Stalled" }] },
      { c: [{ type: "Ready", status: "False" }, { type: "Stalled" }] },
      { c: [{ type: "Ready", status: "False" }, { type: "Stalled" }] },
    ],
    ["shorter array", { c: [1, 2, 3] }, { c: [1, 2] }, { c: [1, 2] }],
    ["object replaced by a scalar", { a: { b: 1 } }, { a: 2 }, { a: 2 }],
    ["scalar replaced by an object", { a: 2 }, { a: { b: 1 } }, { a: { b: 1 } }],
    ["array replaced by an object", { a: [1] }, { a: { b: 1 } }, { a: { b: 1 } }],
    ["from empty", {}, { a: { b: 1 } }, { a: { b: 1 } }],
    ["everything removed", { a: 1, b: { c: 1 } }, {}, { a: null, b: null }],
    ["null to a value", { a: null }, { a: 1 }, { a: 1 }],
  ];
  it.each(table)("%s", (_name, from, to, expected) => {
    const patch = mergePatch(from, to);
    expect(patch).toEqual(expected);
    // Applying the patch gives `to` (minus undefined keys).
    expect(apply(from, patch === undefined ? {} : patch)).toEqual(JSON.parse(JSON.stringify(to)));
  });

  it("top-level non-objects: the new value, or null for undefined", () => {
    expect(mergePatch(1, 2)).toBe(2);
    expect(mergePatch(1, 1)).toBeUndefined();
    expect(mergePatch({ a: 1 }, undefined)).toBeNull();
  });
});

describe("deepEqual", () => {
  it.each([
    [1, 1, true],
    ["a", "b", false],
    [[1, [2]], [1, [2]], true],
    [[1, 2], [2, 1], false],
    [{ a: 1, b: undefined }, { a: 1 }, true],
    [{ a: [] }, { a: {} }, false],
    [null, {}, false],
    [{ a: { b: { c: 1 } } }, { a: { b: { c: 1 } } }, true],
  ])("%j vs %j -> %s", (a, b, equal) => {
    expect(deepEqual(a, b)).toBe(equal);
  });
});
