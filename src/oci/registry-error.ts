// Errors from registry operations. The message carries the operation, the HTTP status and the
// registry's own error code and message (`{"errors":[{"code","message"}]}`), never a request
// header, a raw response body or any credential (messages are scrubbed of known secrets).
import { type FailureInfo, isRetryableNetworkError, isRetryableStatus } from "./retry.ts";

export interface RegistryErrorDetail {
  code: string;
  message: string;
}

export interface RegistryErrorInit {
  /** e.g. `HEAD blob acme/web@sha256:…` */
  operation: string;
  host: string;
  status?: number;
  errors?: RegistryErrorDetail[];
  /** Milliseconds from Retry-After, when the server sent one. */
  retryAfterMs?: number;
  /** Plain explanation of our own (e.g. "digest mismatch"). */
  reason?: string;
  cause?: unknown;
}

export class RegistryError extends Error {
  override name = "RegistryError";
  readonly operation: string;
  readonly host: string;
  readonly status: number | undefined;
  readonly errors: RegistryErrorDetail[];
  readonly retryAfterMs: number | undefined;

  constructor(init: RegistryErrorInit) {
    const parts: string[] = [`registry ${init.host}: ${init.operation} failed`];
    if (init.status !== undefined) parts.push(`HTTP ${init.status}`);
    for (const e of init.errors ?? []) parts.push(e.message ? `${e.code}: ${e.message}` : e.code);
    if (init.reason) parts.push(init.reason);
    super(parts.join(": "), init.cause !== undefined ? { cause: init.cause } : undefined);
    this.operation = init.operation;
    this.host = init.host;
    this.status = init.status;
    this.errors = init.errors ?? [];
    this.retryAfterMs = init.retryAfterMs;
  }

  /** True when the registry said this (e.g. `BLOB_UNKNOWN`, `UNAUTHORIZED`). */
  hasCode(code: string): boolean {
    return this.errors.some((e) => e.code === code);
  }
}

const MAX_TEXT = 300;

function clip(text: string): string {
  // Control characters could forge log lines; long texts are cut.
  let clean = "";
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    clean += code < 0x20 || code === 0x7f ? " " : ch;
  }
  clean = clean.replace(/ {2,}/g, " ").trim();
  return clean.length > MAX_TEXT ? `${clean.slice(0, MAX_TEXT)}…` : clean;
}

/** Replaces every occurrence of a known secret with `[redacted]`. */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join("[redacted]");
  return out;
}

/**
 * The registry's error list from a response body. Only the documented shape is read; anything
 * else (HTML from a proxy, invalid JSON) yields nothing: a raw body is never put into a message.
 */
export function parseRegistryErrors(body: Buffer | string | undefined, secrets: readonly string[] = []): RegistryErrorDetail[] {
  if (body === undefined || body.length === 0) return [];
  let json: unknown;
  try {
    json = JSON.parse(typeof body === "string" ? body : body.toString("utf8"));
  } catch {
    return [];
  }
  if (typeof json !== "object" || json === null) return [];
  const errors = (json as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return [];
  const out: RegistryErrorDetail[] = [];
  for (const e of errors.slice(0, 5)) {
    if (typeof e !== "object" || e === null) continue;
    const code = (e as { code?: unknown }).code;
    const message = (e as { message?: unknown }).message;
    out.push({
      code: typeof code === "string" ? clip(redactSecrets(code, secrets)) : "UNKNOWN",
      message: typeof message === "string" ? clip(redactSecrets(message, secrets)) : "",
    });
  }
  return out;
}

/** Retry classification of errors thrown by registry operations. */
export function classifyRegistryFailure(err: unknown): FailureInfo {
  if (err instanceof RegistryError) {
    if (err.status === undefined) return { retryable: err.cause !== undefined && isRetryableNetworkError(err.cause) };
    const info: FailureInfo = { retryable: isRetryableStatus(err.status) };
    if (err.retryAfterMs !== undefined) info.retryAfterMs = err.retryAfterMs;
    return info;
  }
  return { retryable: isRetryableNetworkError(err) };
}
