import { ApiException, CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from "@kubernetes/client-node";

/** The leader-election fields of a coordination.k8s.io/v1 Lease. */
export interface LeaseRecord {
  /** Empty/undefined: nobody holds it (released). */
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: Date;
  renewTime?: Date;
  leaseTransitions?: number;
}

export interface StoredLease {
  record: LeaseRecord;
  resourceVersion: string;
}

/** Another writer got there first (create of an existing Lease, or update with a stale resourceVersion). */
export class LeaseConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LeaseConflictError";
  }
}

/** Reads and writes one Lease with optimistic concurrency. */
export interface LeaseStore {
  /** For logs: `namespace/name`. */
  readonly description: string;
  get(): Promise<StoredLease | undefined>;
  /** Throws LeaseConflictError when the Lease exists already. */
  create(record: LeaseRecord): Promise<StoredLease>;
  /** Replaces the record if the Lease is still at `resourceVersion`; else throws LeaseConflictError. */
  update(record: LeaseRecord, resourceVersion: string): Promise<StoredLease>;
}

/** A LeaseStore on the API server (coordination.k8s.io/v1). */
export class KubeLeaseStore implements LeaseStore {
  readonly description: string;
  readonly #api: CoordinationV1Api;
  readonly #namespace: string;
  readonly #name: string;

  constructor(kc: KubeConfig, namespace: string, name: string) {
    this.#api = kc.makeApiClient(CoordinationV1Api);
    this.#namespace = namespace;
    this.#name = name;
    this.description = `${namespace}/${name}`;
  }

  async get(): Promise<StoredLease | undefined> {
    try {
      return fromLease(await this.#api.readNamespacedLease({ name: this.#name, namespace: this.#namespace }));
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return undefined;
      throw apiError("read", this.description, err);
    }
  }

  async create(record: LeaseRecord): Promise<StoredLease> {
    try {
      return fromLease(
        await this.#api.createNamespacedLease({
          namespace: this.#namespace,
          body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: this.#name, namespace: this.#namespace }, spec: toSpec(record) },
        }),
      );
    } catch (err) {
      if (err instanceof ApiException && err.code === 409) throw new LeaseConflictError(`lease ${this.description} exists already`);
      throw apiError("create", this.description, err);
    }
  }

  async update(record: LeaseRecord, resourceVersion: string): Promise<StoredLease> {
    try {
      return fromLease(
        await this.#api.replaceNamespacedLease({
          name: this.#name,
          namespace: this.#namespace,
          body: {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name: this.#name, namespace: this.#namespace, resourceVersion },
            spec: toSpec(record),
          },
        }),
      );
    } catch (err) {
      if (err instanceof ApiException && err.code === 409) throw new LeaseConflictError(`lease ${this.description} changed meanwhile`);
      throw apiError("update", this.description, err);
    }
  }
}

/** MicroTime must go out with six fractional digits; V1MicroTime serialises that way. */
function toSpec(record: LeaseRecord): NonNullable<V1Lease["spec"]> {
  return {
    holderIdentity: record.holderIdentity || undefined,
    leaseDurationSeconds: record.leaseDurationSeconds,
    acquireTime: record.acquireTime ? new V1MicroTime(record.acquireTime.getTime()) : undefined,
    renewTime: record.renewTime ? new V1MicroTime(record.renewTime.getTime()) : undefined,
    leaseTransitions: record.leaseTransitions,
  };
}

function fromLease(lease: V1Lease): StoredLease {
  const spec = lease.spec ?? {};
  return {
    resourceVersion: lease.metadata?.resourceVersion ?? "",
    record: {
      holderIdentity: spec.holderIdentity || undefined,
      leaseDurationSeconds: spec.leaseDurationSeconds,
      acquireTime: toDate(spec.acquireTime),
      renewTime: toDate(spec.renewTime),
      leaseTransitions: spec.leaseTransitions,
    },
  };
}

/** client-node hands MicroTime back as the raw string (it has no model for it); accept both. */
function toDate(value: unknown): Date | undefined {
  if (value instanceof Date) return new Date(value.getTime());
  if (typeof value === "string" && value !== "") {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? undefined : new Date(ms);
  }
  return undefined;
}

/** ApiException messages carry the whole body and headers; keep only the code. */
function apiError(verb: string, what: string, err: unknown): Error {
  if (err instanceof ApiException) return new Error(`${verb} lease ${what}: HTTP ${err.code}`);
  const message = err instanceof Error ? err.message : String(err);
  return new Error(`${verb} lease ${what}: ${message.slice(0, 300)}`);
}
