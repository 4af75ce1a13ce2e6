// TLS and authentication against real registries: the test bed's HTTPS + htpasswd registry
// (basic auth, custom CA, credentials from its dockerconfigjson file), and a registry of our own
// using the bearer-token flow (distribution's auth.token + a token service on loopback). Errors
// must say what is wrong and never carry a credential.
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { pushClosure } from "../../src/image/push-closure.ts";
import { credentialsForHost, parseDockerConfigText } from "../../src/oci/docker-config.ts";
import { RegistryClient } from "../../src/oci/registry-client.ts";
import { RegistryError } from "../../src/oci/registry-error.ts";
import { buildNixClosure, type NixClosure } from "../support/nix-closure-fixture.ts";
import { startTokenRegistry, type TokenRegistry } from "../support/oci-token-registry.ts";
import { run } from "../support/process.ts";
import type { TestBed } from "../support/testbed-types.ts";

function bed(): TestBed {
  const b = inject("testbed");
  if (!b?.registry?.tls?.host) throw new Error('no test bed (inject("testbed") is empty): run with the integration project\'s global setup');
  return b;
}

const runTag = randomBytes(4).toString("hex");
const noRetry = { maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1, maxRetryAfterMs: 0 };
let tb: TestBed;
let work: string;
let app: NixClosure;

async function failure(p: Promise<unknown>): Promise<Error> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof Error)) throw new Error("expected a failure");
  return e;
}

function expectNoSecret(err: Error, secrets: string[]): void {
  const everything = [err.message, String(err.stack), JSON.stringify(err), String((err as { cause?: unknown }).cause ?? "")].join("\n");
  for (const s of secrets) expect(everything).not.toContain(s);
}

beforeAll(async () => {
  tb = bed();
  work = mkdtempSync(join(tb.tmpDir, "oci-auth-"));
  app = await buildNixClosure(tb.nix.env, `auth-${runTag}`, work);
});

describe("HTTPS + basic auth (test bed registry)", () => {
  const repo = `oci-auth/${runTag}/web`;

  it("pushes with credentials from the dockerconfigjson file and the registry's CA; skopeo reads it back", async () => {
    const { tls } = tb.registry;
    const creds = credentialsForHost(parseDockerConfigText(readFileSync(tls.authFile)), tls.host);
    expect(creds?.username).toBe(tls.username);
    const client = new RegistryClient({ host: tls.host, caFile: tls.caFile, credentials: creds! });
    try {
      await client.ping();
      const r = await pushClosure({ registry: client, repository: repo, closure: app.closure, roots: [app.app], tags: ["v1"] });
      expect(r.layers.pushed).toBe(5);
      const out = await run("skopeo", ["inspect", "--cert-dir", tls.certsDir, "--authfile", tls.authFile, `docker://${tls.host}/${repo}@${r.digest}`]);
      expect((JSON.parse(out.stdout) as { Digest: string }).Digest).toBe(r.digest);
      const again = await pushClosure({ registry: client, repository: repo, closure: app.closure, roots: [app.app], tags: ["v1"], onCacheMiss: "hash-first" });
      expect(again.layers.skipped).toBe(5);
      expect(await client.listTags(repo)).toEqual(["v1"]);
    } finally {
      client.close();
    }
  });

  it("rejects a wrong password with a clear error that does not contain it", async () => {
    const { tls } = tb.registry;
    const password = `wrong-${randomBytes(6).toString("hex")}`;
    const client = new RegistryClient({ host: tls.host, caFile: tls.caFile, credentials: { username: tls.username, password }, retry: noRetry });
    const err = await failure(pushClosure({ registry: client, repository: repo, closure: app.closure, roots: [app.app], tags: ["x"] }));
    client.close();
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.message).toMatch(
      new RegExp(`^registry ${tls.host.replace(/\./g, "\\.")}: .* failed: HTTP 401: UNAUTHORIZED: .*the registry rejected the credentials`),
    );
    expectNoSecret(err, [password, Buffer.from(`${tls.username}:${password}`).toString("base64"), tls.password]);
  });

  it("says so when credentials are needed and none are configured", async () => {
    const { tls } = tb.registry;
    const client = new RegistryClient({ host: tls.host, caFile: tls.caFile, retry: noRetry });
    const err = await failure(client.hasBlob(repo, `sha256:${"0".repeat(64)}`));
    client.close();
    expect(err.message).toMatch(/HTTP 401.*requires authentication and no credentials are configured/);
  });

  it("does not trust the registry's certificate without its CA", async () => {
    const { tls } = tb.registry;
    const client = new RegistryClient({ host: tls.host, credentials: { username: tls.username, password: tls.password }, retry: noRetry });
    const err = await failure(client.ping());
    client.close();
    expect(err.message).toMatch(/certificate/i);
    expectNoSecret(err, [tls.password]);
  });

  it("uses HTTPS unless plain HTTP is asked for", async () => {
    const plainAsHttps = new RegistryClient({ host: tb.registry.plain.host, retry: noRetry });
    const err = await failure(plainAsHttps.ping());
    plainAsHttps.close();
    expect(err.message).toMatch(/EPROTO|wrong version number|SSL/i);
    const plain = new RegistryClient({ host: tb.registry.plain.host, plainHttp: true });
    await plain.ping();
    plain.close();
  });
});

