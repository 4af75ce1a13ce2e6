import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CLOSURE_DIFF_LIMIT, compareVersions, diffClosures, parseDrvName, parseStorePathName } from "../../src/controller/closure-diff.ts";

const NIX32 = "0123456789abcdfghijklmnpqrsvwxyz";
/** A deterministic fake store path hash from a seed. */
function hashOf(seed: string): string {
  let h = 2166136261;
  let out = "";
  for (let i = 0; i < 32; i++) {
    for (const c of seed + i) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
    out += NIX32[h % 32];
  }
  return out;
}
const sp = (name: string, seed = "1") => `/nix/store/${hashOf(name + "@" + seed)}-${name}`;

describe("parseDrvName (as builtins.parseDrvName)", () => {
  const table: [string, string, string][] = [
    ["hello-2.12.1", "hello", "2.12.1"],
    ["nix-2.8.0", "nix", "2.8.0"],
    ["python3.11-requests-2.31.0", "python3.11-requests", "2.31.0"],
    ["apache-httpd-2.0.48", "apache-httpd", "2.0.48"],
    ["source", "source", ""],
    ["bash-interactive-5.2p26", "bash-interactive", "5.2p26"],
    ["foo-bar-baz", "foo-bar-baz", ""],
    ["gcc-wrapper-13.2.0", "gcc-wrapper", "13.2.0"],
    ["x-_y", "x", "_y"], // not a letter after '-' starts the version, as in Nix
    ["x--1", "x", "-1"],
    ["trailing-", "trailing-", ""],
    ["-1.0", "", "1.0"],
    ["glibc-2.38-44", "glibc", "2.38-44"],
    ["nodejs-18.19.0-unstable-2024", "nodejs", "18.19.0-unstable-2024"],
    ["libfoo-éa", "libfoo", "éa"], // non-ASCII is not a letter for Nix (C locale)
  ];
  it.each(table)("%s -> %s / %s", (input, name, version) => {
    expect(parseDrvName(input)).toEqual({ name, version });
  });
});

describe("parseStorePathName", () => {
  const h = hashOf("x");
  const table: [string, { name: string; version: string; output?: string; hash: string }][] = [
    [`/nix/store/${h}-hello-2.12.1`, { hash: h, name: "hello", version: "2.12.1" }],
    [`/nix/store/${h}-hello-2.12.1-man`, { hash: h, name: "hello", version: "2.12.1", output: "man" }],
    [`/nix/store/${h}-glibc-2.38-44-bin`, { hash: h, name: "glibc", version: "2.38-44", output: "bin" }],
    [`/nix/store/${h}-gcc-13.2.0-lib64`, { hash: h, name: "gcc", version: "13.2.0", output: "lib64" }],
    [`/nix/store/${h}-openssl-3.0.12-dev`, { hash: h, name: "openssl", version: "3.0.12", output: "dev" }],
    // No version before the suffix: the suffix is part of the name.
    [`/nix/store/${h}-hook-dev`, { hash: h, name: "hook-dev", version: "" }],
    [`/nix/store/${h}-source`, { hash: h, name: "source", version: "" }],
    // Another store directory, and a bare base name.
    [`/opt/store/${h}-zlib-1.3`, { hash: h, name: "zlib", version: "1.3" }],
    [`${h}-zlib-1.3`, { hash: h, name: "zlib", version: "1.3" }],
    // Not a store path: the whole base name.
    ["/tmp/not-a-store-path-1.0", { hash: "", name: "not-a-store-path", version: "1.0" }],
  ];
  it.each(table)("%s", (path, expected) => {
    expect(parseStorePathName(path)).toMatchObject(expected);
    if (expected.output === undefined) expect(parseStorePathName(path).output).toBeUndefined();
  });
});

