// The webhook receiver (its own port, see charts/.../webhook-service.yaml): forges POST push
// events here, and a verified push for a repository and branch that NixImages follow makes the
// controller check those NixImages' revisions at once instead of at their next poll.
//
// Answers (also in the README, "Push-triggered builds"):
//   202  a verified push: `triggered` (N NixImages asked to check now) or `unmatched` (no NixImage
//        follows that repository and branch: org/group-wide hooks deliver every repository's pushes,
//        and a 4xx would show them as failed deliveries), or another event (`ignored`)
//   200  GitHub's `ping` (sent when a hook is created)
//   400  no known forge event header, or a body that is not a push payload
//   401  missing or wrong signature/token
//   404  another path;  405  not POST;  415  not JSON (or form-encoded, GitHub/Gitea only)
//   409  a delivery id seen before (the forge's redelivery of a delivery that succeeded, or a replay)
//   413  a body over maxBodyBytes (read no further than the limit)
//   503  the secret cannot be read, or the NixImages could not be annotated (the forge may redeliver)
// Every request is counted in niximage_webhook_deliveries_total{forge, outcome}.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log/logger.ts";
import type { MetricsRegistry } from "../runtime/metrics.ts";
import { DeliveryMemory } from "./delivery-memory.ts";
import { identifyDelivery, parsePushEvent, PushPayloadError, type Delivery, type PushEvent } from "./push-event.ts";
import { imagesForPush, type FollowingImage } from "./repository-match.ts";
import { verifyGitHubSignature, verifyGitLabToken, verifyHmacHex } from "./webhook-signature.ts";

type WebhookOutcome =
  | "triggered"
  | "unmatched"
  | "ignored"
  | "ping"
  | "bad_request"
  | "bad_signature"
  | "not_found"
  | "bad_method"
  | "bad_content_type"
  | "duplicate"
  | "too_large"
  | "unavailable";

export interface WebhookServerOptions {
  /** 0 picks a free port (tests). */
  port: number;
  host?: string;
  /** The one path deliveries are accepted on, e.g. `/webhook`. */
  path: string;
  maxBodyBytes: number;
  /** Delivery ids remembered for replay detection. */
  rememberDeliveries: number;
  /** The shared secret, read for every delivery (a rotated Secret takes effect without a restart). */
  secret: () => Promise<Buffer>;
  /** NixImages that follow a branch now (from the informer cache). */
  images: () => FollowingImage[];
  /** Asks the controller to check these NixImages' revisions now. */
  trigger: (keys: string[], push: PushEvent & { forge: Delivery["forge"]; delivery?: string }) => Promise<void>;
  metrics: MetricsRegistry;
  logger: Logger;
}

export interface WebhookServer {
  readonly port: number;
  close(): Promise<void>;
}

interface Reply {
  status: number;
  outcome: WebhookOutcome;
  message: string;
  extra?: Record<string, unknown>;
}

