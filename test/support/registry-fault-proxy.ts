// A plain-HTTP proxy in front of the test bed's docker-registry that injects the faults a push meets
// in production, on demand: every request answered 503 or 429 for a time window, a blob upload's
// connection reset after some bytes, manifest PUTs cut before they reach the registry. It records
// every request (method, path, status, what it injected), so a test can count what a retry sent
// again. The Host header is passed through, so the registry's Location headers point back here.
import { createServer, request, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

interface RegistryRequest {
  at: number;
  method: string;
  path: string;
  code: number;
  injected?: string;
  /** Request body bytes that reached the registry. */
  bytes: number;
}

export interface RegistryFaultProxy {
  /** 127.0.0.1:PORT, the host part of image references through the proxy. */
  readonly host: string;
  readonly requests: RegistryRequest[];
  /** Answers every request with `status` (503 or 429, with Retry-After: 1) for `ms` from the next request on. */
  failFor(status: 503 | 429, ms: number): void;
  /** Answers every request with `status` until restore(). */
  failAlways(status: 503 | 429): void;
  /** Resets the connection of the next `times` blob uploads (PATCH or PUT with a body) after `afterBytes` bytes. */
  resetBlobUploads(afterBytes: number, times?: number): void;
  /** Holds blob upload data (PATCH, or PUT with a body) before forwarding, until the returned release(). */
  stallBlobUploads(): { stalled: () => number; release: () => void };
  /** Cuts (resets without forwarding) manifest PUTs until restore(), or the next `times` ones. */
  cutManifestPuts(times?: number): void;
  restore(): void;
  /** Requests of one kind so far. */
  count(kind: "blob-upload-start" | "blob-upload-data" | "blob-head" | "manifest-put"): number;
  close(): Promise<void>;
}

function kindOf(method: string, path: string): string | undefined {
  if (method === "POST" && /\/blobs\/uploads\/(\?|$)/.test(path)) return "blob-upload-start";
  if ((method === "PATCH" || method === "PUT") && /\/blobs\/uploads\//.test(path)) return "blob-upload-data";
  if (method === "HEAD" && /\/blobs\/sha256:/.test(path)) return "blob-head";
  if (method === "PUT" && /\/manifests\//.test(path)) return "manifest-put";
  return undefined;
}

export async function startRegistryFaultProxy(upstream: { host: string }): Promise<RegistryFaultProxy> {
  const [upHost, upPort] = upstream.host.split(":");
  const requests: RegistryRequest[] = [];
  let failing: { status: 503 | 429; until: number; ms?: number } | undefined;
  let resets: { afterBytes: number; left: number } | undefined;
  let manifestCuts = 0;
  let stall: { waiting: Array<() => void> } | undefined;
  const sockets = new Set<Duplex>();

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const record: RegistryRequest = { at: Date.now(), method, path, code: 0, bytes: 0 };
    requests.push(record);
    if (failing?.ms !== undefined) failing = { status: failing.status, until: Date.now() + failing.ms };
    if (failing && Date.now() < failing.until) {
      record.code = failing.status;
      record.injected = `status ${failing.status}`;
      req.resume();
      res.writeHead(failing.status, { "content-type": "application/json", "retry-after": "1" });
      res.end(JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: "fault proxy: injected", detail: null }] }));
      return;
    }
    const kind = kindOf(method, path);
    if (kind === "manifest-put" && manifestCuts > 0) {
      manifestCuts--;
      record.injected = "cut before the manifest PUT";
      req.socket.resetAndDestroy();
      return;
    }
    if (kind === "blob-upload-data" && stall && Number(req.headers["content-length"] ?? 1) !== 0) {
      record.injected = "stalled";
      req.pause();
      stall.waiting.push(() => forward(req, res, record, kind));
      return;
    }
    forward(req, res, record, kind);
  };

  const forward = (req: IncomingMessage, res: ServerResponse, record: RegistryRequest, kind: string | undefined) => {
    const method = record.method;
    const path = record.path;
    const reset = kind === "blob-upload-data" && resets && resets.left > 0 ? resets : undefined;
    if (reset) reset.left--;
    const up = request({ host: upHost, port: Number(upPort), method, path, headers: req.headers }, (ur) => {
      record.code = ur.statusCode ?? 0;
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.on("data", (chunk: Buffer) => {
      if (reset && record.bytes + chunk.length > reset.afterBytes) {
        record.injected = `reset after ${record.bytes} bytes`;
        up.destroy();
        req.socket.resetAndDestroy();
        return;
      }
      record.bytes += chunk.length;
      up.write(chunk);
    });
    req.on("end", () => up.end());
    req.on("close", () => {
      if (!req.complete) up.destroy(); // the client went away mid-body
    });
  };

  const server = createServer(handle);
  server.on("connection", (s: Duplex) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("registry fault proxy has no port");
  return {
    host: `127.0.0.1:${address.port}`,
    requests,
    failFor(status, ms) {
      failing = { status, until: Number.POSITIVE_INFINITY, ms };
    },
    failAlways(status) {
      failing = { status, until: Number.POSITIVE_INFINITY };
    },
    resetBlobUploads(afterBytes, times = 1) {
      resets = { afterBytes, left: times };
    },
    cutManifestPuts(times = Number.POSITIVE_INFINITY) {
      manifestCuts = times;
    },
    stallBlobUploads() {
      const current = { waiting: [] as Array<() => void> };
      stall = current;
      return {
        stalled: () => current.waiting.length,
        release: () => {
          if (stall === current) stall = undefined;
          for (const go of current.waiting.splice(0)) go();
        },
      };
    },
    restore() {
      failing = undefined;
      resets = undefined;
      manifestCuts = 0;
    },
    count: (kind) => requests.filter((r) => kindOf(r.method, r.path) === kind && !r.injected).length,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
