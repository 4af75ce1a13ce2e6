// PURE: what a forge's webhook delivery says, read from its headers and its JSON body. Only the
// fields the receiver needs are read (zod, unknown keys ignored), following each forge's
// documented push payload:
//   GitHub         X-GitHub-Event: push, X-GitHub-Delivery; body ref/before/after/deleted and
//                  repository.{full_name, clone_url, html_url, ssh_url, git_url, default_branch}
//   Gitea/Forgejo  X-Gitea-Event / X-Forgejo-Event: push (they send X-GitHub-Event too, so they are
//                  told apart first), X-Gitea-Delivery / X-Forgejo-Delivery; body like GitHub's
//   GitLab         X-Gitlab-Event: Push Hook / Tag Push Hook, X-Gitlab-Event-UUID; body ref/before/
//                  after and project.{git_http_url, git_ssh_url, web_url, path_with_namespace,
//                  default_branch}
import type { IncomingHttpHeaders } from "node:http";
import { z } from "zod";

export type Forge = "github" | "gitlab" | "gitea" | "forgejo";

export interface Delivery {
  forge: Forge;
  /** The forge's event name as sent (`push`, `ping`, `Push Hook`, ...). */
  event: string;
  /** True for the events that report a push (branch or tag). */
  isPush: boolean;
  /** The forge's id of this delivery, the same when the forge re-sends it; absent when not sent. */
  id?: string;
  /** The header that proves the sender (signature or token), absent when not sent. */
  proof?: string;
}

const header = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
};

/** Which forge sent this (by its event header), or undefined when no known header is there. */
export function identifyDelivery(headers: IncomingHttpHeaders): Delivery | undefined {
  const make = (forge: Forge, event: string, isPush: boolean, id: string | undefined, proof: string | undefined): Delivery => ({
    forge,
    event,
    isPush,
    ...(id ? { id } : {}),
    ...(proof !== undefined ? { proof } : {}),
  });
  const forgejo = header(headers, "x-forgejo-event");
  if (forgejo !== undefined) {
    return make(
      "forgejo",
      forgejo,
      forgejo === "push",
      header(headers, "x-forgejo-delivery") ?? header(headers, "x-gitea-delivery"),
      header(headers, "x-forgejo-signature") ?? header(headers, "x-gitea-signature"),
    );
  }
  const gitea = header(headers, "x-gitea-event");
  if (gitea !== undefined) return make("gitea", gitea, gitea === "push", header(headers, "x-gitea-delivery"), header(headers, "x-gitea-signature"));
  const gitlab = header(headers, "x-gitlab-event");
  if (gitlab !== undefined) {
    return make(
      "gitlab",
      gitlab,
      gitlab === "Push Hook" || gitlab === "Tag Push Hook",
      header(headers, "x-gitlab-event-uuid"),
      header(headers, "x-gitlab-token"),
    );
  }
  const github = header(headers, "x-github-event");
  if (github !== undefined) return make("github", github, github === "push", header(headers, "x-github-delivery"), header(headers, "x-hub-signature-256"));
  return undefined;
}

/** A push, as far as the receiver cares. */
export interface PushEvent {
  /** Full ref name: `refs/heads/main`, `refs/tags/v1.0`. */
  ref: string;
  before?: string;
  after?: string;
  /** The push deleted the ref: nothing to build. */
  deleted: boolean;
  /** The repository's name as the forge shows it (`owner/repo`, `group/sub/project`), for logs. */
  name: string;
  /** Every URL the payload gives for the repository (web, https and ssh clone URLs). */
  urls: string[];
  defaultBranch?: string;
}

const url = z.string().max(2048).optional().catch(undefined);
const sha = z.string().max(64).optional().catch(undefined);

const githubLike = z.object({
  ref: z.string().min(1).max(1024),
  before: sha,
  after: sha,
  deleted: z.boolean().optional().catch(undefined),
  repository: z.object({
    full_name: z.string().max(1024),
    clone_url: url,
    html_url: url,
    ssh_url: url,
    git_url: url,
    default_branch: z.string().max(1024).optional().catch(undefined),
  }),
});

const gitlab = z.object({
  ref: z.string().min(1).max(1024),
  before: sha,
  after: sha,
  project: z.object({
    path_with_namespace: z.string().max(1024),
    git_http_url: url,
    git_ssh_url: url,
    web_url: url,
    http_url: url,
    ssh_url: url,
    default_branch: z.string().max(1024).optional().catch(undefined),
  }),
});

const ZERO = /^0+$/;

export class PushPayloadError extends Error {
  override name = "PushPayloadError";
}

/** Reads a push payload; the error names the missing fields, never echoes the body. */
export function parsePushEvent(forge: Forge, payload: unknown): PushEvent {
  const urls = (...candidates: (string | undefined)[]) => [...new Set(candidates.filter((u): u is string => typeof u === "string" && u !== ""))];
  if (forge === "gitlab") {
    const parsed = gitlab.safeParse(payload);
    if (!parsed.success) throw new PushPayloadError(`not a GitLab push payload: ${fieldsOf(parsed.error)}`);
    const { ref, before, after, project } = parsed.data;
    return {
      ref,
      ...(before ? { before } : {}),
      ...(after ? { after } : {}),
      deleted: after !== undefined && ZERO.test(after),
      name: project.path_with_namespace,
      urls: urls(project.git_http_url, project.git_ssh_url, project.web_url, project.http_url, project.ssh_url),
      ...(project.default_branch ? { defaultBranch: project.default_branch } : {}),
    };
  }
  const parsed = githubLike.safeParse(payload);
  if (!parsed.success) throw new PushPayloadError(`not a ${forge} push payload: ${fieldsOf(parsed.error)}`);
  const { ref, before, after, deleted, repository } = parsed.data;
  return {
    ref,
    ...(before ? { before } : {}),
    ...(after ? { after } : {}),
    deleted: deleted === true || (after !== undefined && ZERO.test(after)),
    name: repository.full_name,
    urls: urls(repository.clone_url, repository.html_url, repository.ssh_url, repository.git_url),
    ...(repository.default_branch ? { defaultBranch: repository.default_branch } : {}),
  };
}

function fieldsOf(error: z.ZodError): string {
  return [...new Set(error.issues.map((i) => i.path.join(".") || "(body)"))].slice(0, 5).join(", ") + " missing or invalid";
}
