import { statfs } from "node:fs/promises";
import type { NixCommand } from "./nix-command.ts";

/**
 * Garbage collection of a store volume once it passes a usage threshold. Runs after the build
 * registered its GC roots, so the current and the last N closures of every image stay; what
 * no root reaches goes. Below the threshold nothing runs: a warm store is the point.
 */
export interface StoreGcResult {
  usedPercent: number;
  collected: boolean;
  /** Bytes freed, as `nix-store --gc` reports them (collected only). */
  freedBytes?: number;
}

/** Used share of the filesystem holding `path`, in percent (what `df` calls Use%). */
export async function usedPercent(path: string): Promise<number> {
  const fs = await statfs(path);
  const usable = fs.blocks - fs.bfree + fs.bavail;
  return usable === 0 ? 0 : Math.round(((fs.blocks - fs.bfree) / usable) * 1000) / 10;
}

const units: Record<string, number> = { KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 };

/** "123 store paths deleted, 45.67 MiB freed" -> bytes. */
export function parseFreed(text: string): number | undefined {
  const match = /([\d.]+) (KiB|MiB|GiB|TiB) freed/.exec(text);
  return match ? Math.round(Number(match[1]) * units[match[2]!]!) : undefined;
}

export async function collectGarbageIfFull(
  nix: NixCommand,
  options: { storeDir?: string; thresholdPercent: number; signal?: AbortSignal },
): Promise<StoreGcResult> {
  const used = await usedPercent(options.storeDir ?? "/nix/store");
  if (used < options.thresholdPercent) return { usedPercent: used, collected: false };
  const run = await nix.runStore(["--gc"], { what: "collect garbage in the store", ...(options.signal ? { signal: options.signal } : {}) });
  const freed = parseFreed([run.stdout, ...run.warnings, run.progress.lastLine ?? ""].join("\n"));
  return { usedPercent: used, collected: true, ...(freed !== undefined ? { freedBytes: freed } : {}) };
}
