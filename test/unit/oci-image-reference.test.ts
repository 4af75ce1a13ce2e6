import { describe, expect, it } from "vitest";
import { formatImageReference, ImageReferenceError, parseImageReference, registryApiHost } from "../../src/oci/image-reference.ts";

const digest = `sha256:${"ab".repeat(32)}`;

describe("parseImageReference", () => {
  it.each([
    ["registry.example.com/acme/web", { host: "registry.example.com", repository: "acme/web" }],
    ["registry.example.com/acme/web:v1.2", { host: "registry.example.com", repository: "acme/web", tag: "v1.2" }],
    ["127.0.0.1:5000/web", { host: "127.0.0.1:5000", repository: "web" }],
    ["localhost/a/b/c:latest", { host: "localhost", repository: "a/b/c", tag: "latest" }],
    ["localhost:5000/a__b.c-d/e", { host: "localhost:5000", repository: "a__b.c-d/e" }],
    [`reg.io/web@${digest}`, { host: "reg.io", repository: "web", digest }],
    [`reg.io/web:v1@${digest}`, { host: "reg.io", repository: "web", tag: "v1", digest }],
    ["[::1]:5000/web", { host: "[::1]:5000", repository: "web" }],
    ["Registry.Example.COM/web", { host: "Registry.Example.COM", repository: "web" }],
  ])("parses %s", (text, ref) => {
    expect(parseImageReference(text)).toEqual(ref);
    expect(formatImageReference(parseImageReference(text))).toBe(text);
  });

  it.each([
    ["", /empty/],
    ["web", /registry host/],
    ["acme/web", /not a registry host/],
    ["reg.io/Web", /bad repository/],
    ["reg.io/web/", /bad repository/],
    ["reg.io//web", /bad repository/],
    ["reg.io/-web", /bad repository/],
    ["reg.io/web:", /bad tag/],
    ["reg.io/web:-x", /bad tag/],
    [`reg.io/web:${"t".repeat(129)}`, /bad tag/],
    ["reg.io/web@sha256:abc", /digest/],
    [`reg.io/web@sha512:${"a".repeat(128)}`, /digest/],
    [`reg.io/web@sha256:${"A".repeat(64)}`, /digest/],
    ["reg.io:99999/web", /not a registry host/],
    ["-reg.io/web", /not a registry host/],
    ["reg io/web", /not a valid reference/],
    [`reg.io/${"a".repeat(250)}`, /longer than 255/],
  ])("rejects %s", (text, error) => {
    expect(() => parseImageReference(text)).toThrow(ImageReferenceError);
    expect(() => parseImageReference(text)).toThrow(error);
  });

  it("names the field in errors", () => {
    expect(() => parseImageReference("web", "spec.image.repository")).toThrow(/^spec.image.repository "web"/);
  });
});

describe("registryApiHost", () => {
  it("maps Docker Hub to its API host and leaves others alone", () => {
    expect(registryApiHost("docker.io")).toBe("registry-1.docker.io");
    expect(registryApiHost("127.0.0.1:5000")).toBe("127.0.0.1:5000");
  });
});
