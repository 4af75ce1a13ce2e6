// Reads the keys of spec.sourceCredentialsSecretRef that can authorize a revision poll, at poll
// time only (revision-polls.ts): nothing of the Secret is cached, and only the keys the poll
// needs are decoded (`netrc` and `access-tokens` for https, `ssh-privatekey` and `known_hosts` for ssh).
import { KubeHttpError, kubeRequestJson } from "../runtime/kube-request.ts";
import type { KubeAccess } from "../runtime/kube-config.ts";
import type { SourceCredentialData } from "./source-authorization.ts";

export interface SecretRef {
  namespace: string;
  name: string;
}

/** Reading the Secret failed; the message names the Secret and what to do, never its data. */
export class SourceSecretError extends Error {
  override readonly name = "SourceSecretError";
  /** Worth retrying as it is (the API server was unavailable), as opposed to a missing Secret or a refusal. */
  readonly transient: boolean;

  constructor(message: string, transient: boolean) {
    super(message);
    this.transient = transient;
  }
}

function decode(value: unknown): string | undefined {
  return typeof value === "string" ? Buffer.from(value, "base64").toString("utf8") : undefined;
}

/** The ssh keys of a Secret (git+ssh polling). */
export interface SshCredentialData {
  sshPrivateKey?: string;
  knownHosts?: string;
}

/**
 * The keys a poll needs: `http` decodes netrc and access-tokens only, `ssh` ssh-privatekey and
 * known_hosts only; nothing else of the Secret is decoded.
 */
export async function readSourceCredentials(
  kc: KubeAccess,
  secret: SecretRef,
  signal?: AbortSignal,
  want: "http" | "ssh" = "http",
): Promise<SourceCredentialData & SshCredentialData> {
  const shown = `Secret ${secret.namespace}/${secret.name} (spec.sourceCredentialsSecretRef)`;
  let body: { data?: Record<string, unknown> };
  try {
    body = await kubeRequestJson(kc, "GET", `/api/v1/namespaces/${encodeURIComponent(secret.namespace)}/secrets/${encodeURIComponent(secret.name)}`, {
      ...(signal ? { signal } : {}),
      timeoutMs: 15_000,
    });
  } catch (error) {
    if (error instanceof KubeHttpError && error.statusCode === 404) {
      throw new SourceSecretError(`${shown} does not exist: create it with a netrc or access-tokens key for the source's host`, false);
    }
    if (error instanceof KubeHttpError && error.statusCode === 403) {
      throw new SourceSecretError(`the operator may not read ${shown} (HTTP 403): its ClusterRole must allow get on secrets in this namespace`, false);
    }
    // kubeRequestJson's messages carry the API server's Status message or the network error, never a body.
    throw new SourceSecretError(`cannot read ${shown}: ${(error as Error).message}`, true);
  }
  const data = body.data ?? {};
  if (want === "ssh") {
    const sshPrivateKey = decode(data["ssh-privatekey"]);
    const knownHosts = decode(data.known_hosts);
    return { ...(sshPrivateKey !== undefined ? { sshPrivateKey } : {}), ...(knownHosts !== undefined ? { knownHosts } : {}) };
  }
  const netrc = decode(data.netrc);
  const accessTokens = decode(data["access-tokens"]);
  return { ...(netrc !== undefined ? { netrc } : {}), ...(accessTokens !== undefined ? { accessTokens } : {}) };
}
