import { LeaseConflictError, type LeaseRecord, type LeaseStore, type StoredLease } from "../../src/runtime/lease-store.ts";

function copy(record: LeaseRecord): LeaseRecord {
  return {
    ...record,
    acquireTime: record.acquireTime ? new Date(record.acquireTime.getTime()) : undefined,
    renewTime: record.renewTime ? new Date(record.renewTime.getTime()) : undefined,
  };
}

/** One Lease held in memory with resourceVersion checks: the API server, for unit tests. */
export class InMemoryLeaseServer {
  lease: StoredLease | undefined;
  #rv = 0;
  readonly writes: { verb: "create" | "update"; record: LeaseRecord }[] = [];

  read(): StoredLease | undefined {
    return this.lease && { record: copy(this.lease.record), resourceVersion: this.lease.resourceVersion };
  }

  create(record: LeaseRecord): StoredLease {
    if (this.lease) throw new LeaseConflictError("exists");
    return this.#store("create", record);
  }

  update(record: LeaseRecord, resourceVersion: string): StoredLease {
    if (!this.lease || this.lease.resourceVersion !== resourceVersion) throw new LeaseConflictError("stale resourceVersion");
    return this.#store("update", record);
  }

  #store(verb: "create" | "update", record: LeaseRecord): StoredLease {
    this.lease = { record: copy(record), resourceVersion: String(++this.#rv) };
    this.writes.push({ verb, record: copy(record) });
    return { record: copy(record), resourceVersion: this.lease.resourceVersion };
  }
}

/**
 * One client's view of the server, with faults to inject: `mode = "fail"` rejects every call,
 * `mode = "hang"` never answers (a network partition), `failNext` rejects the next n calls.
 */
export class FakeLeaseStore implements LeaseStore {
  readonly description = "test/lease";
  readonly server: InMemoryLeaseServer;
  mode: "ok" | "fail" | "hang" = "ok";
  failNext = 0;
  readonly calls: string[] = [];

  constructor(server: InMemoryLeaseServer) {
    this.server = server;
  }

  get(): Promise<StoredLease | undefined> {
    return this.#call("get", () => this.server.read());
  }

  create(record: LeaseRecord): Promise<StoredLease> {
    return this.#call("create", () => this.server.create(record));
  }

  update(record: LeaseRecord, resourceVersion: string): Promise<StoredLease> {
    return this.#call("update", () => this.server.update(record, resourceVersion));
  }

  #call<T>(verb: string, fn: () => T): Promise<T> {
    this.calls.push(verb);
    if (this.mode === "hang") return new Promise(() => {});
    if (this.mode === "fail" || this.failNext > 0) {
      if (this.failNext > 0) this.failNext--;
      return Promise.reject(new Error(`${verb}: connection refused`));
    }
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(err);
    }
  }
}
