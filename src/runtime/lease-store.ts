import type { KubeAccess } from "./kube-config.ts";
import { KubeHttpError, kubeRequestJson } from "./kube-request.ts";

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

interface LeaseObject {
  metadata?: { resourceVersion?: string };
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

/** A LeaseStore on the API server (coordination.k8s.io/v1), plain JSON requests. */
export class KubeLeaseStore implements LeaseStore {
  readonly description: string;
  readonly #kc: KubeAccess;
  readonly #namespace: string;
  readonly #name: string;

  constructor(kc: KubeAccess, namespace: string, name: string) {
    this.#kc = kc;
    this.#namespace = namespace;
    this.#name = name;
    this.description = `${namespace}/${name}`;
  }

  async get(): Promise<StoredLease | undefined> {
    try {
      return fromLease(await kubeRequestJson<LeaseObject>(this.#kc, "GET", this.#path(this.#name), { timeoutMs: 10_000 }));
    } catch (err) {
      if (err instanceof KubeHttpError && err.statusCode === 404) return undefined;
      throw apiError("read", this.description, err);
    }
  }

  async create(record: LeaseRecord): Promise<StoredLease> {
    try {
      return fromLease(await kubeRequestJson<LeaseObject>(this.#kc, "POST", this.#path(), { body: this.#body(record), timeoutMs: 10_000 }));
    } catch (err) {
      if (err instanceof KubeHttpError && err.statusCode === 409) throw new LeaseConflictError(`lease ${this.description} exists already`);
      throw apiError("create", this.description, err);
    }
  }

  async update(record: LeaseRecord, resourceVersion: string): Promise<StoredLease> {
    try {
      return fromLease(
        await kubeRequestJson<LeaseObject>(this.#kc, "PUT", this.#path(this.#name), { body: this.#body(record, resourceVersion), timeoutMs: 10_000 }),
      );
    } catch (err) {
      if (err instanceof KubeHttpError && err.statusCode === 409) throw new LeaseConflictError(`lease ${this.description} changed meanwhile`);
      throw apiError("update", this.description, err);
    }
  }

  #path(name?: string): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.#namespace}/leases${name ? `/${name}` : ""}`;
  }

  #body(record: LeaseRecord, resourceVersion?: string): unknown {
    return {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: this.#name, namespace: this.#namespace, ...(resourceVersion ? { resourceVersion } : {}) },
      spec: {
        holderIdentity: record.holderIdentity || undefined,
        leaseDurationSeconds: record.leaseDurationSeconds,
        acquireTime: record.acquireTime ? microTime(record.acquireTime) : undefined,
        renewTime: record.renewTime ? microTime(record.renewTime) : undefined,
        leaseTransitions: record.leaseTransitions,
      },
    };
  }
}

/** MicroTime goes out with six fractional digits. */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

function fromLease(lease: LeaseObject): StoredLease {
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

function toDate(value: string | undefined): Date | undefined {
  if (!value) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : new Date(ms);
}

/** Only the status and the Status message, never a body or headers. */
function apiError(verb: string, what: string, err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  return new Error(`${verb} lease ${what}: ${message.slice(0, 300)}`);
}
