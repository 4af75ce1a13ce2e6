import { describe, expect, it } from "vitest";
import { parseRegistryErrors, redactSecrets, RegistryError } from "../../src/oci/registry-error.ts";

describe("parseRegistryErrors", () => {
  it("reads the distribution error list", () => {
    const body = JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown to registry", detail: "sha256:..." }] });
    expect(parseRegistryErrors(Buffer.from(body))).toEqual([{ code: "BLOB_UNKNOWN", message: "blob unknown to registry" }]);
  });

  it("yields nothing for bodies that are not the documented JSON (never echoing them)", () => {
    expect(parseRegistryErrors(Buffer.from("<html>Authorization: Basic dXNlcjpwYXNz</html>"))).toEqual([]);
    expect(parseRegistryErrors('{"errors": "nope"}')).toEqual([]);
    expect(parseRegistryErrors("null")).toEqual([]);
    expect(parseRegistryErrors(undefined)).toEqual([]);
    expect(parseRegistryErrors("")).toEqual([]);
  });

  it("redacts known secrets, strips control characters and clips long messages", () => {
    const body = JSON.stringify({ errors: [{ code: "DENIED", message: `user bob password hunter22 denied\nforged line ${"x".repeat(400)}` }] });
    const [e] = parseRegistryErrors(body, ["hunter22"]);
    expect(e!.code).toBe("DENIED");
    expect(e!.message).not.toContain("hunter22");
    expect(e!.message).toContain("[redacted]");
    expect(e!.message).not.toContain("\n");
    expect(e!.message.length).toBeLessThanOrEqual(301);
  });

  it("fills in a missing code", () => {
    expect(parseRegistryErrors('{"errors":[{"message":"m"}]}')).toEqual([{ code: "UNKNOWN", message: "m" }]);
  });
});

describe("RegistryError", () => {
  it("says what failed, the status, the registry's codes and our reason", () => {
    const e = new RegistryError({
      operation: "PUT manifest acme/web:v1",
      host: "reg.io",
      status: 400,
      errors: [{ code: "MANIFEST_BLOB_UNKNOWN", message: "blob unknown to registry" }],
      reason: "check the layers",
    });
    expect(e.message).toBe("registry reg.io: PUT manifest acme/web:v1 failed: HTTP 400: MANIFEST_BLOB_UNKNOWN: blob unknown to registry: check the layers");
    expect(e.hasCode("MANIFEST_BLOB_UNKNOWN")).toBe(true);
    expect(e.status).toBe(400);
  });

  it("redactSecrets replaces every occurrence and ignores very short secrets", () => {
    expect(redactSecrets("a tok123 b tok123", ["tok123", "a"])).toBe("a [redacted] b [redacted]");
  });
});