describe("bearer-token flow (docker-registry with auth.token)", () => {
  let reg: TokenRegistry;
  let certDir: string;
  const repo = `oci-token/${runTag}/web`;

  beforeAll(async () => {
    reg = await startTokenRegistry(mkdtempSync(join(tb.tmpDir, "oci-token-registry-")));
    certDir = join(work, "token-certs");
    mkdirSync(certDir);
    copyFileSync(reg.caFile, join(certDir, "ca.crt"));
  });
  afterAll(async () => reg?.stop());

  it("gets a token for the repository scope and pushes; skopeo reads the image with the same credentials", async () => {
    const client = new RegistryClient({ host: reg.host, caFile: reg.caFile, credentials: { username: reg.username, password: reg.password } });
    try {
      const r = await pushClosure({ registry: client, repository: repo, closure: app.closure, roots: [app.app], tags: ["v1"] });
      expect(r.layers.pushed).toBe(5);
      expect(reg.tokenRequests.length).toBeGreaterThan(0);
      expect(reg.tokenRequests.every((t) => t.authorized && t.account === reg.username)).toBe(true);
      expect(reg.tokenRequests[0]!.scopes).toEqual([`repository:${repo}:pull,push`]);
      // The token is cached per scope: a handful of token requests for a whole push, not one per request.
      expect(reg.tokenRequests.length).toBeLessThanOrEqual(3);
      const out = await run("skopeo", ["inspect", "--cert-dir", certDir, "--creds", `${reg.username}:${reg.password}`, `docker://${reg.host}/${repo}:v1`]);
      expect((JSON.parse(out.stdout) as { Digest: string }).Digest).toBe(r.digest);

      // Mount into another repository needs pull on the source too: both scopes in one token.
      const other = `oci-token/${runTag}/other`;
      const mounted = await client.mountBlob(other, r.layerDetails[0]!.digest, repo);
      expect(mounted).toBe(true);
      expect(reg.tokenRequests.at(-1)!.scopes).toEqual([`repository:${other}:pull,push`, `repository:${repo}:pull`]);
    } finally {
      client.close();
    }
  });

  it("reports a refused token request without the password", async () => {
    const password = `bad-${randomBytes(6).toString("hex")}`;
    const client = new RegistryClient({ host: reg.host, caFile: reg.caFile, credentials: { username: reg.username, password }, retry: noRetry });
    const err = await failure(client.hasBlob(repo, `sha256:${"0".repeat(64)}`));
    client.close();
    expect(err.message).toMatch(
      /token request to 127\.0\.0\.1:\d+ failed: HTTP 401: UNAUTHORIZED: bad credentials: the token service rejected the credentials/,
    );
    expectNoSecret(err, [password, reg.password]);
  });
});
