// Protocol behaviour of the registry client against a scripted HTTP server on loopback: exact
// URLs and headers sent, digest checks, retries, the auth flows, and what errors may contain.
// (The real docker-registry is exercised in test/integration/oci-*.test.ts.)
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { RegistryClient, withDigestParam, nextLink, type BlobStreamSource } from "../../src/oci/registry-client.ts";
import { RegistryError } from "../../src/oci/registry-error.ts";
import type { Digest } from "../../src/oci/digest.ts";

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

type Handler = (req: Seen, res: ServerResponse) => void;

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

async function fakeServer(handler: Handler): Promise<{ host: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const s: Seen = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) };
      seen.push(s);
      handler(s, res);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return { host: `127.0.0.1:${port}`, seen };
}

const sha = (b: Buffer | string) => `sha256:${createHash("sha256").update(b).digest("hex")}` as Digest;
const fastRetry = { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2, maxRetryAfterMs: 1000 };

function client(host: string, extra: Partial<ConstructorParameters<typeof RegistryClient>[0]> = {}): RegistryClient {
  return new RegistryClient({ host, plainHttp: true, retry: fastRetry, ...extra });
}

function bufferSource(data: Buffer, opens: { n: number } = { n: 0 }): BlobStreamSource {
  return {
    open: () => {
      opens.n++;
      return { stream: Readable.from([data.subarray(0, 3), data.subarray(3)]), result: Promise.resolve({ digest: sha(data), size: data.length }) };
    },
  };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

/** A minimal upload-capable registry: relative Locations that carry a query string. */
function uploadHandler(opts: { putDigest?: (d: string) => string; failFirst?: number } = {}): Handler {
  let failures = opts.failFirst ?? 0;
  return (req, res) => {
    const u = new URL(req.url, "http://x");
    if (req.method === "POST" && u.pathname === "/v2/acme/web/blobs/uploads/") {
      res.writeHead(202, { Location: "/v2/acme/web/blobs/uploads/u1?_state=abc%3D%3D", "Content-Length": "0" });
      return res.end();
    }
    if (req.method === "PATCH" && u.pathname === "/v2/acme/web/blobs/uploads/u1") {
      if (failures > 0) {
        failures--;
        return json(res, 503, { errors: [{ code: "UNAVAILABLE", message: "try later" }] });
      }
      res.writeHead(202, { Location: "/v2/acme/web/blobs/uploads/u1?_state=def", Range: `0-${req.body.length - 1}`, "Content-Length": "0" });
      return res.end();
    }
    if (req.method === "PUT" && u.pathname === "/v2/acme/web/blobs/uploads/u1") {
      const d = u.searchParams.get("digest") ?? "";
      res.writeHead(201, { "Docker-Content-Digest": opts.putDigest ? opts.putDigest(d) : d, "Content-Length": "0" });
      return res.end();
    }
    if (req.method === "DELETE") {
      res.writeHead(204);
      return res.end();
    }
    json(res, 404, { errors: [{ code: "NOT_FOUND", message: `${req.method} ${u.pathname}` }] });
  };
}

describe("RegistryClient blob operations", () => {
  it("HEAD: 200 gives the size, 404 gives undefined (its Content-Length ignored)", async () => {
    const d = sha("x");
    const { host } = await fakeServer((req, res) => {
      if (req.url.endsWith(d)) {
        res.writeHead(200, { "Content-Length": "1234" });
      } else {
        res.writeHead(404, { "Content-Length": "157", "Content-Type": "application/json" });
      }
      res.end();
    });
    const c = client(host);
    expect(await c.hasBlob("acme/web", d)).toEqual({ digest: d, size: 1234 });
    expect(await c.hasBlob("acme/web", sha("y"))).toBeUndefined();
  });

  it("streams an upload: POST, chunked PATCH to the relative Location, PUT with &digest= appended to its query", async () => {
    const { host, seen } = await fakeServer(uploadHandler());
    const data = Buffer.from("layer bytes of unknown length");
    const info = await client(host).uploadBlobStream("acme/web", bufferSource(data));
    expect(info).toEqual({ digest: sha(data), size: data.length });
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      "POST /v2/acme/web/blobs/uploads/",
      "PATCH /v2/acme/web/blobs/uploads/u1?_state=abc%3D%3D",
      `PUT /v2/acme/web/blobs/uploads/u1?_state=def&digest=${encodeURIComponent(sha(data))}`,
    ]);
    const patch = seen[1]!;
    expect(patch.headers["transfer-encoding"]).toBe("chunked");
    expect(patch.headers["content-length"]).toBeUndefined();
    expect(patch.body.equals(data)).toBe(true);
    expect(seen[2]!.headers["content-length"]).toBe("0");
  });

  it("uploads a small blob with POST then PUT carrying the bytes", async () => {
    const { host, seen } = await fakeServer(uploadHandler());
    const data = Buffer.from('{"config":true}');
    expect(await client(host).uploadBlob("acme/web", data)).toEqual({ digest: sha(data), size: data.length });
    expect(seen[1]!.method).toBe("PUT");
    expect(seen[1]!.body.equals(data)).toBe(true);
  });

  it("fails when the registry reports another digest than the one computed", async () => {
    const { host } = await fakeServer(uploadHandler({ putDigest: () => sha("other") }));
    await expect(client(host).uploadBlobStream("acme/web", bufferSource(Buffer.from("abc")))).rejects.toThrow(/stored digest sha256:.*expected/);
  });

  it("retries a failed streamed upload from the start with a fresh stream", async () => {
    const { host, seen } = await fakeServer(uploadHandler({ failFirst: 1 }));
    const opens = { n: 0 };
    await client(host).uploadBlobStream("acme/web", bufferSource(Buffer.from("retry me"), opens));
    expect(opens.n).toBe(2);
    expect(seen.filter((s) => s.method === "POST")).toHaveLength(2);
    expect(seen.filter((s) => s.method === "DELETE")).toHaveLength(1); // the failed session is cancelled
  });

  it("reports the source's own error when the stream fails, and cancels the session", async () => {
    const { host, seen } = await fakeServer(uploadHandler());
    const failing: BlobStreamSource = {
      open: () => {
        const stream = new Readable({ read() {} });
        stream.push(Buffer.alloc(10));
        const err = Object.assign(new Error("lstat /nix/store/x-gone: ENOENT"), { code: "ENOENT" });
        setTimeout(() => stream.destroy(err), 5);
        return { stream, result: new Promise((_, reject) => stream.once("error", reject)) };
      },
    };
    await expect(client(host).uploadBlobStream("acme/web", failing)).rejects.toThrow(/ENOENT/);
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.filter((s) => s.method === "POST")).toHaveLength(1); // not retried: a missing file stays missing
    expect(seen.some((s) => s.method === "DELETE")).toBe(true);
  });

  it("mounts: 201 is done, 202 falls back (the started session is cancelled)", async () => {
    const d = sha("m");
    const { host, seen } = await fakeServer((req, res) => {
      if (req.method === "POST" && req.url.includes("from=acme%2Fbase")) {
        res.writeHead(201, { Location: `/v2/acme/web/blobs/${d}` });
      } else if (req.method === "POST") {
        res.writeHead(202, { Location: "/v2/acme/web/blobs/uploads/u9?_state=z" });
      } else res.writeHead(204);
      res.end();
    });
    const c = client(host);
    expect(await c.mountBlob("acme/web", d, "acme/base")).toBe(true);
    expect(await c.mountBlob("acme/web", d, "other/repo")).toBe(false);
    expect(seen[0]!.url).toBe(`/v2/acme/web/blobs/uploads/?mount=${encodeURIComponent(d)}&from=acme%2Fbase`);
    expect(seen.at(-1)!.method).toBe("DELETE");
    expect(seen.at(-1)!.url).toBe("/v2/acme/web/blobs/uploads/u9?_state=z");
  });

  it("honours Retry-After on 429 and retries 5xx for bodiless requests", async () => {
    let n = 0;
    const { host } = await fakeServer((_req, res) => {
      n++;
      if (n === 1) json(res, 429, { errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] }, { "Retry-After": "0" });
      else if (n === 2) json(res, 502, {});
      else {
        res.writeHead(200, { "Content-Length": "5" });
        res.end();
      }
    });
    expect(await client(host).hasBlob("acme/web", sha("a"))).toEqual({ digest: sha("a"), size: 5 });
    expect(n).toBe(3);
  });

  it("puts the registry's error code and message into the error", async () => {
    const { host } = await fakeServer((_req, res) =>
      json(res, 400, { errors: [{ code: "MANIFEST_BLOB_UNKNOWN", message: "blob unknown to registry", detail: { digest: "sha256:x" } }] }),
    );
    const bytes = Buffer.from("{}");
    const err = await client(host)
      .putManifest("acme/web", "v1", { bytes, mediaType: "application/vnd.oci.image.manifest.v1+json" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).message).toMatch(/PUT manifest acme\/web:v1 failed: HTTP 400: MANIFEST_BLOB_UNKNOWN: blob unknown to registry/);
    expect((err as RegistryError).hasCode("MANIFEST_BLOB_UNKNOWN")).toBe(true);
  });
});

