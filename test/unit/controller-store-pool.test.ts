import { describe, expect, it } from "vitest";
import {
  chooseStoreVolume,
  isFree,
  leaseAnnotations,
  leaseGraceMs,
  storeVolumeClaim,
  storeVolumeView,
  volumeHolders,
  type StoreVolumeView,
} from "../../src/controller/store-pool.ts";
import { now, testConfig, volume } from "./controller-fixtures.ts";

const ago = (ms: number) => new Date(now.getTime() - ms).toISOString();

describe("isFree", () => {
  const jobs = new Map([
    ["a-build-1", true], // running
    ["b-build-2", false], // finished
  ]);
  const table: [string, StoreVolumeView, boolean][] = [
    ["no lease", volume("v"), true],
    ["holder running", volume("v", "a-build-1", ago(3_600_000)), false],
    ["holder finished", volume("v", "b-build-2", ago(1000)), true],
    ["holder not visible, lease fresh", volume("v", "c-build-1", ago(1000)), false],
    ["holder not visible, lease just inside the grace period", volume("v", "c-build-1", ago(leaseGraceMs - 1)), false],
    ["holder not visible, lease exactly at the grace period", volume("v", "c-build-1", ago(leaseGraceMs)), true],
    ["holder not visible, lease old (Job deleted)", volume("v", "c-build-1", ago(leaseGraceMs + 1)), true],
    ["holder not visible, no lease time", volume("v", "c-build-1"), true],
    ["holder not visible, unreadable lease time", volume("v", "c-build-1", "yesterday"), true],
    ["holder not visible, lease time in the future (clock skew)", volume("v", "c-build-1", ago(-60_000)), false],
  ];
  it.each(table)("%s -> %s", (_name, v, free) => {
    expect(isFree(v, jobs, now)).toBe(free);
  });
});

describe("chooseStoreVolume", () => {
  const running = new Map([
    ["x-build-1", true],
    ["y-build-1", true],
    ["old-build-1", false],
  ]);

  it("creates niximage-store-0 in an empty namespace", () => {
    expect(chooseStoreVolume([], running, 2, now)).toEqual({ kind: "create", name: "niximage-store-0" });
  });

  it("leases the first free volume by name", () => {
    const vs = [volume("niximage-store-1"), volume("niximage-store-0", "old-build-1", ago(1000))];
    expect(chooseStoreVolume(vs, running, 2, now)).toEqual({ kind: "lease", volume: vs[1] });
  });

  it("prefers the given (warm) volume when it is free", () => {
    const vs = [volume("niximage-store-0"), volume("niximage-store-1")];
    expect(chooseStoreVolume(vs, running, 2, now, "niximage-store-1")).toEqual({ kind: "lease", volume: vs[1] });
  });

  it("ignores the preference when that volume is held", () => {
    const vs = [volume("niximage-store-0"), volume("niximage-store-1", "x-build-1", ago(10))];
    expect(chooseStoreVolume(vs, running, 2, now, "niximage-store-1")).toEqual({ kind: "lease", volume: vs[0] });
  });

  it("a free volume beats creating one", () => {
    const vs = [volume("niximage-store-1")];
    expect(chooseStoreVolume(vs, running, 3, now)).toEqual({ kind: "lease", volume: vs[0] });
  });

  it("creates the lowest missing index when all existing volumes are held", () => {
    const vs = [volume("niximage-store-0", "x-build-1", ago(10)), volume("niximage-store-2", "y-build-1", ago(10))];
    expect(chooseStoreVolume(vs, running, 3, now)).toEqual({ kind: "create", name: "niximage-store-1" });
  });

  it("waits when the pool is full and every volume is held", () => {
    const vs = [volume("niximage-store-0", "x-build-1", ago(10)), volume("niximage-store-1", "y-build-1", ago(10))];
    const choice = chooseStoreVolume(vs, running, 2, now);
    expect(choice.kind).toBe("wait");
    expect(choice.kind === "wait" && choice.message).toContain("all 2 store volumes");
  });

  it("a fresh lease of a Job the cache does not show yet keeps its volume taken", () => {
    const vs = [volume("niximage-store-0", "z-build-1", ago(5_000))];
    expect(chooseStoreVolume(vs, running, 1, now).kind).toBe("wait");
    expect(chooseStoreVolume(vs, running, 1, new Date(now.getTime() + leaseGraceMs))).toEqual({ kind: "lease", volume: vs[0] });
  });

  it("after the pool shrank, existing volumes beyond it are still used when free", () => {
    const vs = [volume("niximage-store-0", "x-build-1", ago(10)), volume("niximage-store-3")];
    expect(chooseStoreVolume(vs, running, 1, now)).toEqual({ kind: "lease", volume: vs[1] });
  });
});

