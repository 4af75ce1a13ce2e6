// pushDockerArchive against an in-memory registry: one pass over the archive, layers in manifest
// order, a re-push with the layer cache uploads nothing, a stale cache entry (the archive changed
// under the same store path) is detected by the digest check and the archive is read again.
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { archiveEntryKey, configWithLabels, pushDockerArchive } from "../../src/builder/push-archive.ts";
import { MemoryLayerCache } from "../../src/image/layer-cache.ts";
import type { RegistryPusher } from "../../src/image/push-closure.ts";
import type { Digest } from "../../src/oci/digest.ts";
import type { BlobInfo, BlobStreamSource } from "../../src/oci/registry-client.ts";
import { createLogger } from "../../src/log/logger.ts";
import { dockerArchive, layerTar } from "./image-formats-tar-fixture.ts";

const sha = (b: Buffer): Digest => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

class FakeRegistry {
  readonly host = "registry.test:5000";
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, Buffer>();
  uploads = 0;
  hasBlob(_repo: string, digest: Digest): Promise<BlobInfo | undefined> {
    const b = this.blobs.get(digest);
    return Promise.resolve(b ? { digest, size: b.length } : undefined);
  }
  mountBlob(): Promise<boolean> {
    return Promise.resolve(false);
  }
  uploadBlob(_repo: string, bytes: Buffer): Promise<BlobInfo> {
    this.uploads++;
    this.blobs.set(sha(bytes), bytes);
    return Promise.resolve({ digest: sha(bytes), size: bytes.length });
  }
  async uploadBlobStream<T extends BlobInfo>(_repo: string, source: BlobStreamSource<T>): Promise<T> {
    const { stream, result } = source.open();
    const bytes = await collect(stream);
    const info = await result;
    if (info.digest !== sha(bytes) || info.size !== bytes.length) throw new Error("digest/size mismatch");
    this.uploads++;
    this.blobs.set(info.digest, bytes);
    return info;
  }
  putManifest(_repo: string, ref: string, m: { bytes: Buffer }): Promise<Digest> {
    this.manifests.set(ref, m.bytes);
    return Promise.resolve(sha(m.bytes));
  }
}

let dir = "";
const logger = createLogger({ level: "silent" });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "push-archive-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("pushDockerArchive", () => {
  it("pushes layers in manifest order, then config and manifest; a re-push with the cache uploads nothing", async () => {
    const fx = dockerArchive([layerTar(1, 5000), layerTar(2, 70_000)], { order: "manifest-last" });
    const file = join(dir, "a.tar");
    await writeFile(file, fx.bytes);
    const registry = new FakeRegistry();
    const cache = new MemoryLayerCache();
    const options = {
      registry: registry as unknown as RegistryPusher,
      repository: "acme/web",
      source: { kind: "file" as const, path: file },
      cacheId: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-image.tar",
      cache,
      tags: ["rev-1", "latest"],
      logger,
    };
    const first = await pushDockerArchive(options);
    expect(first.layers).toEqual({ total: 2, pushed: 2, skipped: 0, mounted: 0 });
    expect(first.layerDetails.map((l) => l.digest)).toEqual(fx.diffIds);
    expect(first.configDigest).toBe(sha(fx.configBytes));
    expect(registry.uploads).toBe(3);
    const manifest = JSON.parse(registry.manifests.get("rev-1")!.toString()) as {
      layers: Array<{ digest: string; mediaType: string }>;
      config: { digest: string };
    };
    expect(manifest.layers.map((l) => l.digest)).toEqual(fx.diffIds);
    expect(manifest.layers[0]!.mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
    expect(registry.manifests.get("latest")).toEqual(registry.manifests.get("rev-1"));

    const again = await pushDockerArchive(options);
    expect(again.layers).toEqual({ total: 2, pushed: 0, skipped: 2, mounted: 0 });
    expect(again.digest).toBe(first.digest);
    expect(registry.uploads).toBe(3);
  });

  it("reads the archive again without the cache when an entry's bytes differ from the cached blob", async () => {
    const fx = dockerArchive([layerTar(3, 4000), layerTar(4, 4000)]);
    const file = join(dir, "b.tar");
    await writeFile(file, fx.bytes);
    const registry = new FakeRegistry();
    const cache = new MemoryLayerCache();
    const cacheId = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-stream";
    // A blob the registry has, cached for the first entry, but not what the archive holds now.
    const other = layerTar(99, 4000);
    registry.blobs.set(sha(other), other);
    const firstEntry = `${fx.diffIds[0]!.slice(7)}/layer.tar`;
    await cache.put(archiveEntryKey(cacheId, firstEntry), {
      digest: sha(other),
      size: other.length,
      diffId: sha(other),
      mediaType: "application/vnd.oci.image.layer.v1.tar",
    });
    expect(other.length).toBe(fx.layers[0]!.length);

    const warnings: string[] = [];
    const warnLogger = createLogger({ level: "warn", destination: { write: (s: string) => warnings.push(s) } });
    const result = await pushDockerArchive({
      registry: registry as unknown as RegistryPusher,
      repository: "acme/web",
      source: { kind: "file", path: file },
      cacheId,
      cache,
      tags: [],
      logger: warnLogger,
    });
    expect(result.layerDetails.map((l) => l.digest)).toEqual(fx.diffIds);
    expect(result.layers.pushed).toBe(2);
    expect(registry.blobs.has(fx.diffIds[0]!)).toBe(true);
    expect(warnings.join("")).toContain("the archive differs from the cached one");
    expect((await cache.get(archiveEntryKey(cacheId, firstEntry)))?.digest).toBe(fx.diffIds[0]);
  });

  it("merges labels into the archived config (sorted), keeping its bytes otherwise", () => {
    const bytes = Buffer.from(JSON.stringify({ architecture: "amd64", config: { Entrypoint: ["/x"], Labels: { z: "1" } }, rootfs: {} }));
    const config = JSON.parse(bytes.toString()) as Record<string, unknown>;
    expect(configWithLabels(bytes, config, undefined)).toBe(bytes);
    expect(JSON.parse(configWithLabels(bytes, config, { a: "2" }).toString())).toEqual({
      architecture: "amd64",
      config: { Entrypoint: ["/x"], Labels: { a: "2", z: "1" } },
      rootfs: {},
    });
  });
});