describe("RegistryClient manifests and tags", () => {
  it("PUTs the exact manifest bytes and checks the returned digest", async () => {
    const bytes = Buffer.from('{"schemaVersion":2}');
    let wrong = false;
    const { host, seen } = await fakeServer((req, res) => {
      res.writeHead(201, { "Docker-Content-Digest": wrong ? sha("x") : sha(req.body) });
      res.end();
    });
    const c = client(host);
    expect(await c.putManifest("acme/web", "v1", { bytes, mediaType: "application/vnd.oci.image.manifest.v1+json" })).toBe(sha(bytes));
    expect(seen[0]!.body.equals(bytes)).toBe(true);
    expect(seen[0]!.headers["content-type"]).toBe("application/vnd.oci.image.manifest.v1+json");
    wrong = true;
    await expect(c.putManifest("acme/web", "v1", { bytes, mediaType: "x" })).rejects.toThrow(/computed digest/);
    await expect(c.putManifest("acme/web", sha("other"), { bytes, mediaType: "x" })).rejects.toThrow(/do not match/);
    await expect(c.putManifest("acme/web", "bad tag", { bytes, mediaType: "x" })).rejects.toThrow(/invalid tag/);
  });

  it("GETs a manifest with the Accept list and verifies a digest reference", async () => {
    const bytes = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}');
    const { host, seen } = await fakeServer((_req, res) => {
      res.writeHead(200, { "Content-Type": "application/vnd.oci.image.manifest.v1+json; charset=utf-8" });
      res.end(bytes);
    });
    const c = client(host);
    const m = await c.getManifest("acme/web", sha(bytes));
    expect(m).toEqual({ bytes, mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha(bytes) });
    expect(String(seen[0]!.headers.accept)).toContain("application/vnd.oci.image.index.v1+json");
    await expect(c.getManifest("acme/web", sha("other"))).rejects.toThrow(/do not match the requested digest/);
  });

  it("lists tags across pages and gives [] for an unknown repository", async () => {
    const { host } = await fakeServer((req, res) => {
      if (req.url.startsWith("/v2/none/")) return json(res, 404, { errors: [{ code: "NAME_UNKNOWN", message: "repository name not known" }] });
      if (req.url.includes("last=b")) return json(res, 200, { name: "acme/web", tags: ["c"] });
      json(res, 200, { name: "acme/web", tags: ["a", "b"] }, { Link: '</v2/acme/web/tags/list?n=2&last=b>; rel="next"' });
    });
    const c = client(host);
    expect(await c.listTags("acme/web")).toEqual(["a", "b", "c"]);
    expect(await c.listTags("none")).toEqual([]);
  });
});

