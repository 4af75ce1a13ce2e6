// Real docker-registry (distribution 2.8) instances on loopback for the OCI tests:
// - plain HTTP, anonymous;
// - HTTPS with a self-signed CA (SAN IP:127.0.0.1) and htpasswd basic auth, plus a
//   dockerconfigjson auth file for it;
// - HTTPS with the bearer-token flow: distribution's `auth.token` against a tiny token service of
//   ours (JWT RS256 with an x5c certificate that distribution trusts via rootcertbundle).
// Usable as a vitest globalSetup (provides "testbed" in the shape the shared test bed uses) while
// the shared one is not ready, and as a library for tests that need their own registry.
import { createHash, createSign, randomUUID, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, httpGet, run, startDaemon, type Daemon } from "./process.ts";

export interface OciTestbedRegistries {
  plain: { host: string; storageRoot: string };
  tls: { host: string; caFile: string; username: string; password: string; authFile: string; storageRoot: string };
}

export interface TokenRegistry {
  host: string;
  caFile: string;
  username: string;
  password: string;
  /** Requests the token service answered, for assertions. */
  tokenRequests: { scopes: string[]; account: string | undefined; authorized: boolean }[];
  stop(): Promise<void>;
}

export interface CertFiles {
  certFile: string;
  keyFile: string;
}

/** A self-signed certificate (its own CA) for 127.0.0.1 / localhost. */
export async function makeSelfSignedCert(dir: string, name: string, keyType: "rsa" | "ec" = "ec"): Promise<CertFiles> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const keyArgs = keyType === "rsa" ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
  await run("openssl", [
    "req", "-x509", ...keyArgs, "-nodes", "-days", "30",
    "-keyout", keyFile, "-out", certFile,
    "-subj", `/CN=${name}`,
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
  ]);
  return { certFile, keyFile };
}

interface RegistryConfig {
  dir: string;
  port: number;
  tls?: CertFiles;
  htpasswd?: string;
  token?: { realm: string; service: string; issuer: string; rootCertBundle: string };
}

