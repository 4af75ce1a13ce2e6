// The ssh transport of the revision poller: runs `git-upload-pack '<path>'` on a git+ssh remote
// with the NixImage's key (held in memory, never written to disk; no ssh binary) and hands back
// its output, the same ref advertisement as smart HTTP (pkt-lines, no service header). The caller
// reads it until the wanted ref turns up and closes the channel, so no pack is ever sent.
//
// Host keys are always checked against the Secret's known_hosts (plain, `[host]:port` and hashed
// `|1|salt|hash` entries, `@revoked`); an unknown or changed host key ends the connection before
// the client authenticates. The connection goes only to addresses the flake ref policy allows.
import { createHmac } from "node:crypto";
import type { LookupFunction } from "node:net";
import { connect as netConnect } from "node:net";
import { Readable } from "node:stream";
import type { ClientChannel } from "ssh2";

export interface SshKeyCredentials {
  /** OpenSSH or PEM private key, unencrypted (Secret key `ssh-privatekey`). */
  privateKey: string;
  /** Secret key `known_hosts`. */
  knownHosts: string;
}

export type SshFailureKind = "host-key" | "auth" | "network" | "timeout" | "protocol";

/** The ssh connection failed; the message says which step and what to do, never key material. */
export class SshTransportError extends Error {
  override readonly name = "SshTransportError";
  readonly kind: SshFailureKind;
  readonly transient: boolean;

  constructor(kind: SshFailureKind, message: string, transient = false) {
    super(message);
    this.kind = kind;
    this.transient = transient;
  }
}

export type HostKeyVerdict = "ok" | "unknown" | "mismatch" | "revoked";