describe("RegistryClient authentication", () => {
  const password = "pa55-w0rd-SECRET";
  const basic = `Basic ${Buffer.from(`bob:${password}`).toString("base64")}`;

  it("answers a Basic challenge and then sends credentials up front", async () => {
    const { host, seen } = await fakeServer((req, res) => {
      if (req.headers.authorization !== basic) {
        res.writeHead(401, { "WWW-Authenticate": 'Basic realm="r"', "Content-Type": "application/json" });
        return res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
      }
      res.writeHead(200, { "Content-Length": "3" });
      res.end();
    });
    const c = client(host, { credentials: { username: "bob", password } });
    await c.hasBlob("acme/web", sha("a"));
    await c.hasBlob("acme/web", sha("b"));
    expect(seen.map((s) => s.headers.authorization === basic)).toEqual([false, true, true]);
  });

  it("runs the bearer flow: token with Basic creds and scope, cached per scope", async () => {
    const token = "tok-AAAA-secret";
    const tokenServer = await fakeServer((req, res) => {
      if (req.headers.authorization !== basic) return json(res, 401, { details: "bad creds" });
      json(res, 200, { token, expires_in: 300 });
    });
    const { host, seen } = await fakeServer((req, res) => {
      if (req.headers.authorization !== `Bearer ${token}`) {
        res.writeHead(401, {
          "WWW-Authenticate": `Bearer realm="http://${tokenServer.host}/token",service="fake-registry",scope="repository:acme/web:pull,push"`,
        });
        return res.end();
      }
      res.writeHead(404);
      res.end();
    });
    const c = client(host, { credentials: { username: "bob", password } });
    expect(await c.hasBlob("acme/web", sha("a"))).toBeUndefined();
    expect(await c.hasBlob("acme/web", sha("b"))).toBeUndefined();
    expect(tokenServer.seen).toHaveLength(1);
    const t = new URL(tokenServer.seen[0]!.url, "http://x");
    expect(t.searchParams.get("service")).toBe("fake-registry");
    expect(t.searchParams.getAll("scope")).toEqual(["repository:acme/web:pull,push"]);
    expect(t.searchParams.get("account")).toBe("bob");
    expect(seen.map((s) => s.headers.authorization)).toEqual([undefined, `Bearer ${token}`, `Bearer ${token}`]);
  });

  it("exchanges an identitytoken with an OAuth2 refresh-token POST", async () => {
    const tokenServer = await fakeServer((_req, res) => json(res, 200, { access_token: "acc-123456" }));
    const { host } = await fakeServer((req, res) => {
      if (req.headers.authorization !== "Bearer acc-123456") {
        res.writeHead(401, { "WWW-Authenticate": `Bearer realm="http://${tokenServer.host}/oauth2/token",service="svc"` });
        return res.end();
      }
      res.writeHead(200, { "Content-Length": "1" });
      res.end();
    });
    await client(host, { credentials: { identityToken: "refresh-SECRET-1" } }).hasBlob("acme/web", sha("a"));
    const form = new URLSearchParams(tokenServer.seen[0]!.body.toString());
    expect(tokenServer.seen[0]!.method).toBe("POST");
    expect(Object.fromEntries(form)).toEqual({
      grant_type: "refresh_token",
      refresh_token: "refresh-SECRET-1",
      client_id: "nix-image-operator",
      service: "svc",
      scope: "repository:acme/web:pull,push",
    });
  });

  it("reports rejected credentials clearly and without any secret", async () => {
    const { host } = await fakeServer((req, res) => {
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="r"', "Content-Type": "application/json" });
      // A registry that (badly) echoes what it got must not make us leak it.
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: `bad auth ${req.headers.authorization ?? ""} for ${password}` }] }));
    });
    const err = (await client(host, { credentials: { username: "bob", password } })
      .hasBlob("acme/web", sha("a"))
      .catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.message).toMatch(/HTTP 401/);
    expect(err.message).toMatch(/rejected the credentials/);
    const head = (await client(host, { credentials: { username: "bob", password } })
      .putManifest("acme/web", "v1", { bytes: Buffer.from("{}"), mediaType: "x" })
      .catch((e: unknown) => e)) as Error;
    for (const m of [err.message, head.message, JSON.stringify(head), String(head.stack)]) {
      expect(m).not.toContain(password);
      expect(m).not.toContain(basic.slice(6));
    }
    expect(head.message).toContain("UNAUTHORIZED");
  });

  it("says when credentials are needed but none are configured", async () => {
    const { host } = await fakeServer((_req, res) => {
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="r"' });
      res.end();
    });
    await expect(client(host).hasBlob("acme/web", sha("a"))).rejects.toThrow(/requires authentication and no credentials are configured/);
  });

  it("reports a token service refusal without the password", async () => {
    const tokenServer = await fakeServer((_req, res) => json(res, 401, { errors: [{ code: "DENIED", message: `no ${password}` }] }));
    const { host } = await fakeServer((_req, res) => {
      res.writeHead(401, { "WWW-Authenticate": `Bearer realm="http://${tokenServer.host}/token",service="s"` });
      res.end();
    });
    const err = (await client(host, { credentials: { username: "bob", password } })
      .hasBlob("acme/web", sha("a"))
      .catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/token request .* failed: HTTP 401: DENIED: no \[redacted\]: the token service rejected the credentials/);
    expect(err.message).not.toContain(password);
  });

  it("refuses to send credentials to a plain-HTTP token realm of an HTTPS registry", async () => {
    const { RegistryAuthenticator } = await import("../../src/oci/auth.ts");
    const { HttpTransport } = await import("../../src/oci/http-transport.ts");
    const { systemClock } = await import("../../src/runtime/clock.ts");
    const auth = new RegistryAuthenticator({
      host: "reg.example.com",
      credentials: { username: "bob", password },
      transport: new HttpTransport({}),
      clock: systemClock,
    });
    await expect(auth.onUnauthorized('Bearer realm="http://auth.example.com/token"', ["repository:a:pull"], undefined)).rejects.toThrow(
      /refusing to send credentials to a plain-HTTP token realm/,
    );
  });

  it("never sends the Authorization header to another origin (upload Location elsewhere)", async () => {
    const other = await fakeServer((req, res) => {
      if (req.method === "PATCH") {
        res.writeHead(202, { Location: req.url });
      } else {
        res.writeHead(201, { "Docker-Content-Digest": new URL(req.url, "http://x").searchParams.get("digest") ?? "" });
      }
      res.end();
    });
    const { host, seen } = await fakeServer((req, res) => {
      if (req.headers.authorization !== basic) {
        res.writeHead(401, { "WWW-Authenticate": 'Basic realm="r"' });
        return res.end();
      }
      res.writeHead(202, { Location: `http://${other.host}/upload/1?sig=x` });
      res.end();
    });
    await client(host, { credentials: { username: "bob", password } }).uploadBlobStream("acme/web", bufferSource(Buffer.from("data")));
    expect(seen.at(-1)!.headers.authorization).toBe(basic);
    expect(other.seen.map((s) => s.method)).toEqual(["PATCH", "PUT"]);
    expect(other.seen.every((s) => s.headers.authorization === undefined)).toBe(true);
  });
});

describe("helpers", () => {
  it("withDigestParam appends to an existing query or starts one", () => {
    const d = sha("z");
    expect(withDigestParam(new URL("http://h/u?_state=a%3D"), d).href).toBe(`http://h/u?_state=a%3D&digest=${encodeURIComponent(d)}`);
    expect(withDigestParam(new URL("http://h/u"), d).href).toBe(`http://h/u?digest=${encodeURIComponent(d)}`);
  });

  it("nextLink finds rel=next", () => {
    expect(nextLink('</v2/x/tags/list?n=1&last=a>; rel="next"')).toBe("/v2/x/tags/list?n=1&last=a");
    expect(nextLink('<a>; rel="prev"')).toBeUndefined();
    expect(nextLink(undefined)).toBeUndefined();
  });
});
