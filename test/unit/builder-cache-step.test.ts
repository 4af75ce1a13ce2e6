// The cluster binary cache in the builder Job and its pieces: only the cache step holds the
// signing key and credentials; the build step substitutes from the cache with its keys trusted.
import { describe, expect, it } from "vitest";
import { uploadStoreUrl, withStoreParameter } from "../../src/builder/cache-step.ts";
import { parseOperatorConfig } from "../../src/config/operator-config.ts";
import { builderJob, type BuilderJobInput } from "../../src/controller/builder-job.ts";
import { safetyArgs } from "../../src/nix/nix-command.ts";
import { testConfig, testImage } from "./controller-fixtures.ts";

const publicKey = "cache.cluster.local-1:EIMBznL4nGDpN+48ZDSZO2ndB+pb1vtTcjCu9nhVa1M=";
const binaryCache = {
  url: "https://nix-cache.cluster.local",
  uploadUrl: "s3://nix-cache?region=eu-central-1&compression=zstd",
  publicKeys: [publicKey],
  signingKeySecret: { name: "nix-cache-signing" },
  credentialsSecret: { name: "nix-cache-s3", type: "aws" as const },
};

function job(kind: "Image" | "Warm", config = testConfig({ binaryCache })) {
  const input: BuilderJobInput = {
    image: testImage({ warm: { schedule: "0 3 * * *" } }),
    kind,
    number: 1,
    reasons: ["SpecChanged"],
    flake: `github:acme/shop/${"1".repeat(40)}`,
    storeVolume: "niximage-store-0",
    specHash: "0123456789abcdef",
    builderHash: "fedcba9876543210",
    config,
  };
  return builderJob(input).spec!.template.spec!;
}

describe("cluster binary cache in the builder Job", () => {
  it("adds a cache step beside push that alone mounts the signing key and the credentials", () => {
    const pod = job("Image");
    expect(pod.containers.map((c) => c.name)).toEqual(["push", "stream", "cache"]);
    const cache = pod.containers.find((c) => c.name === "cache")!;
    expect(cache.args).toEqual([
      "cache-step",
      "--from",
      "/work/result",
      "--to",
      binaryCache.uploadUrl,
      "--secret-key-file",
      "/var/run/niximage/cache-key/secret-key",
      "--aws-credentials-file",
      "/var/run/niximage/cache-credentials/credentials",
      "--termination-message",
      "/dev/termination-log",
    ]);
    expect(cache.volumeMounts!.map((m) => m.name).sort()).toEqual(["cache-credentials", "cache-key", "cache-tmp", "store", "work"]);
    expect(pod.volumes).toContainEqual({
      name: "cache-key",
      secret: { secretName: "nix-cache-signing", items: [{ key: "secret-key", path: "secret-key" }], defaultMode: 0o400 },
    });
    expect(pod.volumes).toContainEqual({
      name: "cache-credentials",
      secret: { secretName: "nix-cache-s3", items: [{ key: "credentials", path: "credentials" }], defaultMode: 0o400 },
    });
    for (const step of [...pod.initContainers!, ...pod.containers.filter((c) => c.name !== "cache")]) {
      const mounts = (step.volumeMounts ?? []).map((m) => m.name);
      expect(mounts, step.name).not.toContain("cache-key");
      expect(mounts, step.name).not.toContain("cache-credentials");
    }
    expect(cache.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] }, readOnlyRootFilesystem: true });
    expect(pod.automountServiceAccountToken).toBe(false);
  });

  it("the build step substitutes from the cache, trusting its keys; warm builds fill the cache too", () => {
    const build = job("Image").initContainers!.find((c) => c.name === "build")!;
    const args = build.args!;
    expect(args.slice(args.indexOf("--cluster-cache"), args.indexOf("--cluster-cache") + 4)).toEqual([
      "--cluster-cache",
      binaryCache.url,
      "--trusted-public-key",
      publicKey,
    ]);
    expect(job("Warm").containers.map((c) => c.name)).toEqual(["report", "cache"]);
  });

  it("nothing of it without config.binaryCache", () => {
    const pod = job("Image", testConfig());
    expect(pod.containers.map((c) => c.name)).not.toContain("cache");
    expect(pod.initContainers!.find((c) => c.name === "build")!.args).not.toContain("--cluster-cache");
    expect(pod.volumes!.map((v) => v.name)).not.toContain("cache-key");
  });

  it("netrc credentials for https uploads; upload URL defaults to the read URL", () => {
    const config = testConfig({ binaryCache: { ...binaryCache, uploadUrl: undefined, credentialsSecret: { name: "netrc", type: "netrc" } } });
    const args = job("Image", config).containers.find((c) => c.name === "cache")!.args!;
    expect(args).toEqual(expect.arrayContaining(["--to", binaryCache.url, "--netrc-file", "/var/run/niximage/cache-credentials/credentials"]));
  });
});

