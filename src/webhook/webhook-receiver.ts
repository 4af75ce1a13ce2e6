// Wires the webhook server to the operator: the secret from its file, the NixImages that follow
// a branch from the informer cache, and revision-check requests as annotations.
import { readFile } from "node:fs/promises";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { KubeAccess } from "../runtime/kube-config.ts";
import type { OperatorConfig } from "../config/operator-config.ts";
import type { Logger } from "../log/logger.ts";
import type { Clock } from "../runtime/clock.ts";
import type { MetricsRegistry } from "../runtime/metrics.ts";
import { revisionCheckRequester } from "./revision-check-request.ts";
import type { FollowingImage } from "./repository-match.ts";
import { startWebhookServer, type WebhookServer } from "./webhook-server.ts";

export class WebhookConfigError extends Error {
  override name = "WebhookConfigError";
}

/** NixImages that poll a branch (spec.triggers.interval set, not suspended): the ones a push can move. */
export function followingImages(objects: readonly KubernetesObject[]): FollowingImage[] {
  return objects.flatMap((o) => {
    const spec = (o as { spec?: { flake?: unknown; suspend?: unknown; triggers?: { interval?: unknown } } }).spec;
    if (typeof spec?.flake !== "string" || spec.suspend === true || !spec.triggers?.interval || o.metadata?.deletionTimestamp) return [];
    return [{ key: `${o.metadata?.namespace}/${o.metadata?.name}`, flake: spec.flake }];
  });
}

/** The secret's bytes, without a trailing newline (`kubectl create secret --from-file` keeps one). */
export async function readWebhookSecret(file: string): Promise<Buffer> {
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (error) {
    throw new WebhookConfigError(
      `cannot read the webhook secret file ${file}: ${(error as NodeJS.ErrnoException).code ?? "error"}; mount the Secret there or set webhook.secretFile`,
    );
  }
  const secret = Buffer.from(raw.toString("utf8").replace(/\r?\n$/, ""), "utf8");
  if (secret.length < 16) {
    throw new WebhookConfigError(`the webhook secret in ${file} is shorter than 16 bytes; make one with: openssl rand -hex 32`);
  }
  return secret;
}

export interface WebhookReceiverOptions {
  kc: KubeAccess;
  config: OperatorConfig["webhook"];
  /** Overrides the port of config.address (0 picks a free one). */
  port?: number;
  images: () => FollowingImage[];
  metrics: MetricsRegistry;
  logger: Logger;
  clock: Clock;
  onWrite?: (verb: string, resource: string) => void;
}

export async function startWebhookReceiver(options: WebhookReceiverOptions): Promise<WebhookServer> {
  const { config } = options;
  const match = /^(.*):(\d+)$/.exec(config.address);
  if (!match) throw new WebhookConfigError(`webhook.address must be HOST:PORT, got "${config.address}"`);
  // Fail at start, not at the first delivery, when the secret is missing or too short.
  await readWebhookSecret(config.secretFile);
  const request = revisionCheckRequester(options.kc, options.onWrite);
  return startWebhookServer({
    port: options.port ?? Number(match[2]),
    host: match[1] || "0.0.0.0",
    path: config.path,
    maxBodyBytes: config.maxBodyBytes,
    rememberDeliveries: config.rememberDeliveries,
    secret: () => readWebhookSecret(config.secretFile),
    images: options.images,
    trigger: (keys) => request(keys, options.clock.now().toISOString()),
    metrics: options.metrics,
    logger: options.logger,
  });
}
