// Where an image goes: `--image host[:port]/repository[:tag]` plus how to talk to that registry
// (credentials from a dockerconfigjson file, plain HTTP, a private CA; defaults from the operator
// config's `registries` entry for the host). Credentials are read once, kept in memory, and their
// secret strings are returned so that every message can be scrubbed of them.
import { readFile } from "node:fs/promises";
import type { OperatorConfig } from "../config/operator-config.ts";
import type { Logger } from "../log/logger.ts";
import { credentialsForHost, DockerConfigError, parseDockerConfigText, secretsOf, type RegistryCredentials } from "../oci/docker-config.ts";
import { parseImageReference } from "../oci/image-reference.ts";
import { RegistryClient } from "../oci/registry-client.ts";

class RegistryTargetError extends Error {
  override name = "RegistryTargetError";
}

export interface RegistryTargetOptions {
  /** `host[:port]/repository`, optionally `:tag` (an extra tag). No digest. */
  image: string;
  /** dockerconfigjson with credentials for the host. */
  authFile?: string;
  plainHttp?: boolean;
  caFile?: string;
  config?: Pick<OperatorConfig, "registries">;
  logger?: Logger;
  /** Aborts every request of the client (the step was told to stop). */
  signal?: AbortSignal;
}

export interface RegistryTarget {
  client: RegistryClient;
  host: string;
  repository: string;
  /** The tag written in `image`, if any. */
  tag?: string;
  /** Secret strings to scrub from any message. */
  secrets: string[];
  /** Whether credentials were found for the host. */
  authenticated: boolean;
}

async function readCredentials(file: string, host: string): Promise<RegistryCredentials | undefined> {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (e) {
    throw new RegistryTargetError(`cannot read the auth file ${file} (${(e as NodeJS.ErrnoException).code ?? "error"})`);
  }
  try {
    return credentialsForHost(parseDockerConfigText(text), host);
  } catch (e) {
    if (e instanceof DockerConfigError) throw new RegistryTargetError(`auth file ${file}: ${e.message}`);
    throw e;
  }
}

export async function openRegistryTarget(options: RegistryTargetOptions): Promise<RegistryTarget> {
  let ref;
  try {
    ref = parseImageReference(options.image, "--image");
  } catch (e) {
    throw new RegistryTargetError((e as Error).message);
  }
  if (ref.digest !== undefined) throw new RegistryTargetError(`--image ${options.image}: give a repository, not a digest (the digest is what gets pushed)`);
  const registryConfig = options.config?.registries.find((r) => r.host === ref.host);
  const plainHttp = options.plainHttp === true || registryConfig?.plainHttp === true;
  const caFile = options.caFile ?? registryConfig?.caFile;
  const credentials = options.authFile !== undefined ? await readCredentials(options.authFile, ref.host) : undefined;
  if (options.authFile !== undefined && credentials === undefined) {
    options.logger?.warn({ registry: ref.host, authFile: options.authFile }, "the auth file has no credentials for this registry; pushing anonymously");
  }
  if (caFile !== undefined) {
    try {
      await readFile(caFile);
    } catch (e) {
      throw new RegistryTargetError(`cannot read the CA file ${caFile} (${(e as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  const client = new RegistryClient({
    host: ref.host,
    plainHttp,
    ...(caFile !== undefined ? { caFile } : {}),
    ...(credentials !== undefined ? { credentials } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const target: RegistryTarget = {
    client,
    host: ref.host,
    repository: ref.repository,
    secrets: secretsOf(credentials),
    authenticated: credentials !== undefined,
  };
  if (ref.tag !== undefined) target.tag = ref.tag;
  return target;
}
