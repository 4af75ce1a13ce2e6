// A TLS proxy in front of the test bed's kube-apiserver that injects the faults a controller meets
// in production, on demand: watches that go silent (blackholed: the connection stays open, no event
// arrives, not even the server's own end), watches cut (connection reset), an `ERROR 410 Gone` event
// mid-stream, a malformed line, and writes answered with 409/429/500/503 or held for a while. It
// terminates TLS with a certificate from its own CA (a kubeconfig for it trusts that CA) and
// forwards each request over TLS to the API server with the client's own Authorization header, so
// RBAC and the audit log see the real client. Watch streams are forwarded line by line, so an
// injected event never lands inside another one.
import { mkdir, readFile } from "node:fs/promises";
import { Agent, createServer, request, type Server } from "node:https";
import type { IncomingMessage, ServerResponse, ClientRequest } from "node:http";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { makeCa, makeLeaf } from "./pki.ts";

interface ProxiedRequest {
  at: number;
  method: string;
  path: string;
  watch: boolean;
  /** Status the client got (0 while a watch is open or when the connection was cut). */
  code: number;
  /** What the proxy did instead of forwarding, if anything. */
  injected?: string;
}

interface WriteRule {
  /** Status to answer with instead of forwarding. */
  status: 409 | 429 | 500 | 503;
  /** Which writes (method + path); default all. */
  match?: (r: { method: string; path: string }) => boolean;
  /** How many matching writes to fail; default unlimited (until the rule is removed). */
  times?: number;
  /** Fraction of matching writes to fail (0..1); default 1. */
  probability?: number;
}

export interface ApiFaultProxy {
  /** https://127.0.0.1:PORT */
  readonly url: string;
  /** CA that signed the proxy's certificate (for the kubeconfig). */
  readonly caFile: string;
  readonly requests: ProxiedRequest[];
  /** Open watch streams right now (blackholed ones included). */
  openWatches(): number;
  /** From now on every watch is silent: events are dropped, the stream stays open (also after the API server ends it). */
  blackholeWatches(): void;
  /** New watches flow again (streams blackholed so far stay silent, like a dead connection). */
  restoreWatches(): void;
  /** Closes every open watch connection abruptly (no end of stream); returns how many. */
  cutWatches(): number;
  /** Sends `ERROR 410 Gone (Expired)` on every open watch and ends it; returns how many. */
  goneWatches(): number;
  /** Sends one line that is not JSON on every open watch; returns how many. */
  malformedWatches(): number;
  /** Answers matching writes with an error status until the returned function is called. */
  failWrites(rule: WriteRule): () => void;
  /** Holds matching writes until the returned function is called (then forwards them). */
  holdWrites(match: (r: { method: string; path: string }) => boolean): { held: () => number; release: () => void };
  close(): Promise<void>;
}

interface OpenWatch {
  res: ServerResponse;
  upstream?: ClientRequest;
  silent: boolean;
}

const statusBody = (code: number, reason: string, message: string) =>
  JSON.stringify({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code });

