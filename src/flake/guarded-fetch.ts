/**
 * An HTTP client for the controller's revision poller that connects only to addresses the flake
 * ref policy allows (issue 12, item 6). The check runs on the addresses the connection really uses:
 * a host name is resolved by the socket's own `lookup`, and every address it returns must pass
 * `checkAddress`, so neither a name that resolves to 169.254.169.254 nor DNS rebinding between a
 * check and the connect gets through. Literal addresses (which skip `lookup`) are checked before
 * the request. Redirects are not followed here; the resolver checks every hop through this client.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import { checkAddress, classifyHost, parseIpAddress, type AddressRange, type AddressVerdict } from "./address-policy.ts";

/** The request's host is, or resolves to, an address the policy denies. */
export class AddressDeniedError extends Error {
  override readonly name = "AddressDeniedError";
  readonly host: string;
  readonly address: string;

  constructor(host: string, verdict: Extract<AddressVerdict, { allowed: false }>) {
    super(
      `host ${host} ${host === verdict.address ? "is" : `resolves to ${verdict.address}, in`} ${verdict.what} (${verdict.cidr}), which the operator does not connect to (SSRF protection); an operator admin can allow the range in flakeRefPolicy.allowedAddressRanges`,
    );
    this.host = host;
    this.address = verdict.address;
  }
}

/** Throws AddressDeniedError when `url`'s host is a denied literal address or localhost. */
export function checkUrlHost(url: URL, allowed: readonly AddressRange[]): void {
  const host = url.hostname;
  const kind = classifyHost(host);
  if (kind.kind === "ip") {
    const verdict = checkAddress(kind.address, allowed);
    if (!verdict.allowed) throw new AddressDeniedError(host, verdict);
  } else if (kind.kind === "bad-number") {
    throw new AddressDeniedError(host, { allowed: false, address: host, cidr: "-", what: "no valid address" });
  }
  // Names (localhost included) are checked on the addresses they resolve to.
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

export function guardedLookup(allowed: readonly AddressRange[]) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      for (const a of addresses) {
        const parsed = parseIpAddress(a.address);
        const verdict = parsed ? checkAddress(parsed, allowed) : ({ allowed: false, address: a.address, cidr: "-", what: "no valid address" } as const);
        if (!verdict.allowed) return callback(new AddressDeniedError(hostname, verdict), []);
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: "ENOTFOUND" }), []);
      callback(null, first.address, first.family);
    });
  };
}

const NULL_BODY_STATUSES = new Set([204, 205, 304]);

/** A `fetch` (the subset the resolver uses; no redirects, no content decoding) that refuses denied addresses. */
export function guardedFetch(allowed: readonly AddressRange[]): (input: string, init: RequestInit) => Promise<Response> {
  const lookup = guardedLookup(allowed);
  return (input, init) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input);
      checkUrlHost(url, allowed);
      const client = url.protocol === "https:" ? https : url.protocol === "http:" ? http : undefined;
      if (!client) return reject(new TypeError(`unsupported protocol ${url.protocol}`));
      const request = client.request(
        url,
        { method: init.method ?? "GET", headers: init.headers as Record<string, string>, lookup, signal: init.signal ?? undefined, agent: false },
        (res) => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (Array.isArray(v)) for (const item of v) headers.append(k, item);
            else if (v !== undefined) headers.set(k, v);
          }
          const status = res.statusCode ?? 0;
          const body = NULL_BODY_STATUSES.has(status) ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
          if (body === null) res.resume();
          try {
            resolve(new Response(body, { status, statusText: res.statusMessage ?? "", headers }));
          } catch (e) {
            res.destroy();
            reject(e as Error);
          }
        },
      );
      request.on("error", reject);
      request.end();
    });
}