describe("cluster binary cache settings", () => {
  it("the operator config checks URLs, keys and Secret names", () => {
    expect(parseOperatorConfig({ binaryCache }).binaryCache).toMatchObject({ signingKeySecret: { name: "nix-cache-signing", key: "secret-key" } });
    expect(() => parseOperatorConfig({ binaryCache: { ...binaryCache, url: "https://user:pw@cache" } })).toThrow(/binaryCache.url/);
    expect(() => parseOperatorConfig({ binaryCache: { ...binaryCache, url: "ftp://cache" } })).toThrow(/binaryCache.url/);
    expect(() => parseOperatorConfig({ binaryCache: { ...binaryCache, publicKeys: ["not-a-key"] } })).toThrow(/publicKeys/);
    expect(() => parseOperatorConfig({ binaryCache: { ...binaryCache, publicKeys: [] } })).toThrow(/publicKeys/);
    expect(() => parseOperatorConfig({ binaryCache: { ...binaryCache, signingKeySecret: { name: "Bad_Name" } } })).toThrow(/signingKeySecret/);
    expect(parseOperatorConfig({}).binaryCache).toBeUndefined();
  });

  it("builds trust the cluster cache (https, s3, http), fall back to building when it is down, and refuse credentials in its URL", () => {
    const args = safetyArgs({ clusterSubstituters: ["http://nix-cache.niximage-system.svc:8080"], extraTrustedPublicKeys: [publicKey] });
    const option = (name: string) => args[args.indexOf(name) + 1];
    expect(option("extra-substituters")).toBe("http://nix-cache.niximage-system.svc:8080");
    expect(option("extra-trusted-public-keys")).toBe(publicKey);
    expect(option("fallback")).toBe("true");
    expect(safetyArgs({ clusterSubstituters: ["s3://nix-cache?region=eu-central-1"] })).toContain("s3://nix-cache?region=eu-central-1");
    expect(() => safetyArgs({ clusterSubstituters: ["https://u:p@cache"] })).toThrow(/cluster binary cache/);
    // Spec-level substituters stay https only.
    expect(() => safetyArgs({ extraSubstituters: ["http://cache"] })).toThrow(/https/);
    expect(safetyArgs({})).not.toContain("fallback");
  });

  it("the signing key goes into the store URL's query", () => {
    expect(withStoreParameter("file:///srv/cache", "secret-key", "/k/secret-key")).toBe("file:///srv/cache?secret-key=/k/secret-key");
    expect(withStoreParameter("s3://b?region=x&compression=zstd", "secret-key", "/k/s")).toBe("s3://b?region=x&compression=zstd&secret-key=/k/s");
    // zstd unless the URL picks a compression.
    expect(uploadStoreUrl("file:///srv/cache", "/k/s")).toBe("file:///srv/cache?compression=zstd&secret-key=/k/s");
    expect(uploadStoreUrl("s3://b?compression=xz", "/k/s")).toBe("s3://b?compression=xz&secret-key=/k/s");
  });
});