const reasons: Record<number, string> = { 409: "Conflict", 410: "Expired", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable" };

export async function startApiFaultProxy(opts: { upstream: string; upstreamCaFile: string; dir: string }): Promise<ApiFaultProxy> {
  await mkdir(opts.dir, { recursive: true });
  const ca = await makeCa(opts.dir, "fault-proxy-ca", "fault-proxy-ca");
  const leaf = await makeLeaf(opts.dir, ca, { name: "fault-proxy", commonName: "fault-proxy", usage: "server", altNames: ["IP:127.0.0.1"] });
  const [key, cert, upstreamCa] = await Promise.all([readFile(leaf.keyFile), readFile(leaf.certFile), readFile(opts.upstreamCaFile)]);
  const upstream = new URL(opts.upstream);
  const agent = new Agent({ ca: upstreamCa, keepAlive: true });
  const requests: ProxiedRequest[] = [];
  const watches = new Set<OpenWatch>();
  let blackholed = false;
  const writeRules = new Set<WriteRule & { left: number }>();
  const holds = new Set<{ match: (r: { method: string; path: string }) => boolean; waiting: Array<() => void>; released: boolean }>();

  const forward = (req: IncomingMessage, body: Buffer, record: ProxiedRequest, res: ServerResponse, watch: OpenWatch | undefined) => {
    const headers = { ...req.headers, host: upstream.host };
    delete headers.connection;
    const up = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent }, (ur) => {
      if (res.headersSent || res.writableEnded) {
        ur.destroy(); // the proxy answered this one itself meanwhile
        return;
      }
      record.code = ur.statusCode ?? 0;
      const outHeaders = { ...ur.headers };
      delete outHeaders.connection;
      delete outHeaders["keep-alive"];
      if (!watch || (ur.statusCode ?? 0) >= 300) {
        res.writeHead(ur.statusCode ?? 502, outHeaders);
        ur.pipe(res);
        return;
      }
      delete outHeaders["content-length"];
      res.writeHead(ur.statusCode ?? 200, outHeaders);
      res.flushHeaders(); // the client counts a watch as started once it has the headers
      let buffered = "";
      ur.setEncoding("utf8");
      ur.on("data", (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl + 1);
          buffered = buffered.slice(nl + 1);
          if (!watch.silent && !res.writableEnded) res.write(line);
        }
      });
      ur.on("end", () => {
        if (watch.silent) return; // a blackholed stream never ends on its own
        watches.delete(watch);
        if (!res.writableEnded) res.end();
      });
      ur.on("error", () => {
        if (!watch.silent) res.destroy();
      });
    });
    if (watch) watch.upstream = up;
    up.on("error", () => {
      if (watch?.silent) return;
      if (!res.headersSent) {
        record.code = 502;
        res.writeHead(502, { "content-type": "application/json" });
        res.end(statusBody(503, "ServiceUnavailable", "fault proxy: API server unreachable"));
      } else res.destroy();
    });
    up.end(body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const query = new URL(path, "https://x").searchParams;
    const isWatch = query.get("watch") === "true" || query.get("watch") === "1";
    const record: ProxiedRequest = { at: Date.now(), method, path, watch: isWatch, code: 0 };
    requests.push(record);
    if (["POST", "PUT", "PATCH", "DELETE"].includes(method)) {
      for (const rule of writeRules) {
        if (rule.left <= 0 || !(rule.match?.({ method, path }) ?? true)) continue;
        if (rule.probability !== undefined && Math.random() >= rule.probability) continue;
        rule.left--;
        record.code = rule.status;
        record.injected = `status ${rule.status}`;
        res.writeHead(rule.status, { "content-type": "application/json", ...(rule.status === 429 ? { "retry-after": "1" } : {}) });
        res.end(statusBody(rule.status, reasons[rule.status]!, `fault proxy: injected ${rule.status}`));
        return;
      }
      for (const hold of holds) {
        if (hold.released || !hold.match({ method, path })) continue;
        record.injected = "held";
        await new Promise<void>((resolve) => hold.waiting.push(resolve));
      }
    }
    if (!isWatch) return forward(req, body, record, res, undefined);
    const watch: OpenWatch = { res, silent: blackholed };
    watches.add(watch);
    res.on("close", () => {
      watches.delete(watch);
      watch.upstream?.destroy();
    });
    if (watch.silent) {
      record.code = 200;
      record.injected = "blackholed";
      res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
      res.flushHeaders();
      return;
    }
    forward(req, body, record, res, watch);
  };

  const server: Server = createServer({ key, cert }, (req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  const sockets = new Set<Duplex>();
  server.on("connection", (s: Duplex) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("fault proxy has no port");

  const eachWatch = (fn: (w: OpenWatch) => void) => {
    const list = [...watches];
    for (const w of list) fn(w);
    return list.length;
  };
  return {
    url: `https://127.0.0.1:${address.port}`,
    caFile: join(opts.dir, "fault-proxy-ca.crt"),
    requests,
    openWatches: () => watches.size,
    blackholeWatches() {
      blackholed = true;
      eachWatch((w) => (w.silent = true));
    },
    restoreWatches() {
      blackholed = false;
    },
    cutWatches: () =>
      eachWatch((w) => {
        watches.delete(w);
        w.upstream?.destroy();
        w.res.socket?.destroy();
      }),
    goneWatches: () =>
      eachWatch((w) => {
        watches.delete(w);
        w.upstream?.destroy();
        if (!w.res.headersSent) w.res.writeHead(200, { "content-type": "application/json" });
        w.res.end(`{"type":"ERROR","object":${statusBody(410, "Expired", "too old resource version (injected by the fault proxy)")}}\n`);
      }),
    malformedWatches: () =>
      eachWatch((w) => {
        if (!w.res.headersSent) return; // not started yet: nothing to break
        w.res.write('{"type":"MODIFIED","object":{"kind":\n');
      }),
    failWrites(rule) {
      const entry = { ...rule, left: rule.times ?? Number.POSITIVE_INFINITY };
      writeRules.add(entry);
      return () => void writeRules.delete(entry);
    },
    holdWrites(match) {
      const hold = { match, waiting: [] as Array<() => void>, released: false };
      holds.add(hold);
      return {
        held: () => hold.waiting.length,
        release: () => {
          hold.released = true;
          holds.delete(hold);
          for (const go of hold.waiting.splice(0)) go();
        },
      };
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const w of watches) w.upstream?.destroy();
        for (const s of sockets) s.destroy();
        agent.destroy();
        server.close(() => resolve());
      }),
  };
}