/** `host` for port 22, `[host]:port` otherwise: how ssh names a host in known_hosts. */
function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")
      .replace(/\?/g, ".")}$`,
    "i",
  );
  return re.test(name);
}

function hostsFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|1|")) {
    const [, , salt, hash] = field.split("|");
    if (!salt || !hash) return false;
    return createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64") === hash;
  }
  let matched = false;
  for (const pattern of field.split(",")) {
    if (pattern.startsWith("!")) {
      if (globMatch(pattern.slice(1), name)) return false;
    } else if (globMatch(pattern, name)) matched = true;
  }
  return matched;
}

/**
 * PURE: what known_hosts says about `key` (the server's public key blob, as sent in the ssh
 * handshake) for host:port. `@cert-authority` lines are not supported (host certificates are not
 * checked) and never match.
 */
export function checkHostKey(knownHosts: string, host: string, port: number, key: Buffer): HostKeyVerdict {
  const name = knownHostsName(host, port);
  let known = false;
  let ok = false;
  for (const raw of knownHosts.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    const marker = fields[0]!.startsWith("@") ? fields.shift() : undefined;
    if (fields.length < 3 || marker === "@cert-authority") continue;
    if (!hostsFieldMatches(fields[0]!, name)) continue;
    const blob = Buffer.from(fields[2]!, "base64");
    if (marker === "@revoked") {
      if (blob.equals(key)) return "revoked";
      continue;
    }
    known = true;
    if (blob.equals(key)) ok = true;
  }
  return ok ? "ok" : known ? "mismatch" : "unknown";
}

export interface UploadPackOptions {
  credentials: SshKeyCredentials;
  timeoutMs: number;
  signal?: AbortSignal;
  /** DNS lookup that refuses denied addresses (guarded-fetch.ts). */
  lookup?: LookupFunction;
  /** Throws when the URL's literal host is denied. */
  checkHost?: (url: URL) => void;
}

export interface UploadPackSession {
  /** upload-pack's stdout: the ref advertisement. */
  body: ReadableStream<Uint8Array>;
  /** What upload-pack said on stderr so far (bounded), e.g. "fatal: ... does not appear to be a git repository". */
  stderr(): string;
  close(): void;
}

/** Git's quoting of the path argument: '...' with ' as '\''. */
function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Connects, checks the host key, authenticates with the key, and starts git-upload-pack for `url` (ssh://[user@]host[:port]/path). */
export async function openUploadPack(url: URL, options: UploadPackOptions): Promise<UploadPackSession> {
  // Loaded on first use: only a controller that polls git+ssh refs needs it.
  const { Client } = (await import("ssh2")).default;
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port === "" ? 22 : Number(url.port);
  const user = url.username === "" ? "git" : decodeURIComponent(url.username);
  const path = decodeURIComponent(url.pathname);
  const shown = `ssh://${user}@${knownHostsName(host, port)}${path}`;
  options.checkHost?.(url);
  return new Promise<UploadPackSession>((resolve, reject) => {
    const client = new Client();
    let verdict: HostKeyVerdict | undefined;
    let settled = false;
    const fail = (e: SshTransportError) => {
      if (settled) return;
      settled = true;
      cleanup();
      client.end();
      sock.destroy();
      reject(e);
    };
    const onAbort = () => fail(new SshTransportError("timeout", `ssh to ${shown} was cancelled`, true));
    const timer = setTimeout(
      () => fail(new SshTransportError("timeout", `ssh to ${shown} did not start git-upload-pack within ${options.timeoutMs} ms`, true)),
      options.timeoutMs,
    );
    const cleanup = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    };
    options.signal?.addEventListener("abort", onAbort, { once: true });

    const sock = netConnect({ host, port, ...(options.lookup ? { lookup: options.lookup } : {}) });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      fail(new SshTransportError("network", `cannot reach ${shown}: ${e.code ?? ""} ${e.message}`.replace(/\s+/g, " "), !/SSRF/.test(e.message)));
    });
    client.on("error", (e: Error & { level?: string }) => {
      if (verdict !== undefined && verdict !== "ok") {
        const why =
          verdict === "unknown"
            ? `known_hosts has no key for ${knownHostsName(host, port)}: add the server's host key (from its administrator, or ssh-keyscan on a trusted network) to the Secret's known_hosts`
            : verdict === "revoked"
              ? `the host key of ${knownHostsName(host, port)} is marked @revoked in known_hosts`
              : `the host key of ${knownHostsName(host, port)} does not match known_hosts (a changed server key, or someone in between): confirm the new key with the server's administrator and update known_hosts`;
        return fail(new SshTransportError("host-key", `refusing ${shown}: ${why}`));
      }
      if (e.level === "client-authentication") {
        return fail(
          new SshTransportError(
            "auth",
            `${shown} refused the ssh key (authentication failed): add its public key to the repository (deploy key) or correct ssh-privatekey`,
          ),
        );
      }
      if (e.level === "client-timeout") return fail(new SshTransportError("timeout", `ssh handshake with ${shown} timed out`, true));
      if (e.level === "client-socket") return fail(new SshTransportError("network", `cannot reach ${shown}: ${e.message}`, true));
      // A key ssh2 cannot parse says so without quoting it.
      if (/privateKey|private key|Cannot parse/i.test(e.message)) {
        return fail(new SshTransportError("auth", "ssh-privatekey cannot be parsed (an unencrypted OpenSSH or PEM private key is needed)"));
      }
      fail(new SshTransportError("protocol", `ssh to ${shown} failed: ${e.message}`, true));
    });
    client.on("ready", () => {
      client.exec(`git-upload-pack ${shellQuote(path)}`, (err: Error | undefined, channel: ClientChannel) => {
        if (err) return fail(new SshTransportError("protocol", `${shown} refused to run git-upload-pack: ${err.message}`));
        if (settled) return channel.close();
        settled = true;
        cleanup();
        let stderr = "";
        channel.stderr.on("data", (c: Buffer) => {
          if (stderr.length < 2000) stderr += c.toString("utf8");
        });
        const close = () => {
          // A flush tells upload-pack that no objects are wanted; then the connection goes.
          channel.end("0000");
          client.end();
        };
        channel.on("close", () => client.end());
        resolve({ body: Readable.toWeb(channel) as ReadableStream<Uint8Array>, stderr: () => stderr.trim().slice(0, 500), close });
      });
    });
    let parsedKey = true;
    try {
      client.connect({
        sock,
        username: user,
        privateKey: options.credentials.privateKey,
        readyTimeout: options.timeoutMs,
        hostVerifier: (key: Buffer) => {
          verdict = checkHostKey(options.credentials.knownHosts, host, port, key);
          return verdict === "ok";
        },
      });
    } catch (e) {
      parsedKey = false;
      // ssh2 throws on a key it cannot parse; its message never quotes the key.
      void e;
    }
    if (!parsedKey) fail(new SshTransportError("auth", "ssh-privatekey cannot be parsed (an unencrypted OpenSSH or PEM private key is needed)"));
  });
}
