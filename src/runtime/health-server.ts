import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log/logger.ts";
import type { MetricsRegistry } from "./metrics.ts";
import { PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";

/** A named check: true (or a resolved true) when fine; false or a string (the reason) when not. */
export type HealthCheck = () => boolean | string | Promise<boolean | string>;

export interface HealthServerOptions {
  /** 0 picks a free port (tests). */
  port: number;
  /** Default "0.0.0.0" (kubelet probes come from outside the pod's loopback). */
  host?: string;
  registry?: MetricsRegistry;
  /** `/healthz`: the process works. Default none (always ok while the server answers). */
  livenessChecks?: Record<string, HealthCheck>;
  /**
   * `/readyz`: ready to serve. For the operator: informers synced and watching. Leadership is deliberately not
   * a readiness check: a standby replica is healthy and ready to take over.
   */
  readinessChecks?: Record<string, HealthCheck>;
  logger?: Logger;
}

/** What readiness needs to know of an informer. */
export interface InformerHealth {
  readonly name: string;
  hasSynced(): boolean;
  /** Since when (ms) it has had no established watch; undefined while watching. */
  notWatchingSince(): number | undefined;
}

/**
 * Ready when every informer has synced and none has been without a watch for longer than
 * `graceMs` (a watch is re-established now and then; a short gap is normal). The reason names
 * those that are not.
 */
export function informersReady(informers: readonly InformerHealth[], graceMs: number, nowMs: () => number): HealthCheck {
  return () => {
    const now = nowMs();
    const problems = informers.flatMap((i) => {
      if (!i.hasSynced()) return [`${i.name}: not synced`];
      const since = i.notWatchingSince();
      return since !== undefined && now - since > graceMs ? [`${i.name}: no watch for ${Math.round((now - since) / 1000)}s`] : [];
    });
    return problems.length === 0 ? true : problems.join(", ");
  };
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Serves `/healthz`, `/readyz` (add `?verbose` for per-check lines) and `/metrics`. */
export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const server = createServer((req, res) => {
    handle(req, res, options).catch((err: unknown) => {
      options.logger?.error({ err }, "health server request failed");
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
      res.end("internal error\n");
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  options.logger?.info({ port }, "health server listening");
  return {
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, options: HealthServerOptions): Promise<void> {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
    res.end("method not allowed\n");
    return;
  }
  switch (url.pathname) {
    case "/healthz":
    case "/livez":
      return sendChecks(res, options.livenessChecks ?? {}, url.searchParams.has("verbose"), req.method === "HEAD");
    case "/readyz":
      return sendChecks(res, options.readinessChecks ?? {}, url.searchParams.has("verbose"), req.method === "HEAD");
    case "/metrics": {
      if (!options.registry) break;
      const body = options.registry.render();
      res.writeHead(200, { "content-type": PROMETHEUS_CONTENT_TYPE });
      res.end(req.method === "HEAD" ? undefined : body);
      return;
    }
  }
  res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
  res.end("not found\n");
}

async function sendChecks(res: ServerResponse, checks: Record<string, HealthCheck>, verbose: boolean, head: boolean): Promise<void> {
  const results = await Promise.all(
    Object.entries(checks).map(async ([name, check]) => {
      try {
        const result = await check();
        return { name, ok: result === true, reason: typeof result === "string" ? result : result ? "" : "failed" };
      } catch (err) {
        return { name, ok: false, reason: err instanceof Error ? err.message : "failed" };
      }
    }),
  );
  const ok = results.every((r) => r.ok);
  const lines = verbose || !ok ? results.map((r) => (r.ok ? `[+]${r.name} ok` : `[-]${r.name} failed: ${r.reason}`)) : [];
  lines.push(ok ? "ok" : "not ok");
  res.writeHead(ok ? 200 : 503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
  res.end(head ? undefined : lines.join("\n") + "\n");
}
