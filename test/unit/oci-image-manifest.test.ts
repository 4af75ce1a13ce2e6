import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { buildImageConfig, buildImageManifest, ImageManifestError, layerMediaType, normaliseExposedPort } from "../../src/oci/image-manifest.ts";
import type { Digest } from "../../src/oci/digest.ts";

const d = (c: string) => `sha256:${c.repeat(64)}` as Digest;
const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("buildImageConfig", () => {
  it("serialises a minimal config to fixed bytes with the epoch+1s creation time", () => {
    const c = buildImageConfig({ diffIds: [d("a"), d("b")] });
    expect(c.bytes.toString()).toBe(
      `{"created":"1970-01-01T00:00:01Z","architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["${d("a")}","${d("b")}"]}}`,
    );
    expect(c.mediaType).toBe("application/vnd.oci.image.config.v1+json");
    expect(c.digest).toBe(sha(c.bytes));
    expect(c.size).toBe(c.bytes.length);
  });

  it("writes the runtime config in a fixed key order, ports normalised and sorted, labels sorted, env order kept", () => {
    const c = buildImageConfig({
      diffIds: [d("a")],
      config: {
        cmd: ["--serve"],
        entrypoint: ["/nix/store/x-app/bin/app"],
        env: ["PATH=/bin", "A=1"],
        workingDir: "/data",
        user: "1000:1000",
        exposedPorts: ["8080", 53 as number, "53/udp", "8080/tcp"],
        labels: { z: "1", a: "2" },
      },
      created: "2024-05-06T07:08:09Z",
      architecture: "arm64",
    });
    const json = JSON.parse(c.bytes.toString()) as Record<string, unknown>;
    expect(Object.keys(json)).toEqual(["created", "architecture", "os", "config", "rootfs"]);
    expect(c.bytes.toString()).toContain(
      `"config":{"User":"1000:1000","ExposedPorts":{"53/tcp":{},"53/udp":{},"8080/tcp":{}},"Env":["PATH=/bin","A=1"],"Entrypoint":["/nix/store/x-app/bin/app"],"Cmd":["--serve"],"WorkingDir":"/data","Labels":{"a":"2","z":"1"}}`,
    );
    expect(json.created).toBe("2024-05-06T07:08:09Z");
    expect(json.architecture).toBe("arm64");
  });

  it("gives equal bytes for equal input regardless of map insertion order", () => {
    const one = buildImageConfig({ diffIds: [d("a")], config: { labels: { a: "1", b: "2" } } });
    const two = buildImageConfig({ diffIds: [d("a")], config: { labels: { b: "2", a: "1" } } });
    expect(two.bytes.equals(one.bytes)).toBe(true);
  });

  it("adds one history entry per layer when asked", () => {
    const c = buildImageConfig({ diffIds: [d("a"), d("b")], historyCreatedBy: "nix-image-operator" });
    expect((JSON.parse(c.bytes.toString()) as { history: unknown[] }).history).toEqual([
      { created: "1970-01-01T00:00:01Z", created_by: "nix-image-operator" },
      { created: "1970-01-01T00:00:01Z", created_by: "nix-image-operator" },
    ]);
  });

  it.each([
    [{ diffIds: ["sha256:short" as Digest] }, /diff_id/],
    [{ diffIds: [d("a")], config: { env: ["NOEQUALS"] } }, /NAME=value/],
    [{ diffIds: [d("a")], config: { exposedPorts: ["70000"] } }, /exposed port/],
    [{ diffIds: [d("a")], created: "yesterday" }, /RFC 3339/],
  ])("rejects bad input %#", (input, error) => {
    expect(() => buildImageConfig(input)).toThrow(error);
  });
});

describe("normaliseExposedPort", () => {
  it.each([
    ["80", "80/tcp"],
    [443, "443/tcp"],
    ["53/UDP", "53/udp"],
    ["9000/sctp", "9000/sctp"],
  ])("%s -> %s", (input, out) => expect(normaliseExposedPort(input)).toBe(out));
  it.each(["0", "http", "80/icmp", "-1", "80/"])("rejects %s", (input) => expect(() => normaliseExposedPort(input)).toThrow(ImageManifestError));
});

describe("buildImageManifest", () => {
  it("serialises the OCI manifest once; the digest is of exactly those bytes", () => {
    const m = buildImageManifest({
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d("c"), size: 123 },
      layers: [
        { mediaType: layerMediaType("none"), digest: d("a"), size: 1024 },
        { mediaType: layerMediaType("gzip"), digest: d("b"), size: 10 },
      ],
    });
    expect(m.bytes.toString()).toBe(
      `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
        `"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"${d("c")}","size":123},` +
        `"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"${d("a")}","size":1024},` +
        `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"${d("b")}","size":10}]}`,
    );
    expect(m.digest).toBe(sha(m.bytes));
    expect(m.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
  });

  it("writes annotations sorted", () => {
    const m = buildImageManifest({
      config: { mediaType: "x", digest: d("c"), size: 1 },
      layers: [],
      annotations: { "org.opencontainers.image.revision": "abc", "org.opencontainers.image.created": "x" },
    });
    expect(m.bytes.toString()).toMatch(/"annotations":\{"org.opencontainers.image.created":"x","org.opencontainers.image.revision":"abc"\}\}$/);
  });

  it("rejects bad descriptors", () => {
    expect(() => buildImageManifest({ config: { mediaType: "x", digest: d("c"), size: -1 }, layers: [] })).toThrow(/size/);
    expect(() => buildImageManifest({ config: { mediaType: "x", digest: "md5:x" as Digest, size: 1 }, layers: [] })).toThrow(/digest/);
  });
});
