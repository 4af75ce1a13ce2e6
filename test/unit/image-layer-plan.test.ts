import { describe, expect, it } from "vitest";
import { LayerPlanError, planLayers } from "../../src/image/layer-plan.ts";
import type { ClosurePath } from "../../src/image/path-info.ts";

const S = "/nix/store/";
const p = (name: string) => `${S}${name.padEnd(8, "x")}-${name}`;

/** Closure from a compact spec: name -> references (names), NAR size 100 each unless given. */
function closure(spec: Record<string, string[]>, sizes: Record<string, number> = {}): ClosurePath[] {
  return Object.entries(spec).map(([name, refs]) => ({ path: p(name), narSize: sizes[name] ?? 100, references: refs.map(p) }));
}

// A typical graph: glibc used by everything, openssl by curl and app, curl by app, plus a self-reference.
const typical = closure({
  glibc: ["glibc"],
  zlib: ["glibc"],
  openssl: ["glibc"],
  curl: ["openssl", "zlib", "glibc"],
  app: ["curl", "openssl", "glibc", "app"],
});

const names = (layers: { paths: string[] }[]) => layers.map((l) => l.paths.map((x) => x.slice(x.indexOf("-") + 1)));

describe("planLayers", () => {
  it.each([
    {
      what: "one layer per path when they fit, most popular first, the app last",
      maxLayers: 100,
      layers: [["glibc"], ["openssl"], ["zlib"], ["curl"], ["app"]],
      kinds: ["popular", "popular", "popular", "popular", "app"],
    },
    {
      what: "exactly enough layers",
      maxLayers: 5,
      layers: [["glibc"], ["openssl"], ["zlib"], ["curl"], ["app"]],
      kinds: ["popular", "popular", "popular", "popular", "app"],
    },
    {
      what: "the least popular paths merged when there are too many",
      maxLayers: 4,
      layers: [["glibc"], ["openssl"], ["curl", "zlib"], ["app"]],
      kinds: ["popular", "popular", "merged", "app"],
    },
    {
      what: "two layers: everything but the app merged",
      maxLayers: 2,
      layers: [["curl", "glibc", "openssl", "zlib"], ["app"]],
      kinds: ["merged", "app"],
    },
    {
      what: "one layer: everything together",
      maxLayers: 1,
      layers: [["app", "curl", "glibc", "openssl", "zlib"]],
      kinds: ["app"],
    },
  ])("$what (maxLayers $maxLayers)", ({ maxLayers, layers, kinds }) => {
    const plan = planLayers(typical, [p("app")], { maxLayers });
    expect(names(plan.layers)).toEqual(layers);
    expect(plan.layers.map((l) => l.kind)).toEqual(kinds);
    expect(plan.layers.length).toBeLessThanOrEqual(maxLayers);
  });

  it("counts transitive dependents as popularity (self-references ignored)", () => {
    const plan = planLayers(typical, [p("app")]);
    expect(Object.fromEntries([...plan.popularity].map(([k, v]) => [k.slice(k.indexOf("-") + 1), v]))).toEqual({
      glibc: 4, // zlib, openssl, curl, app
      openssl: 2, // curl, app
      zlib: 2, // curl, app (through curl)
      curl: 1,
    });
  });

  it("sums NAR sizes per layer", () => {
    const plan = planLayers(closure({ a: ["b", "c"], b: [], c: [] }, { a: 5, b: 7, c: 11 }), [p("a")], { maxLayers: 2 });
    expect(plan.layers.map((l) => l.narSize)).toEqual([18, 5]);
  });

  it("breaks popularity ties by path name and is independent of the input order", () => {
    const spec = { a: ["d", "c", "b"], b: [], c: [], d: [] };
    const one = planLayers(closure(spec), [p("a")]);
    const two = planLayers(closure(spec).reverse(), [p("a")]);
    expect(names(one.layers)).toEqual([["b"], ["c"], ["d"], ["a"]]);
    expect(two).toEqual(one);
  });

  it("puts several roots together in the last layer", () => {
    const plan = planLayers(typical, [p("curl"), p("app")], { maxLayers: 10 });
    expect(names(plan.layers)).toEqual([["glibc"], ["openssl"], ["zlib"], ["app", "curl"]]);
  });

  it("gives a root-only closure a single layer", () => {
    expect(names(planLayers(closure({ a: [] }), [p("a")]).layers)).toEqual([["a"]]);
  });

  it("leaves out paths the roots do not reach", () => {
    const plan = planLayers(closure({ a: ["b"], b: [], stray: ["b"] }), [p("a")]);
    expect(names(plan.layers)).toEqual([["b"], ["a"]]);
  });

  it("changing only the app changes only the last layer", () => {
    const v1 = planLayers(typical, [p("app")], { maxLayers: 4 });
    const v2closure = typical.map((c) =>
      c.path === p("app") ? { ...c, path: p("app2"), references: [...c.references.filter((r) => r !== p("app")), p("app2")] } : c,
    );
    const v2 = planLayers(v2closure, [p("app2")], { maxLayers: 4 });
    expect(v2.layers.slice(0, -1)).toEqual(v1.layers.slice(0, -1));
    expect(v2.layers.at(-1)!.paths).toEqual([p("app2")]);
  });

  it("handles a large closure quickly and stays within maxLayers", () => {
    // 3000 paths in a chain-with-fan-out graph.
    const spec: Record<string, string[]> = {};
    for (let i = 0; i < 3000; i++) spec[`n${String(i).padStart(4, "0")}`] = i === 0 ? [] : [`n${String(Math.floor(i / 2)).padStart(4, "0")}`, "n0000"];
    spec.root = Object.keys(spec).slice(1500);
    const started = performance.now();
    const plan = planLayers(closure(spec), [p("root")], { maxLayers: 100 });
    expect(performance.now() - started).toBeLessThan(3000);
    expect(plan.layers).toHaveLength(100);
    expect(names(plan.layers)[0]).toEqual(["n0000"]);
    expect(plan.layers.reduce((s, l) => s + l.paths.length, 0)).toBe(3001);
  });

  it.each([
    { what: "no roots", c: typical, roots: [], maxLayers: 10, error: /no root/ },
    { what: "a root outside the closure", c: typical, roots: [p("nope")], maxLayers: 10, error: /not in the closure/ },
    { what: "an incomplete closure", c: closure({ a: ["b"] }), roots: [p("a")], maxLayers: 10, error: /incomplete/ },
    { what: "maxLayers 0", c: typical, roots: [p("app")], maxLayers: 0, error: /maxLayers/ },
    { what: "a fractional maxLayers", c: typical, roots: [p("app")], maxLayers: 2.5, error: /maxLayers/ },
    { what: "a duplicate path", c: [...typical, typical[0]!], roots: [p("app")], maxLayers: 10, error: /twice/ },
  ])("rejects $what", ({ c, roots, maxLayers, error }) => {
    expect(() => planLayers(c, roots, { maxLayers })).toThrow(LayerPlanError);
    expect(() => planLayers(c, roots, { maxLayers })).toThrow(error);
  });

  it("does not loop on a reference cycle (not valid in Nix, but input is input)", () => {
    const plan = planLayers(closure({ a: ["b"], b: ["c"], c: ["b"] }), [p("a")]);
    expect(names(plan.layers)).toEqual([["b"], ["c"], ["a"]]);
    expect(plan.popularity.get(p("b"))).toBe(2);
  });
});
