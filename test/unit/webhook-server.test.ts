// The receiver over real HTTP on loopback: every answer, what it triggers and what it counts.
import { request } from "node:http";
import { readFileSync } from "node:fs";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MetricsRegistry } from "../../src/runtime/metrics.ts";
import { startWebhookServer, type WebhookServer } from "../../src/webhook/webhook-server.ts";
import { hmacSha256Hex } from "../../src/webhook/webhook-signature.ts";

const secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t";
const github = readFileSync(new URL("../fixtures/webhooks/github-push.json", import.meta.url));
const gitlab = readFileSync(new URL("../fixtures/webhooks/gitlab-push.json", import.meta.url));
const gitea = readFileSync(new URL("../fixtures/webhooks/gitea-push.json", import.meta.url));

interface Answer {
  status: number;
  body: { outcome?: string; niximages?: number; message?: string };
}

function post(
  port: number,
  headers: Record<string, string>,
  body: Buffer | undefined,
  options: { method?: string; path?: string; chunks?: Buffer[] } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method: options.method ?? "POST", path: options.path ?? "/webhook", headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString() || "{}") }));
    });
    req.on("error", reject);
    if (options.chunks) {
      // Streams without a Content-Length; stops writing when the server has answered.
      let i = 0;
      const next = () => {
        if (i < options.chunks!.length && !req.destroyed) req.write(options.chunks![i++], () => setImmediate(next));
        else req.end();
      };
      next();
    } else req.end(body);
  });
}

const githubHeaders = (body: Buffer, delivery: string, sign = secret) => ({
  "content-type": "application/json",
  "x-github-event": "push",
  "x-github-delivery": delivery,
  "x-hub-signature-256": `sha256=${hmacSha256Hex(sign, body)}`,
});

