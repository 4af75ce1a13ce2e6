/**
 * The delivery ids seen lately (bounded, oldest forgotten first), so a delivery the forge re-sends,
 * or someone replays, is answered without triggering anything twice.
 */
export class DeliveryMemory {
  readonly #seen = new Set<string>();
  readonly #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  has(id: string): boolean {
    return this.#seen.has(id);
  }

  remember(id: string): void {
    if (this.#capacity === 0) return;
    this.#seen.delete(id);
    this.#seen.add(id);
    while (this.#seen.size > this.#capacity) this.#seen.delete(this.#seen.values().next().value!);
  }
}
