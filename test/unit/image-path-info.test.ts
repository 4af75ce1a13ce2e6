import { describe, expect, it } from "vitest";
import { parsePathInfo, parsePathInfoText, PathInfoError } from "../../src/image/path-info.ts";

const app = "/nix/store/zrx1f1v25hjnr1girwq4mhmf777br33v-app";
const lib = "/nix/store/9pysa02kgxiz5iykw8ajvlb0ix04vl1a-libfoo";

// As printed by Nix 2.8 (seen on this machine).
const nix28 = `[{"path":"${lib}","narHash":"sha256-ujNLCRVlCptgUVDolYry2Nh2nclk9Leae1+PvN28g6I=","narSize":664,"references":[],"deriver":"/nix/store/bkl05qz1jkw1d0wkjs32m56rzg0964sr-libfoo.drv","registrationTime":1795261423,"ultimate":true},{"path":"${app}","narHash":"sha256-hoHpQdqH/UXV1ET9iuUz7pigszZgSniEjtShrUG0Blw=","narSize":552,"references":["${lib}"],"deriver":"/nix/store/7dag9bnzgpyx6jkgvd3zkb3lh9v63ica-app.drv","registrationTime":1795261423,"ultimate":true}]`;

// As printed by Nix >= 2.19: keyed by path.
const nix219 = JSON.stringify({
  [app]: { narHash: "sha256-hoHpQdqH/UXV1ET9iuUz7pigszZgSniEjtShrUG0Blw=", narSize: 552, references: [lib, app], deriver: null, signatures: [] },
  [lib]: { narHash: "sha256-ujNLCRVlCptgUVDolYry2Nh2nclk9Leae1+PvN28g6I=", narSize: 664, references: [] },
});

const expected = [
  { path: lib, narSize: 664, narHash: "sha256-ujNLCRVlCptgUVDolYry2Nh2nclk9Leae1+PvN28g6I=", references: [] },
  { path: app, narSize: 552, narHash: "sha256-hoHpQdqH/UXV1ET9iuUz7pigszZgSniEjtShrUG0Blw=", references: [lib] },
];

describe("parsePathInfo", () => {
  it("parses the Nix 2.8 array form", () => {
    expect(parsePathInfoText(nix28)).toEqual(expected);
  });

  it("parses the Nix 2.19+ object form (self-references kept, sorted)", () => {
    const out = parsePathInfoText(nix219);
    expect(out[0]).toEqual(expected[0]);
    expect(out[1]!.references).toEqual([app, lib].sort());
  });

  it("accepts references given as base names", () => {
    const out = parsePathInfo({ [app]: { narSize: 1, references: [lib.slice("/nix/store/".length)] }, [lib]: { narSize: 2, references: [] } });
    expect(out.find((e) => e.path === app)!.references).toEqual([lib]);
  });

  it("keeps a different store directory", () => {
    const out = parsePathInfo([{ path: "/gnu/store/abc-x", narSize: 1, references: ["abc-x"] }]);
    expect(out[0]!.references).toEqual(["/gnu/store/abc-x"]);
  });

  it.each([
    ["an invalid path (null) in the object form", { [app]: null }, /not valid/],
    ["valid: false", [{ path: app, valid: false }], /not valid/],
    ["a missing narSize", [{ path: app, references: [] }], /narSize/],
    ["a negative narSize", [{ path: app, narSize: -1 }], /narSize/],
    ["references not a list", [{ path: app, narSize: 1, references: "x" }], /not a list/],
    ["a non-string reference", [{ path: app, narSize: 1, references: [1] }], /bad reference/],
    ["a relative path", [{ path: "nix/store/x", narSize: 1 }], /absolute/],
    ["an entry without path", [{ narSize: 1 }], /path/],
    [
      "a duplicate",
      [
        { path: app, narSize: 1 },
        { path: app, narSize: 1 },
      ],
      /duplicate/,
    ],
    ["a number", 42, /expected a JSON array/],
  ])("rejects %s", (_what, json, error) => {
    expect(() => parsePathInfo(json)).toThrow(PathInfoError);
    expect(() => parsePathInfo(json)).toThrow(error);
  });

  it("reports invalid JSON without echoing it", () => {
    const text = '[{"path": "SECRET-LOOKING-TEXT"';
    expect(() => parsePathInfoText(text)).toThrow(/not valid JSON \(\d+ characters\)/);
    try {
      parsePathInfoText(text);
    } catch (e) {
      expect((e as Error).message).not.toContain("SECRET");
    }
  });
});
