import * as http from "node:http";
import * as https from "node:https";
import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import type { KubeAccess } from "./kube-config.ts";

/** An API server answer other than 2xx. Carries the status and the Status message, never the request. */
export class KubeHttpError extends Error {
  readonly statusCode: number;
  /** Same as statusCode; client-node's list-watch looks at either name. */
  readonly code: number;
  readonly reason: string | undefined;

  constructor(statusCode: number, message: string, reason?: string) {
    super(message);
    this.name = "KubeHttpError";
    this.statusCode = statusCode;
    this.code = statusCode;
    this.reason = reason;
  }
}

export interface GetJsonOptions {
  query?: Record<string, string | number | undefined>;
  signal?: AbortSignal;
  /** Whole-request timeout. Default 60 s. */
  timeoutMs?: number;
}

export interface RequestJsonOptions extends GetJsonOptions {
  /** Sent as JSON. */
  body?: unknown;
  /** Defaults to application/json; e.g. application/merge-patch+json or application/apply-patch+yaml. */
  contentType?: string;
  /** Defaults to application/json; e.g. PartialObjectMetadata to get an object's metadata only. */
  accept?: string;
}

/**
 * GET `path` from the kubeconfig's current cluster and parse the JSON answer as-is (no model
 * conversion: timestamps stay strings, exactly as watch events deliver them).
 */
export function kubeGetJson<R>(kc: KubeAccess, path: string, options: GetJsonOptions = {}): Promise<R> {
  return kubeRequestJson<R>(kc, "GET", path, options);
}

/**
 * One request with a JSON body and answer, for the verbs client-node's typed clients make
 * awkward (status merge patches, server-side apply, fieldValidation). Errors carry the API
 * server's Status message, never the request body.
 */
