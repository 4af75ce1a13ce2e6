// The HTTP(S) layer under the registry client: node:http/node:https with keep-alive, a custom CA
// (added to the system roots), plain HTTP only when asked for, request bodies as bytes or streams
// (a stream of unknown length goes out chunked), an idle timeout. Nothing here logs or formats
// request headers.
import { readFileSync } from "node:fs";
import type { Agent as HttpAgentType, IncomingHttpHeaders, IncomingMessage } from "node:http";
import type { Agent as HttpsAgentType } from "node:https";
import type { Readable } from "node:stream";

// Not `import ... from "node:http"`: the ES module view of node:http reads every export, which loads
// Node's fetch (undici), http2 and worker_threads, about 60 ms of start-up for each step process.
const { Agent: HttpAgent, request: httpRequest } = process.getBuiltinModule("node:http");
const { Agent: HttpsAgent, request: httpsRequest } = process.getBuiltinModule("node:https");
const { rootCertificates } = process.getBuiltinModule("node:tls");

export interface TlsOptions {
  /** Talk plain HTTP to the registry. Only when explicitly asked for. */
  plainHttp?: boolean;
  /** PEM file with extra CA certificates trusted in addition to the system roots. */
  caFile?: string;
  /** PEM text of extra CA certificates. */
  ca?: string | Buffer;
  /** Accept any server certificate. For tests against self-signed registries only. */
  insecureSkipTlsVerify?: boolean;
}

export interface TransportOptions extends TlsOptions {
  /** Socket idle timeout. */
  timeoutMs?: number;
  /** Connections per origin. */
  maxSockets?: number;
  userAgent?: string;
  /** Aborts every request (and its body stream) once aborted. */
  signal?: AbortSignal;
}

export interface HttpRequestSpec {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** Bytes (sent with Content-Length) or a stream (sent chunked unless Content-Length is set). */
  body?: Buffer | Readable;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
}

class HttpTimeoutError extends Error {
  override name = "HttpTimeoutError";
  readonly code = "ETIMEDOUT";
}

const DEFAULT_USER_AGENT = "nix-image-operator";

/**
 * Reads a response body up to `limit` bytes. A longer body is cut there and its connection closed
 * (a registry, or something posing as one, may send an endless body; reading it to the end would
 * never finish). Callers that must tell "cut" from "complete" read `limit + 1` bytes.
 */
export async function readBody(res: IncomingMessage, limit = 4 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    const part = total + chunk.length > limit ? chunk.subarray(0, limit - total) : chunk;
    chunks.push(part);
    total += part.length;
    if (total >= limit) {
      res.destroy();
      break;
    }
  }
  return Buffer.concat(chunks);
}

/** Bodies we do not need are read up to this many bytes so the connection can be reused; beyond, it is closed. */
const MAX_DRAIN_BYTES = 1024 * 1024;

/** Consumes and discards a response body so the connection can be reused (or closes it when the body is long). */
export async function drain(res: IncomingMessage): Promise<void> {
  let total = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > MAX_DRAIN_BYTES) {
        res.destroy();
        return;
      }
    }
  } catch {
    // a broken body of a response we do not need
  }
}

export class HttpTransport {
  readonly plainHttp: boolean;
  readonly userAgent: string;
  readonly #timeoutMs: number;
  readonly #signal: AbortSignal | undefined;
  readonly #httpAgent: HttpAgentType;
  readonly #httpsAgent: HttpsAgentType;

  constructor(options: TransportOptions = {}) {
    this.plainHttp = options.plainHttp === true;
    this.userAgent = options.userAgent ?? DEFAULT_USER_AGENT;
    this.#timeoutMs = options.timeoutMs ?? 120_000;
    this.#signal = options.signal;
    const maxSockets = options.maxSockets ?? 8;
    this.#httpAgent = new HttpAgent({ keepAlive: true, maxSockets });
    const extraCa: (string | Buffer)[] = [];
    if (options.caFile) {
      try {
        extraCa.push(readFileSync(options.caFile));
      } catch (e) {
        throw new Error(`cannot read CA file ${options.caFile}: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
      }
    }
    if (options.ca) extraCa.push(options.ca);
    this.#httpsAgent = new HttpsAgent({
      keepAlive: true,
      maxSockets,
      ...(extraCa.length > 0 ? { ca: [...rootCertificates, ...extraCa] } : {}),
      rejectUnauthorized: options.insecureSkipTlsVerify !== true,
    });
  }

  /** `https://host/` (or `http://host/` with plainHttp). */
  baseUrl(host: string): URL {
    return new URL(`${this.plainHttp ? "http" : "https"}://${host}/`);
  }

  request(spec: HttpRequestSpec): Promise<HttpResponse> {
    const { url, body } = spec;
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      return Promise.reject(new Error(`unsupported URL scheme ${url.protocol}`));
    }
    const headers: Record<string, string> = { "User-Agent": this.userAgent, ...spec.headers };
    if (Buffer.isBuffer(body)) headers["Content-Length"] = String(body.length);
    else if (body === undefined && (spec.method === "PUT" || spec.method === "POST" || spec.method === "PATCH")) {
      headers["Content-Length"] = "0";
    }
    const isHttps = url.protocol === "https:";
    const stream = body !== undefined && !Buffer.isBuffer(body) ? body : undefined;
    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        stream?.destroy();
        reject(err);
      };
      const req = (isHttps ? httpsRequest : httpRequest)(url, {
        method: spec.method,
        headers,
        agent: isHttps ? this.#httpsAgent : this.#httpAgent,
        timeout: this.#timeoutMs,
        ...(this.#signal ? { signal: this.#signal } : {}),
      });
      req.once("timeout", () => req.destroy(new HttpTimeoutError(`no data for ${this.#timeoutMs} ms`)));
      req.on("error", fail);
      req.once("response", (res) => {
        if (settled) {
          res.destroy();
          return;
        }
        settled = true;
        res.on("error", () => undefined);
        if (stream && !stream.readableEnded) {
          // A response before the whole body was sent (an early error): stop sending, and do not
          // let the half-written request's connection be reused.
          stream.unpipe(req);
          stream.destroy();
          res.once("end", () => req.destroy());
          res.once("close", () => req.destroy());
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
      });
      if (stream) {
        // The body failed (e.g. a store file could not be read): abort with that error.
        stream.once("error", (err) => {
          req.destroy(err);
          fail(err);
        });
        stream.pipe(req);
      } else if (Buffer.isBuffer(body)) req.end(body);
      else req.end();
    });
  }

  close(): void {
    this.#httpAgent.destroy();
    this.#httpsAgent.destroy();
  }
}
