// The global build cap (concurrency.builds), shared fairly between namespaces. Pure.
//
// A namespace may start a build while fewer than `cap` builds run in total AND it runs fewer than
// its fair share: ceil(cap / namespaces competing), where a namespace competes when it has a
// build running or one waiting for a slot. Alone, a namespace may use every slot (the cap is
// never left idle for fairness' sake); as soon as another namespace waits, the first starts no
// more builds beyond its share, so the slots its builds free go to the others. Running builds are
// never stopped.

export interface BuildSlots {
  /** concurrency.builds */
  cap: number;
  /** Builds running in all namespaces (with ones just created). */
  running: number;
  /** Builds running per namespace. */
  runningByNamespace: ReadonlyMap<string, number>;
  /** Namespaces with a build waiting for a slot (recently). */
  waitingNamespaces: ReadonlySet<string>;
}

export type SlotDecision = { ok: true } | { ok: false; message: string };

export function buildSlotFor(namespace: string, slots: BuildSlots): SlotDecision {
  const { cap, running } = slots;
  if (running >= cap) return { ok: false, message: `${running} builds are running, the operator's limit (concurrency.builds) is ${cap}` };
  const competing = new Set<string>([namespace, ...slots.waitingNamespaces]);
  for (const [ns, count] of slots.runningByNamespace) if (count > 0) competing.add(ns);
  const share = Math.max(1, Math.ceil(cap / competing.size));
  const mine = slots.runningByNamespace.get(namespace) ?? 0;
  if (mine >= share) {
    return {
      ok: false,
      message: `namespace ${namespace} runs ${mine} of the ${cap} build slots (concurrency.builds); its fair share while ${competing.size} namespaces want builds is ${share}`,
    };
  }
  return { ok: true };
}
