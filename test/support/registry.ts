// OCI registries for the test bed: Debian's docker-registry (distribution 2.8.2) with a generated
// config.yml and filesystem storage in a temp dir. One plain-HTTP registry without auth, and one
// TLS registry (certificate from a test CA, SAN IP:127.0.0.1) with htpasswd (bcrypt) basic auth.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, writeFile, copyFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { makeLeaf, type CertFiles } from "./pki.ts";
import { freePort, httpGet, run, startDaemon, type Daemon } from "./process.ts";

export interface RegistryOptions {
  name: string;
  /** Directory for config, storage and certificates of this registry. */
  dir: string;
  logFile: string;
  binary?: string;
  /** TLS with a server certificate signed by this CA, plus htpasswd basic auth. */
  tls?: { ca: CertFiles; username: string; password: string };
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Registry {
  host: string;
  url: string;
  rootDir: string;
  configFile: string;
  daemon: Daemon;
  /** TLS only. */
  caFile?: string;
  certsDir?: string;
  authFile?: string;
  username?: string;
  password?: string;
}

const missingHint = "apt-get install docker-registry, or run scripts/setup.sh";

async function htpasswdLine(username: string, password: string): Promise<string> {
  try {
    // -B bcrypt (the only hash distribution accepts), -i password on stdin, -n print.
    const { stdout } = await run("htpasswd", ["-niB", "-C", "5", username], { input: password });
    return stdout.trim() + "\n";
  } catch (e) {
    throw new Error(`${(e as Error).message}\n(htpasswd: apt-get install apache2-utils, or run scripts/setup.sh)`);
  }
}

export async function startRegistry(opts: RegistryOptions): Promise<Registry> {
  const rootDir = join(opts.dir, "storage");
  await mkdir(rootDir, { recursive: true });
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: "info", formatter: "text", fields: { service: opts.name } },
    storage: {
      filesystem: { rootdirectory: rootDir },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false }, readonly: { enabled: false } },
    },
    http: {
      addr: host,
      secret: randomBytes(16).toString("hex"),
      headers: { "X-Content-Type-Options": ["nosniff"] },
      draintimeout: "1s",
    },
    health: { storagedriver: { enabled: false } },
  };
  const result: Omit<Registry, "daemon"> = { host, url: "", rootDir, configFile: join(opts.dir, "config.yml") };
  const httpCfg = config.http as Record<string, unknown>;
  if (opts.tls) {
    const certsDir = join(opts.dir, "certs.d", host);
    await mkdir(certsDir, { recursive: true });
    const [server, line] = await Promise.all([
      makeLeaf(opts.dir, opts.tls.ca, {
        name: "server",
        commonName: "127.0.0.1",
        usage: "server",
        altNames: ["IP:127.0.0.1", "DNS:localhost"],
      }),
      htpasswdLine(opts.tls.username, opts.tls.password),
    ]);
    const htpasswdFile = join(opts.dir, "htpasswd");
    const authFile = join(opts.dir, "auth.json");
    const auth = Buffer.from(`${opts.tls.username}:${opts.tls.password}`).toString("base64");
    await Promise.all([
      writeFile(htpasswdFile, line, { mode: 0o600 }),
      writeFile(authFile, JSON.stringify({ auths: { [host]: { auth } } }, null, 2) + "\n", { mode: 0o600 }),
      // containers-style cert dir (skopeo --dest-cert-dir / --src-cert-dir, containerd certs.d).
      copyFile(opts.tls.ca.certFile, join(certsDir, "ca.crt")),
    ]);
    httpCfg.tls = { certificate: server.certFile, key: server.keyFile };
    config.auth = { htpasswd: { realm: `${opts.name}-realm`, path: htpasswdFile } };
    Object.assign(result, {
      url: `https://${host}`,
      caFile: opts.tls.ca.certFile,
      certsDir,
      authFile,
      username: opts.tls.username,
      password: opts.tls.password,
    });
  } else {
    result.url = `http://${host}`;
  }
  await writeFile(result.configFile, stringify(config));
  const ca = opts.tls ? readFileSync(opts.tls.ca.certFile) : undefined;
  const daemon = await startDaemon({
    name: opts.name,
    command: opts.binary ?? "docker-registry",
    args: ["serve", result.configFile],
    logFile: opts.logFile,
    signal: opts.signal,
    missingHint,
    timeoutMs: opts.timeoutMs ?? 20_000,
    ready: async () => {
      const r = await httpGet(`${result.url}/v2/`, { ca, timeoutMs: 1000 });
      return r.status === (opts.tls ? 401 : 200);
    },
  });
  return { ...result, daemon };
}