function registryYaml(c: RegistryConfig, storageRoot: string): string {
  const lines = [
    "version: 0.1",
    "log:",
    "  level: warn",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${storageRoot}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: 127.0.0.1:${c.port}`,
    "  secret: nix-image-operator-test-secret",
  ];
  if (c.tls) lines.push("  tls:", `    certificate: ${c.tls.certFile}`, `    key: ${c.tls.keyFile}`);
  if (c.htpasswd) lines.push("auth:", "  htpasswd:", "    realm: test-realm", `    path: ${c.htpasswd}`);
  if (c.token) {
    lines.push(
      "auth:",
      "  token:",
      `    realm: ${c.token.realm}`,
      `    service: ${c.token.service}`,
      `    issuer: ${c.token.issuer}`,
      `    rootcertbundle: ${c.token.rootCertBundle}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

async function startRegistry(name: string, c: RegistryConfig): Promise<{ daemon: Daemon; storageRoot: string; host: string }> {
  const storageRoot = join(c.dir, `${name}-storage`);
  mkdirSync(storageRoot, { recursive: true });
  const configFile = join(c.dir, `${name}.yml`);
  writeFileSync(configFile, registryYaml(c, storageRoot));
  const host = `127.0.0.1:${c.port}`;
  const ca = c.tls ? readFileSync(c.tls.certFile) : undefined;
  const daemon = await startDaemon({
    name: `docker-registry (${name})`,
    command: "docker-registry",
    args: ["serve", configFile],
    logFile: join(c.dir, `${name}.log`),
    ready: async () => {
      const r = await httpGet(`${c.tls ? "https" : "http"}://${host}/v2/`, { ...(ca ? { ca } : {}) });
      return r.status === 200 || r.status === 401;
    },
  });
  return { daemon, storageRoot, host };
}

export interface DevRegistries {
  registries: OciTestbedRegistries;
  stop(): Promise<void>;
}

/** Starts the plain and the TLS+htpasswd registry in a fresh temp dir. */
export async function startDevRegistries(baseDir?: string): Promise<DevRegistries> {
  const dir = baseDir ?? mkdtempSync(join(tmpdir(), "oci-registry-dev-"));
  const daemons: Daemon[] = [];
  try {
    const plain = await startRegistry("plain", { dir, port: await freePort() });
    daemons.push(plain.daemon);
    const cert = await makeSelfSignedCert(dir, "registry-tls");
    const username = "pusher";
    const password = `pw-${randomUUID()}`;
    const htpasswdFile = join(dir, "htpasswd");
    const { stdout } = await run("htpasswd", ["-Bbn", username, password]);
    writeFileSync(htpasswdFile, stdout);
    const tls = await startRegistry("tls", { dir, port: await freePort(), tls: cert, htpasswd: htpasswdFile });
    daemons.push(tls.daemon);
    const authFile = join(dir, "auth.json");
    writeFileSync(
      authFile,
      JSON.stringify({ auths: { [tls.host]: { auth: Buffer.from(`${username}:${password}`).toString("base64") } } }),
      { mode: 0o600 },
    );
    return {
      registries: {
        plain: { host: plain.host, storageRoot: plain.storageRoot },
        tls: { host: tls.host, caFile: cert.certFile, username, password, authFile, storageRoot: tls.storageRoot },
      },
      stop: async () => {
        for (const d of daemons.reverse()) await d.stop();
        if (!baseDir) rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const d of daemons) await d.stop();
    throw e;
  }
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

/**
 * A registry using the bearer-token flow, with our own token service (HTTP on loopback) that
 * grants every requested scope to `username`/`password` and to nobody else.
 */
export async function startTokenRegistry(baseDir?: string): Promise<TokenRegistry> {
  const dir = baseDir ?? mkdtempSync(join(tmpdir(), "oci-token-registry-"));
  const signing = await makeSelfSignedCert(dir, "token-signer", "rsa");
  const tlsCert = await makeSelfSignedCert(dir, "token-registry-tls");
  const signerDer = new X509Certificate(readFileSync(signing.certFile)).raw;
  const signerKey = readFileSync(signing.keyFile);
  const username = "robot";
  const password = `tok-${randomUUID()}`;
  const service = "nio-test-registry";
  const issuer = "nio-test-issuer";
  const tokenRequests: TokenRegistry["tokenRequests"] = [];

  const server: Server = createHttpServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const scopes = url.searchParams.getAll("scope");
    const auth = req.headers.authorization ?? "";
    const expected = `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
    const authorized = auth === expected;
    tokenRequests.push({ scopes, account: url.searchParams.get("account") ?? undefined, authorized });
    if (!authorized) {
      res.writeHead(401, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "bad credentials" }] }));
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    const access = scopes.flatMap((s) => {
      const m = /^repository:([^:]+):(.+)$/.exec(s);
      return m ? [{ type: "repository", name: m[1], actions: m[2]!.split(",") }] : [];
    });
    const header = { typ: "JWT", alg: "RS256", x5c: [signerDer.toString("base64")] };
    const claims = { iss: issuer, sub: username, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = createSign("RSA-SHA256").update(input).sign(signerKey);
    const token = `${input}.${base64url(signature)}`;
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date(now * 1000).toISOString() }));
  });
  const tokenPort = await freePort();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(tokenPort, "127.0.0.1", resolve);
  });
  let daemon: Daemon | undefined;
  try {
    const reg = await startRegistry("token", {
      dir,
      port: await freePort(),
      tls: tlsCert,
      token: { realm: `http://127.0.0.1:${tokenPort}/token`, service, issuer, rootCertBundle: signing.certFile },
    });
    daemon = reg.daemon;
    return {
      host: reg.host,
      caFile: tlsCert.certFile,
      username,
      password,
      tokenRequests,
      stop: async () => {
        await daemon?.stop();
        await new Promise<void>((r) => server.close(() => r()));
        if (!baseDir) rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await new Promise<void>((r) => server.close(() => r()));
    throw e;
  }
}

/** A digest-like id of the dev setup, for log lines. */
export function fingerprint(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 12);
}

/** vitest globalSetup for developing the OCI tests without the shared test bed. */
export default async function setup(ctx: { provide: (key: string, value: unknown) => void }): Promise<() => Promise<void>> {
  const dev = await startDevRegistries();
  ctx.provide("testbed", { registry: dev.registries });
  return dev.stop;
}
