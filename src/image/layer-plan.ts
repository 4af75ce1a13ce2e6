// PURE: groups a closure into at most `maxLayers` layers.
//
// Popularity of a store path = the number of other paths in the image's closure that depend on it,
// directly or transitively. Widely shared paths (glibc, ...) are the most popular and go to the
// bottom layers, one path per layer, because they change least often and are shared between images.
// When there are more paths than layers, the least popular ones are merged into one layer. The
// app's own root path(s) always get the LAST layer alone, so a change to the app re-creates one
// layer. Ties are broken by path name, so the plan is a function of the closure only.
import type { ClosurePath } from "./path-info.ts";

const DEFAULT_MAX_LAYERS = 100;

type PlannedLayerKind = "popular" | "merged" | "app";

export interface PlannedLayer {
  /** Store paths in this layer, sorted. */
  paths: string[];
  /** Sum of their NAR sizes (close to the uncompressed tar size; used for progress). */
  narSize: number;
  kind: PlannedLayerKind;
}

export interface LayerPlan {
  /** Bottom first: the order of the image's layers. */
  layers: PlannedLayer[];
  /** Popularity of each non-root path in the image (for diagnostics and tests). */
  popularity: Map<string, number>;
}

export interface LayerPlanOptions {
  maxLayers?: number;
}

export class LayerPlanError extends Error {
  override name = "LayerPlanError";
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Counts, for every node, how many distinct nodes reach it through `references` (its dependents).
 * Bitsets over node indices; processed dependents-first (Kahn order on the reversed graph), with a
 * fixpoint loop so that even an (invalid for Nix) reference cycle cannot give a wrong count.
 */
function dependentCounts(paths: string[], refs: number[][]): number[] {
  const n = paths.length;
  const words = Math.ceil(n / 32);
  const sets = Array.from({ length: n }, () => new Uint32Array(words));
  const referrers: number[][] = Array.from({ length: n }, () => []);
  const pendingReferrers = new Array<number>(n).fill(0);
  for (let i = 0; i < n; i++) {
    for (const j of refs[i]!) {
      referrers[j]!.push(i);
      pendingReferrers[j]!++;
    }
  }
  const order: number[] = [];
  const queue: number[] = [];
  for (let i = 0; i < n; i++) if (pendingReferrers[i] === 0) queue.push(i);
  while (queue.length > 0) {
    const i = queue.shift()!;
    order.push(i);
    for (const j of refs[i]!) if (--pendingReferrers[j]! === 0) queue.push(j);
  }
  const seen = new Set(order);
  for (let i = 0; i < n; i++) if (!seen.has(i)) order.push(i);

  let changed = true;
  while (changed) {
    changed = false;
    for (const j of order) {
      const set = sets[j]!;
      for (const i of referrers[j]!) {
        const from = sets[i]!;
        const bit = (1 << (i & 31)) >>> 0;
        const w = i >>> 5;
        if ((set[w]! & bit) === 0) {
          set[w] = (set[w]! | bit) >>> 0;
          changed = true;
        }
        for (let k = 0; k < words; k++) {
          const merged = (set[k]! | from[k]!) >>> 0;
          if (merged !== set[k]) {
            set[k] = merged;
            changed = true;
          }
        }
      }
    }
  }
  return sets.map((set, i) => {
    let count = 0;
    for (let k = 0; k < words; k++) {
      let v = set[k]!;
      while (v !== 0) {
        v &= v - 1;
        count++;
      }
    }
    // A path never counts as its own dependent (cycles through itself excepted above).
    if ((set[i >>> 5]! & (1 << (i & 31))) !== 0) count--;
    return count;
  });
}

/**
 * Plans the layers of the image made of the closure of `roots`. Paths of `closure` that the roots
 * do not reach are left out; a reference to a path missing from `closure` is an error.
 */
export function planLayers(closure: readonly ClosurePath[], roots: readonly string[], options: LayerPlanOptions = {}): LayerPlan {
  const maxLayers = options.maxLayers ?? DEFAULT_MAX_LAYERS;
  if (!Number.isSafeInteger(maxLayers) || maxLayers < 1) {
    throw new LayerPlanError(`maxLayers must be a positive integer (got ${maxLayers})`);
  }
  if (roots.length === 0) throw new LayerPlanError("no root store path given");

  const byPath = new Map<string, ClosurePath>();
  for (const p of closure) {
    if (byPath.has(p.path)) throw new LayerPlanError(`closure lists ${p.path} twice`);
    byPath.set(p.path, p);
  }
  const rootSet = new Set(roots);
  for (const r of rootSet) if (!byPath.has(r)) throw new LayerPlanError(`root ${r} is not in the closure`);

  // The closure of the roots, in a deterministic order.
  const reachable = new Set<string>();
  const stack = [...rootSet].sort(byName);
  while (stack.length > 0) {
    const p = stack.pop()!;
    if (reachable.has(p)) continue;
    reachable.add(p);
    const info = byPath.get(p);
    if (info === undefined) throw new LayerPlanError(`closure is incomplete: ${p} is referenced but missing`);
    for (const r of info.references) if (!reachable.has(r)) stack.push(r);
  }
  const paths = [...reachable].sort(byName);
  const index = new Map(paths.map((p, i) => [p, i]));
  const refs = paths.map((p) => [
    ...new Set(
      byPath
        .get(p)!
        .references.filter((r) => r !== p)
        .map((r) => index.get(r)!),
    ),
  ]);
  const counts = dependentCounts(paths, refs);

  const popularity = new Map<string, number>();
  const others: string[] = [];
  paths.forEach((p, i) => {
    if (rootSet.has(p)) return;
    popularity.set(p, counts[i]!);
    others.push(p);
  });
  others.sort((a, b) => popularity.get(b)! - popularity.get(a)! || byName(a, b));

  const narSizeOf = (group: string[]) => group.reduce((sum, p) => sum + byPath.get(p)!.narSize, 0);
  const layer = (group: string[], kind: PlannedLayerKind): PlannedLayer => {
    const sorted = [...group].sort(byName);
    return { paths: sorted, narSize: narSizeOf(sorted), kind };
  };

  if (maxLayers === 1) return { layers: [layer(paths, "app")], popularity };

  const layers: PlannedLayer[] = [];
  const slots = maxLayers - 1; // the last layer is the app's
  if (others.length <= slots) {
    for (const p of others) layers.push(layer([p], "popular"));
  } else {
    const single = slots - 1; // one slot goes to the merged remainder
    for (const p of others.slice(0, single)) layers.push(layer([p], "popular"));
    layers.push(layer(others.slice(single), "merged"));
  }
  layers.push(layer([...rootSet], "app"));
  return { layers, popularity };
}