export async function kubeRequestJson<R>(kc: KubeAccess, method: string, path: string, options: RequestJsonOptions = {}): Promise<R> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("kubeconfig has no current cluster");
  const url = new URL(cluster.server.replace(/\/+$/, "") + path);
  for (const [key, value] of Object.entries(options.query ?? {})) {
    if (value !== undefined) url.searchParams.set(key, String(value));
  }
  const requestOptions: https.RequestOptions = { method, headers: {} };
  await kc.applyToHTTPSOptions(requestOptions);
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  requestOptions.headers = {
    ...requestOptions.headers,
    accept: options.accept ?? "application/json",
    ...(body !== undefined ? { "content-type": options.contentType ?? "application/json" } : {}),
  };
  const transport = url.protocol === "http:" ? http : https;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const what = `${method} ${url.pathname}`;

  return new Promise<R>((resolve, reject) => {
    const req = transport.request(url, { ...requestOptions, signal: options.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          reject(statusError(status, text, what));
          return;
        }
        try {
          resolve(JSON.parse(text) as R);
        } catch {
          // Never echo the body: JSON.parse errors quote their input.
          reject(new Error(`${what}: answer is not JSON (${text.length} bytes)`));
        }
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${what}: no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

function statusError(status: number, body: string, what: string): KubeHttpError {
  let message = http.STATUS_CODES[status] ?? "error";
  let reason: string | undefined;
  try {
    const parsed = JSON.parse(body) as { kind?: string; message?: unknown; reason?: unknown };
    if (parsed.kind === "Status" && typeof parsed.message === "string") message = parsed.message;
    if (typeof parsed.reason === "string") reason = parsed.reason;
  } catch {
    // not a Status object; keep the HTTP reason phrase
  }
  return new KubeHttpError(status, `${what}: ${status} ${message}`, reason);
}

export interface ListOptions<T = unknown> {
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size. Default 500. */
  limit?: number;
  /** Applied to each item as its page arrives, so a large list never holds every full object at once (must be idempotent). */
  map?: (item: T) => T;
  signal?: AbortSignal;
}

/** Lists every object at a collection path, following `continue` tokens; the list's resourceVersion is kept. */
export async function kubeListAll<T extends KubernetesObject>(kc: KubeAccess, path: string, options: ListOptions<T> = {}): Promise<KubernetesListObject<T>> {
  const items: T[] = [];
  let continueToken: string | undefined;
  let last: KubernetesListObject<T> | undefined;
  do {
    last = await kubeGetJson<KubernetesListObject<T>>(kc, path, {
      signal: options.signal,
      query: {
        labelSelector: options.labelSelector,
        fieldSelector: options.fieldSelector,
        limit: options.limit ?? 500,
        continue: continueToken,
      },
    });
    // Items of a list carry no kind/apiVersion (watch events do): fill them in from the list.
    const kind = last.kind?.endsWith("List") ? last.kind.slice(0, -4) : undefined;
    for (const item of last.items ?? []) {
      const full = kind !== undefined && item.kind === undefined ? { ...item, apiVersion: item.apiVersion ?? last.apiVersion, kind } : item;
      items.push(options.map ? options.map(full) : full);
    }
    last.items = [];
    // Raw JSON: the field is `continue` (client-node's model calls it `_continue`).
    continueToken = (last.metadata as { continue?: string } | undefined)?.continue || undefined;
  } while (continueToken !== undefined);
  return { ...last, items };
}

export interface WatchOptions<T> {
  query: Record<string, string | undefined>;
  /** End the watch (cleanly) when nothing arrives for this long: a stalled connection is noticed. */
  idleTimeoutMs: number;
  signal: AbortSignal;
  /** The server answered 200: the watch is established. */
  onWatching?: () => void;
  onEvent: (type: string, obj: T) => void;
}

/**
 * One watch request (`?watch=true`, bookmarks on, a server-side timeout of 5-10 minutes as
 * client-go spreads them). Resolves when the watch ends cleanly (server closed it, or idle for
 * `idleTimeoutMs`); rejects on an HTTP error, an ERROR event (its `statusCode` is the Status code:
 * 410 means list again) or a line that is not JSON (resume from the last resourceVersion, so the
 * event in it is delivered again), and with the signal's reason when aborted.
 */
export async function kubeWatch<T>(kc: KubeAccess, path: string, options: WatchOptions<T>): Promise<void> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("kubeconfig has no current cluster");
  const url = new URL(cluster.server.replace(/\/+$/, "") + path);
  const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
  for (const [key, value] of Object.entries({ ...options.query, watch: "true", allowWatchBookmarks: "true", timeoutSeconds: String(timeoutSeconds) })) {
    if (value !== undefined) url.searchParams.set(key, value);
  }
  const requestOptions: https.RequestOptions = { method: "GET", headers: {} };
  await kc.applyToHTTPSOptions(requestOptions);
  requestOptions.headers = { ...requestOptions.headers, accept: "application/json" };
  const transport = url.protocol === "http:" ? http : https;
  const what = `WATCH ${url.pathname}`;
  const { signal } = options;

  return new Promise<void>((resolve, reject) => {
    let settled = false;
    let idle: ReturnType<typeof setTimeout> | undefined;
    const finish = (err?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(idle);
      signal.removeEventListener("abort", onAbort);
      req.destroy();
      if (err !== undefined) reject(err);
      else resolve();
    };
    const onAbort = () => finish(signal.reason ?? new Error(`${what}: aborted`));
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => finish(), options.idleTimeoutMs);
    };
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    const req = transport.request(url, requestOptions, (res) => {
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => finish(statusError(status, Buffer.concat(chunks).toString("utf8"), what)));
        res.on("error", finish);
        return;
      }
      options.onWatching?.();
      touch();
      let buffer = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        touch();
        buffer += chunk;
        let newline: number;
        while (!settled && (newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.trim() === "") continue;
          let event: { type?: string; object?: { code?: number; message?: string } };
          try {
            event = JSON.parse(line) as typeof event;
          } catch {
            // Never echo the line (it may hold a Secret's data).
            finish(new Error(`${what}: a watch event is not JSON (${line.length} bytes)`));
            return;
          }
          if (event.type === "ERROR") {
            const code = event.object?.code;
            finish(
              Object.assign(new Error(`${what}: ${code ?? ""} ${String(event.object?.message ?? "watch error").slice(0, 300)}`), { statusCode: code, code }),
            );
            return;
          }
          if (event.type && event.object) options.onEvent(event.type, event.object as T);
        }
      });
      res.on("end", () => finish());
      res.on("error", (err) => finish(err));
    });
    // Connecting (not the whole watch) is bounded too.
    touch();
    req.on("error", (err) => finish(err));
    req.end();
  });
}
