// A docker-registry (distribution 2.8) on loopback that uses the bearer-token flow: HTTPS with a
// self-signed certificate (SAN IP:127.0.0.1), `auth.token` pointing at a tiny token service of
// ours (plain HTTP on loopback) that issues RS256 JWTs with an x5c certificate distribution trusts
// via `rootcertbundle`. The shared test bed has anonymous and basic-auth registries only; the OCI
// tests start this one themselves to exercise the token flow against the real registry.
import { createSign, randomUUID, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, httpGet, run, startDaemon, type Daemon } from "./process.ts";

export interface TokenRegistry {
  host: string;
  caFile: string;
  username: string;
  password: string;
  /** Requests the token service answered, for assertions. */
  tokenRequests: { scopes: string[]; account: string | undefined; authorized: boolean }[];
  stop(): Promise<void>;
}

interface CertFiles {
  certFile: string;
  keyFile: string;
}

/** A self-signed certificate (its own CA) for 127.0.0.1 / localhost. */
async function makeSelfSignedCert(dir: string, name: string, keyType: "rsa" | "ec" = "ec"): Promise<CertFiles> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const keyArgs = keyType === "rsa" ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
  await run("openssl", [
    "req",
    "-x509",
    ...keyArgs,
    "-nodes",
    "-days",
    "30",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-subj",
    `/CN=${name}`,
    "-addext",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,digitalSignature,keyCertSign",
  ]);
  return { certFile, keyFile };
}

interface RegistryConfig {
  dir: string;
  port: number;
  tls?: CertFiles;
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
