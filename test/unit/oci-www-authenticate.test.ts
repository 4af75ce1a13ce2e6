import { describe, expect, it } from "vitest";
import { findChallenge, parseWwwAuthenticate } from "../../src/oci/www-authenticate.ts";

describe("parseWwwAuthenticate", () => {
  it.each([
    [
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"',
      [{ scheme: "bearer", params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:samalba/my-app:pull,push" } }],
    ],
    ['Basic realm="Registry Realm"', [{ scheme: "basic", params: { realm: "Registry Realm" } }]],
    ["Basic realm=simple", [{ scheme: "basic", params: { realm: "simple" } }]],
    [
      'Bearer realm="https://a/token", error="insufficient_scope", Basic realm="x"',
      [
        { scheme: "bearer", params: { realm: "https://a/token", error: "insufficient_scope" } },
        { scheme: "basic", params: { realm: "x" } },
      ],
    ],
    ['BEARER Realm = "https://a/t" , Service="s\\"q"', [{ scheme: "bearer", params: { realm: "https://a/t", service: 's"q' } }]],
    ["Negotiate", [{ scheme: "negotiate", params: {} }]],
    ["", []],
    ['realm="orphan"', []],
  ])("parses %j", (header, challenges) => {
    expect(parseWwwAuthenticate(header)).toEqual(challenges);
  });

  it("reads several header values", () => {
    const c = parseWwwAuthenticate(['Basic realm="a"', 'Bearer realm="https://t",service="s"']);
    expect(findChallenge(c, "Bearer")?.params).toEqual({ realm: "https://t", service: "s" });
    expect(findChallenge(c, "basic")?.params.realm).toBe("a");
    expect(parseWwwAuthenticate(undefined)).toEqual([]);
  });

  it("never throws on junk", () => {
    for (const junk of ['"', "=", ",,,", 'Bearer realm="unterminated', "Bearer ===", "\u0000\u00ff"]) {
      expect(() => parseWwwAuthenticate(junk)).not.toThrow();
    }
  });
});