describe("webhook receiver", () => {
  let server: WebhookServer;
  const metrics = new MetricsRegistry();
  const triggered: string[][] = [];
  let failTrigger = false;
  const count = (forge: string, outcome: string) =>
    Number(new RegExp(`^niximage_webhook_deliveries_total\\{forge="${forge}",outcome="${outcome}"\\} (\\d+)$`, "m").exec(metrics.render())?.[1] ?? 0);

  beforeAll(async () => {
    server = await startWebhookServer({
      port: 0,
      host: "127.0.0.1",
      path: "/webhook",
      maxBodyBytes: 64 * 1024,
      rememberDeliveries: 100,
      secret: async () => Buffer.from(secret),
      images: () => [
        { key: "shop/web", flake: "github:acme/shop" },
        { key: "shop/api", flake: "git+https://github.com/acme/shop?ref=main" },
        { key: "pay/api", flake: "git+https://gitlab.example.com/acme/platform/payments.git" },
        { key: "tools/cli", flake: "git+https://git.example.org/acme/tools?ref=develop" },
      ],
      trigger: async (keys) => {
        if (failTrigger) throw new Error("API server unreachable");
        triggered.push(keys);
      },
      metrics,
      logger: pino({ level: "silent" }),
    });
  });
  afterAll(() => server.close());

  it("a signed GitHub push triggers the NixImages following that repository and branch; its redelivery is refused (409)", async () => {
    const first = await post(server.port, githubHeaders(github, "d-1"), github);
    expect(first).toEqual({ status: 202, body: { outcome: "triggered", message: "revision check requested", niximages: 2 } });
    expect(triggered.pop()).toEqual(["shop/web", "shop/api"]);
    const again = await post(server.port, githubHeaders(github, "d-1"), github);
    expect(again.status).toBe(409);
    expect(again.body.outcome).toBe("duplicate");
    expect(triggered).toEqual([]);
    expect(count("github", "triggered")).toBe(1);
    expect(count("github", "duplicate")).toBe(1);
  });

  it("a wrong or missing signature is 401 and triggers nothing (and does not burn the delivery id)", async () => {
    expect((await post(server.port, githubHeaders(github, "d-2", "wrong secret"), github)).status).toBe(401);
    const { "x-hub-signature-256": _, ...unsigned } = githubHeaders(github, "d-2");
    expect((await post(server.port, unsigned, github)).status).toBe(401);
    // The body changed after signing.
    const tampered = Buffer.from(github.toString().replace("acme/shop", "acme/shoq"));
    expect((await post(server.port, githubHeaders(github, "d-2"), tampered)).status).toBe(401);
    expect(triggered).toEqual([]);
    expect(count("github", "bad_signature")).toBe(3);
    expect((await post(server.port, githubHeaders(github, "d-2"), github)).status).toBe(202);
    triggered.length = 0;
  });

  it("a push no NixImage follows is 202 unmatched; a ping is 200; other events 202 ignored", async () => {
    const other = Buffer.from(github.toString().replaceAll("acme/shop", "acme/blog"));
    expect(await post(server.port, githubHeaders(other, "d-3"), other)).toMatchObject({ status: 202, body: { outcome: "unmatched", niximages: 0 } });
    const branch = Buffer.from(github.toString().replace('"ref": "refs/heads/main"', '"ref": "refs/heads/feature"'));
    expect(await post(server.port, githubHeaders(branch, "d-4"), branch)).toMatchObject({ status: 202, body: { outcome: "unmatched" } });
    const ping = Buffer.from(JSON.stringify({ zen: "Design for failure.", hook_id: 1 }));
    expect(await post(server.port, { ...githubHeaders(ping, "d-5"), "x-github-event": "ping" }, ping)).toMatchObject({
      status: 200,
      body: { outcome: "ping" },
    });
    expect(await post(server.port, { ...githubHeaders(ping, "d-6"), "x-github-event": "issues" }, ping)).toMatchObject({
      status: 202,
      body: { outcome: "ignored" },
    });
    expect(triggered).toEqual([]);
  });

  it("GitLab (token) and Gitea (hex HMAC) pushes; a form-encoded GitHub delivery", async () => {
    const gitlabHeaders = { "content-type": "application/json", "x-gitlab-event": "Push Hook", "x-gitlab-event-uuid": "u-1", "x-gitlab-token": secret };
    expect(await post(server.port, gitlabHeaders, gitlab)).toMatchObject({ status: 202, body: { outcome: "triggered", niximages: 1 } });
    expect(triggered.pop()).toEqual(["pay/api"]);
    expect((await post(server.port, { ...gitlabHeaders, "x-gitlab-event-uuid": "u-2", "x-gitlab-token": "nope" }, gitlab)).status).toBe(401);
    expect((await post(server.port, gitlabHeaders, gitlab)).status).toBe(409);

    const giteaHeaders = {
      "content-type": "application/json",
      "x-github-event": "push",
      "x-gitea-event": "push",
      "x-gitea-delivery": "g-1",
      "x-gitea-signature": hmacSha256Hex(secret, gitea),
    };
    expect(await post(server.port, giteaHeaders, gitea)).toMatchObject({ status: 202, body: { outcome: "triggered" } });
    expect(triggered.pop()).toEqual(["tools/cli"]);
    const forgejo = { ...giteaHeaders, "x-forgejo-event": "push", "x-forgejo-delivery": "f-1", "x-forgejo-signature": hmacSha256Hex("bad", gitea) };
    expect((await post(server.port, forgejo, gitea)).status).toBe(401);
    expect(count("forgejo", "bad_signature")).toBe(1);

    const form = Buffer.from(new URLSearchParams({ payload: github.toString() }).toString());
    const formHeaders = { ...githubHeaders(form, "d-7"), "content-type": "application/x-www-form-urlencoded" };
    expect(await post(server.port, formHeaders, form)).toMatchObject({ status: 202, body: { outcome: "triggered" } });
    triggered.length = 0;
  });

  it("rejects wrong paths, methods, content types, missing forge headers and bodies that are not push payloads", async () => {
    expect((await post(server.port, githubHeaders(github, "d-8"), github, { path: "/other" })).status).toBe(404);
    expect((await post(server.port, githubHeaders(github, "d-8"), undefined, { method: "GET" })).status).toBe(405);
    expect((await post(server.port, { ...githubHeaders(github, "d-8"), "content-type": "text/plain" }, github)).status).toBe(415);
    expect((await post(server.port, { "content-type": "application/json" }, github)).status).toBe(400);
    const junk = Buffer.from("{not json");
    expect(await post(server.port, githubHeaders(junk, "d-9"), junk)).toMatchObject({ status: 400, body: { message: "body is not valid JSON" } });
    const notPush = Buffer.from(JSON.stringify({ hello: "world" }));
    expect(await post(server.port, githubHeaders(notPush, "d-10"), notPush)).toMatchObject({ status: 400, body: { outcome: "bad_request" } });
    expect(triggered).toEqual([]);
    expect(count("unknown", "not_found")).toBe(1); // the path is checked before the forge is known
    expect(count("github", "bad_content_type")).toBe(1);
  });

  it("413 for a body over the limit: at once for a declared length, after the limit for a streamed one", async () => {
    const big = Buffer.alloc(65 * 1024, 0x20);
    expect(await post(server.port, githubHeaders(big, "d-11"), big)).toMatchObject({ status: 413, body: { outcome: "too_large" } });
    const chunk = Buffer.alloc(16 * 1024, 0x20);
    // 64 chunks of 16 KiB = 1 MiB offered; the server stops reading after 64 KiB.
    const streamed = await post(server.port, { ...githubHeaders(chunk, "d-12"), "transfer-encoding": "chunked" }, undefined, { chunks: Array(64).fill(chunk) });
    expect(streamed.status).toBe(413);
    expect(count("github", "too_large")).toBe(2);
    expect(triggered).toEqual([]);
  });

  it("503 when the NixImages cannot be asked; the delivery can then be redelivered", async () => {
    failTrigger = true;
    expect((await post(server.port, githubHeaders(github, "d-13"), github)).status).toBe(503);
    failTrigger = false;
    expect((await post(server.port, githubHeaders(github, "d-13"), github)).status).toBe(202);
    expect(triggered.pop()).toEqual(["shop/web", "shop/api"]);
  });
});
