// Store GC decisions. The collecting path runs a stand-in nix-store: a real `nix-store --gc`
// here would delete unrooted paths other tests of the same run are still using.
import { chmod, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { NixCommand } from "../../src/nix/nix-command.ts";
import { collectGarbageIfFull, parseFreed, usedPercent } from "../../src/nix/store-gc.ts";

describe("store GC", () => {
  it.each([
    ["12 store paths deleted, 45.50 MiB freed", 47_710_208],
    ["0 store paths deleted, 0.00 MiB freed", 0],
    ["3 store paths deleted, 1.25 GiB freed", 1_342_177_280],
    ["no summary", undefined],
  ])("reads %j", (text, bytes) => {
    expect(parseFreed(text)).toBe(bytes);
  });

  it("measures the filesystem like df", async () => {
    const used = await usedPercent(tmpdir());
    expect(used).toBeGreaterThanOrEqual(0);
    expect(used).toBeLessThanOrEqual(100);
  });

  async function fakeNixStore() {
    const dir = await mkdtemp(join(tmpdir(), "nio-gc-"));
    const bin = join(dir, "nix-store");
    await writeFile(bin, `#!/bin/sh\necho "$@" > ${dir}/argv\necho "7 store paths deleted, 2.00 MiB freed"\n`);
    await chmod(bin, 0o755);
    return { dir, nix: new NixCommand({ nixStoreBin: bin }) };
  }

  it("does nothing below the threshold", async () => {
    const { dir, nix } = await fakeNixStore();
    const result = await collectGarbageIfFull(nix, { storeDir: tmpdir(), thresholdPercent: 100 });
    expect(result.collected).toBe(false);
    await expect(readFile(join(dir, "argv"), "utf8")).rejects.toThrow(/ENOENT/);
  });

  it("runs nix-store --gc above it and reports what was freed", async () => {
    const { dir, nix } = await fakeNixStore();
    const result = await collectGarbageIfFull(nix, { storeDir: tmpdir(), thresholdPercent: 1 });
    expect(result).toMatchObject({ collected: true, freedBytes: 2 * 2 ** 20 });
    expect(await readFile(join(dir, "argv"), "utf8")).toMatch(/--gc/);
  });
});
