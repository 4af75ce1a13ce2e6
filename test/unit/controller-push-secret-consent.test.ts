import { describe, expect, it } from "vitest";
import { pushSecretConsent } from "../../src/controller/push-secret-consent.ts";

const allowed = (value: string | undefined, image = "web") =>
  pushSecretConsent("regcred", value === undefined ? undefined : { "niximage.io/allowed-images": value }, image).allowed;

describe("pushSecretConsent", () => {
  it.each([
    ["web", true],
    ["web,api", true],
    [" api , web ", true],
    ["*", true],
    ["api", false],
    ["webx", false],
    ["", false],
    [",", false],
  ] as const)("annotation %j -> %s", (value, want) => expect(allowed(value)).toBe(want));

  it("no annotation: not allowed, and the message says how the Secret's owner opts in", () => {
    const c = pushSecretConsent("regcred", { other: "x" }, "web");
    expect(c).toEqual({
      allowed: false,
      message:
        "Secret regcred (spec.image.pushSecretRef) has not opted in to NixImages: its owner lets this one push with it by `kubectl annotate secret regcred niximage.io/allowed-images=web --overwrite`",
    });
  });

  it("another image named: the message lists who may", () => {
    const c = pushSecretConsent("regcred", { "niximage.io/allowed-images": "api,admin" }, "web");
    expect(c.allowed).toBe(false);
    expect(!c.allowed && c.message).toContain("allows only api, admin (annotation niximage.io/allowed-images), not web");
    expect(!c.allowed && c.message).toContain("niximage.io/allowed-images=api,admin,web");
  });
});