describe("store volume objects", () => {
  it("reads the lease from the PVC annotations (empty counts as none)", () => {
    expect(
      storeVolumeView({
        metadata: {
          name: "niximage-store-0",
          resourceVersion: "9",
          annotations: { "niximage.io/lease-holder": "web-build-3", "niximage.io/lease-time": "2026-11-22T10:00:00.000Z" },
        },
      }),
    ).toEqual({
      name: "niximage-store-0",
      resourceVersion: "9",
      holder: "web-build-3",
      leasedAt: "2026-11-22T10:00:00.000Z",
    });
    expect(storeVolumeView({ metadata: { name: "v", resourceVersion: "1", annotations: { "niximage.io/lease-holder": "" } } })).toEqual({
      name: "v",
      resourceVersion: "1",
      holder: undefined,
      leasedAt: undefined,
    });
  });

  it("lease annotations name the holder and the time", () => {
    expect(leaseAnnotations("web-build-3", now)).toEqual({ "niximage.io/lease-holder": "web-build-3", "niximage.io/lease-time": "2026-11-22T10:00:00.000Z" });
  });

  it("a new volume is created leased, labelled, with the configured size, class and access mode", () => {
    const config = testConfig({ store: { size: "50Gi", storageClassName: "fast", accessMode: "ReadWriteOnce" } });
    expect(storeVolumeClaim("shop", "niximage-store-1", "web-build-3", now, config)).toEqual({
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: {
        name: "niximage-store-1",
        namespace: "shop",
        labels: { "niximage.io/store": "true", "app.kubernetes.io/managed-by": "nix-image-operator" },
        annotations: { "niximage.io/lease-holder": "web-build-3", "niximage.io/lease-time": "2026-11-22T10:00:00.000Z" },
      },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "50Gi" } }, storageClassName: "fast" },
    });
    const defaults = storeVolumeClaim("shop", "niximage-store-0", "web-build-1", now, testConfig());
    expect(defaults.spec).toEqual({ accessModes: ["ReadWriteOncePod"], resources: { requests: { storage: "20Gi" } } });
  });
});

describe("volumeHolders: a lease ends only once the holder's pod is gone", () => {
  const volumes = [
    { name: "niximage-store-0", resourceVersion: "1", holder: "web-build-1", leasedAt: "2026-11-22T09:00:00Z" },
    { name: "niximage-store-1", resourceVersion: "1", holder: "gone-build-4", leasedAt: "2026-11-22T09:00:00Z" },
  ];
  const at = new Date("2026-11-22T10:00:00Z");
  it.each([
    ["running Job", true, [], true],
    ["failed Job, pod still terminating", false, ["web-build-1"], true],
    ["failed Job, pod finished", false, [], false],
  ])("%s -> holds %s", (_what, running, active, holds) => {
    const holders = volumeHolders([{ name: "web-build-1", running }], (j) => active.includes(j), volumes);
    expect(holders.get("web-build-1")).toBe(holds);
    expect(isFree(volumes[0]!, holders, at)).toBe(!holds);
  });

  it("a deleted holder Job whose pod still runs keeps the volume past the grace period; without pods it is free", () => {
    expect(
      isFree(
        volumes[1]!,
        volumeHolders([], (j) => j === "gone-build-4", volumes),
        at,
      ),
    ).toBe(false);
    expect(
      isFree(
        volumes[1]!,
        volumeHolders([], () => false, volumes),
        at,
      ),
    ).toBe(true);
  });
});