const reply = (status: number, outcome: WebhookOutcome, message: string, extra?: Record<string, unknown>): Reply => ({
  status,
  outcome,
  message,
  ...(extra ? { extra } : {}),
});

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const deliveries = options.metrics.counter({
    name: "niximage_webhook_deliveries_total",
    help: "Webhook deliveries by forge (github, gitlab, gitea, forgejo, unknown) and outcome (triggered, unmatched, bad_signature, duplicate, too_large, ...).",
    labelNames: ["forge", "outcome"],
  });
  const memory = new DeliveryMemory(options.rememberDeliveries);
  const log = options.logger.child({ component: "webhook" });

  const server = createServer((req, res) => {
    let forge = "unknown";
    void handle(req, (f) => (forge = f))
      .catch((error: unknown) => {
        log.error({ err: String(error) }, "webhook delivery failed");
        return reply(503, "unavailable", "internal error; redeliver later");
      })
      .then((answer) => {
        deliveries.inc({ forge, outcome: answer.outcome });
        send(req, res, answer);
      });
  });
  server.keepAliveTimeout = 5_000;
  server.requestTimeout = 30_000;

  async function handle(req: IncomingMessage, setForge: (forge: string) => void): Promise<Reply> {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== options.path) return reply(404, "not_found", "not found");
    if (req.method !== "POST") return reply(405, "bad_method", "only POST is accepted");
    const delivery = identifyDelivery(req.headers);
    if (!delivery) return reply(400, "bad_request", "no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event or X-Forgejo-Event header");
    setForge(delivery.forge);

    const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
    const form = type === "application/x-www-form-urlencoded" && delivery.forge !== "gitlab";
    if (type !== "application/json" && !form) return reply(415, "bad_content_type", "send the payload as application/json");

    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > options.maxBodyBytes) return reply(413, "too_large", `body over ${options.maxBodyBytes} bytes`);
    const body = await readLimited(req, options.maxBodyBytes);
    if (body === undefined) return reply(413, "too_large", `body over ${options.maxBodyBytes} bytes`);

    let secret: Buffer;
    try {
      secret = await options.secret();
    } catch (error) {
      log.error({ err: (error as Error).message }, "cannot read the webhook secret");
      return reply(503, "unavailable", "the receiver cannot read its secret; redeliver later");
    }
    const proofOk =
      delivery.forge === "github"
        ? verifyGitHubSignature(secret, body, delivery.proof)
        : delivery.forge === "gitlab"
          ? verifyGitLabToken(secret, delivery.proof)
          : verifyHmacHex(secret, body, delivery.proof);
    if (!proofOk) {
      log.warn(
        { forge: delivery.forge, delivery: delivery.id, remote: req.socket.remoteAddress, proof: delivery.proof ? "wrong" : "missing" },
        "webhook delivery refused: bad signature",
      );
      return reply(401, "bad_signature", "signature or token missing or wrong");
    }
    if (delivery.id !== undefined && memory.has(delivery.id)) return reply(409, "duplicate", `delivery ${delivery.id} was handled before`);
    if (delivery.forge === "github" && delivery.event === "ping") {
      if (delivery.id !== undefined) memory.remember(delivery.id);
      return reply(200, "ping", "pong");
    }
    if (!delivery.isPush) return reply(202, "ignored", `event ${JSON.stringify(delivery.event.slice(0, 64))} is not a push; nothing to do`);

    let push: PushEvent;
    try {
      const text = body.toString("utf8");
      const json = form ? new URLSearchParams(text).get("payload") : text;
      if (json === null) throw new PushPayloadError("form body without a payload field");
      push = parsePushEvent(delivery.forge, JSON.parse(json));
    } catch (error) {
      // Never echo the body: the message says only which fields were missing.
      const message = error instanceof PushPayloadError ? error.message : "body is not valid JSON";
      return reply(400, "bad_request", message);
    }
    const keys = imagesForPush(push, options.images());
    const facts = { forge: delivery.forge, delivery: delivery.id, repository: push.name, ref: push.ref, after: push.after };
    if (keys.length === 0) {
      if (delivery.id !== undefined) memory.remember(delivery.id);
      log.debug(facts, "push for a repository and branch no NixImage follows");
      return reply(202, "unmatched", push.deleted ? "the ref was deleted; nothing to build" : "no NixImage follows this repository and branch", {
        niximages: 0,
      });
    }
    await options.trigger(keys, { ...push, forge: delivery.forge, ...(delivery.id !== undefined ? { delivery: delivery.id } : {}) });
    if (delivery.id !== undefined) memory.remember(delivery.id);
    log.info({ ...facts, niximages: keys }, "push: revision check requested");
    return reply(202, "triggered", "revision check requested", { niximages: keys.length });
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ port, path: options.path }, "webhook receiver listening");
  return {
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}

/** The body, or undefined as soon as it passes `limit` bytes (the rest is never read). */
function readLimited(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off("data", onData);
        req.pause();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => resolve(Buffer.concat(chunks)));
    req.once("error", reject);
  });
}

function send(req: IncomingMessage, res: ServerResponse, answer: Reply): void {
  const headers: Record<string, string> = { "content-type": "application/json", "cache-control": "no-store" };
  if (answer.status === 405) headers.allow = "POST";
  // A body left unread (too large, refused early) must not be read for the next request.
  const unread = !req.complete;
  if (unread) headers.connection = "close";
  res.writeHead(answer.status, headers);
  res.end(JSON.stringify({ outcome: answer.outcome, message: answer.message, ...answer.extra }) + "\n", () => {
    if (unread) req.socket.destroy();
  });
}