describe("compareVersions (as builtins.compareVersions)", () => {
  const less: [string, string][] = [
    ["1.0", "2.3"],
    ["2.1", "2.3"],
    ["2.3", "2.3.1"],
    ["2.3.1", "2.3.2"],
    ["1.9", "1.10"],
    ["2.3pre1", "2.3"],
    ["2.3pre3", "2.3pre12"],
    ["2.3a", "2.3c"],
    ["2.3pre1", "2.3c"],
    ["2.3a", "2.3.1"],
    ["", "1"],
    ["0.9", "1"],
    ["1.0-rc1", "1.0-rc2"],
    ["99999999999999999998", "99999999999999999999"],
  ];
  it.each(less)("%s < %s", (a, b) => {
    expect(compareVersions(a, b)).toBe(-1);
    expect(compareVersions(b, a)).toBe(1);
  });
  it.each([
    ["1.0", "1.0"],
    ["1.0", "1-0"],
    ["2.3", "2.3."],
    ["", ""],
  ])("%s == %s", (a, b) => {
    expect(compareVersions(a, b)).toBe(0);
  });
});

describe("diffClosures", () => {
  it("reports added, removed and changed packages, and rebuilt ones as a count", () => {
    const before = [
      sp("hello-2.12.1"),
      sp("hello-2.12.1-man"),
      sp("glibc-2.38-44"),
      sp("glibc-2.38-44-bin"),
      sp("openssl-3.0.12"),
      sp("zlib-1.3"),
      sp("bash-5.2p26"),
      sp("source", "a"),
      sp("old-tool-0.1"),
    ];
    const after = [
      sp("hello-2.12.1", "rebuilt"), // same version, other hash
      sp("hello-2.12.1-man", "rebuilt"),
      sp("glibc-2.39-52"),
      sp("glibc-2.39-52-bin"),
      sp("openssl-3.0.13"),
      sp("zlib-1.3"), // identical
      sp("bash-5.2p26", "rebuilt"),
      sp("source", "b"), // other source, no version: rebuilt
      sp("curl-8.6.0"),
      sp("curl-8.6.0-bin"),
      sp("new-hook"),
    ];
    expect(diffClosures(before, after)).toEqual({
      added: [
        { name: "curl", to: "8.6.0" },
        { name: "new-hook", to: "" },
      ],
      removed: [{ name: "old-tool", from: "0.1" }],
      changed: [
        { name: "glibc", from: "2.38-44", to: "2.39-52" },
        { name: "openssl", from: "3.0.12", to: "3.0.13" },
      ],
      rebuilt: 3,
      truncated: false,
      totals: { added: 2, removed: 1, changed: 2 },
    });
  });

  const table: [string, string[], string[], Partial<ReturnType<typeof diffClosures>>][] = [
    ["both empty", [], [], { added: [], removed: [], changed: [], rebuilt: 0 }],
    ["from nothing", [], [sp("a-1")], { added: [{ name: "a", to: "1" }] }],
    ["to nothing", [sp("a-1")], [], { removed: [{ name: "a", from: "1" }] }],
    ["identical", [sp("a-1"), sp("b")], [sp("b"), sp("a-1")], { added: [], removed: [], changed: [], rebuilt: 0 }],
    ["duplicates count once", [sp("a-1"), sp("a-1")], [sp("a-1")], { added: [], removed: [], changed: [], rebuilt: 0 }],
    [
      "a second version appears",
      [sp("python3-3.11.8")],
      [sp("python3-3.11.8"), sp("python3-3.12.2")],
      { changed: [{ name: "python3", from: "3.11.8", to: "3.11.8, 3.12.2" }] },
    ],
    ["versions are listed in version order", [sp("x-1.10"), sp("x-1.9")], [sp("x-1.10")], { changed: [{ name: "x", from: "1.9, 1.10", to: "1.10" }] }],
    ["a version where there was none", [sp("tool")], [sp("tool-1.0")], { changed: [{ name: "tool", from: "", to: "1.0" }] }],
    ["only an output added: rebuilt, not changed", [sp("hello-2.12.1")], [sp("hello-2.12.1"), sp("hello-2.12.1-man")], { changed: [], rebuilt: 1 }],
  ];
  it.each(table)("%s", (_name, a, b, expected) => {
    expect(diffClosures(a, b)).toMatchObject(expected);
  });

  it("sorts by name (code points, not locale) and caps each list", () => {
    const names = Array.from({ length: 300 }, (_, i) => `pkg${String(i).padStart(3, "0")}-1.0`);
    const after = [...names].reverse().map((n) => sp(n));
    const d = diffClosures([sp("Zeta-1"), sp("alpha-1")], [...after, sp("Zeta-2"), sp("alpha-2")]);
    expect(d.added).toHaveLength(CLOSURE_DIFF_LIMIT);
    expect(d.added[0]).toEqual({ name: "pkg000", to: "1.0" });
    expect(d.added.at(-1)).toEqual({ name: `pkg${CLOSURE_DIFF_LIMIT - 1}`, to: "1.0" });
    expect(d.truncated).toBe(true);
    expect(d.totals).toEqual({ added: 300, removed: 0, changed: 2 });
    expect(d.changed.map((c) => c.name)).toEqual(["Zeta", "alpha"]);

    const small = diffClosures([], after, { limit: 3 });
    expect(small.added.map((a) => a.name)).toEqual(["pkg000", "pkg001", "pkg002"]);
    expect(small.truncated).toBe(true);
    expect(diffClosures([], after.slice(0, 3), { limit: 3 }).truncated).toBe(false);
    expect(() => diffClosures([], [], { limit: -1 })).toThrow(RangeError);
  });

  describe("properties", () => {
    const name = fc.constantFrom("hello", "glibc", "openssl", "python3", "python3.11-requests", "source", "bash-interactive", "zlib");
    const version = fc.constantFrom("", "1.0", "1.2.3", "2.38-44", "5.2p26", "3.12.2");
    const output = fc.constantFrom("", "-bin", "-dev", "-man");
    const seed = fc.constantFrom("a", "b", "c");
    const path = fc.tuple(name, version, output, seed).map(([n, v, o, s]) => sp(v === "" ? n : `${n}-${v}${o}`, s));
    const closure = fc.array(path, { maxLength: 30 });

    it("diff(a, a) is empty", () => {
      fc.assert(
        fc.property(closure, (a) => {
          expect(diffClosures(a, a)).toEqual({
            added: [],
            removed: [],
            changed: [],
            rebuilt: 0,
            truncated: false,
            totals: { added: 0, removed: 0, changed: 0 },
          });
          expect(diffClosures(a, [...a].reverse())).toEqual(diffClosures(a, a));
        }),
      );
    });

    it("swapping the arguments swaps added and removed, and from and to", () => {
      fc.assert(
        fc.property(closure, closure, (a, b) => {
          const ab = diffClosures(a, b);
          const ba = diffClosures(b, a);
          expect(ba.added).toEqual(ab.removed.map((r) => ({ name: r.name, to: r.from })));
          expect(ba.removed).toEqual(ab.added.map((x) => ({ name: x.name, from: x.to })));
          expect(ba.changed).toEqual(ab.changed.map((c) => ({ name: c.name, from: c.to, to: c.from })));
          expect(ba.rebuilt).toBe(ab.rebuilt);
        }),
      );
    });

    it("every package name of either side is in at most one list, and lists are sorted", () => {
      fc.assert(
        fc.property(closure, closure, (a, b) => {
          const d = diffClosures(a, b);
          const all = [...d.added, ...d.removed, ...d.changed].map((x) => x.name);
          expect(new Set(all).size).toBe(all.length);
          for (const list of [d.added, d.removed, d.changed]) {
            const names = list.map((x) => x.name);
            expect(names).toEqual([...names].sort());
          }
        }),
      );
    });
  });
});
