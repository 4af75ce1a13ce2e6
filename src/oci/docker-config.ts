// PURE: registry credentials from a dockerconfigjson (a `kubernetes.io/dockerconfigjson` Secret's
// `.dockerconfigjson`, or `~/.docker/config.json`), also the legacy `.dockercfg` shape (no `auths`).
// Error messages name the registry key and the field, never a value: no secret can leak through them.

export interface RegistryCredentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (`identitytoken`) exchanged at the token endpoint. */
  identityToken?: string;
  /** A bearer token sent as is (`registrytoken`). */
  registryToken?: string;
}

export class DockerConfigError extends Error {
  override name = "DockerConfigError";
}

/** Credentials per normalised registry host. */
export type DockerConfig = Map<string, RegistryCredentials>;

const dockerHubAliases = new Set(["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]);

/** `https://Index.Docker.io/v1/` -> `docker.io`; `http://host:5000/x` -> `host:5000`. */
export function normaliseRegistryKey(key: string): string {
  let k = key.trim().toLowerCase();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//, "");
  const slash = k.indexOf("/");
  if (slash >= 0) k = k.slice(0, slash);
  return dockerHubAliases.has(k) ? "docker.io" : k;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optionalString(entry: Record<string, unknown>, field: string, where: string): string | undefined {
  const v = entry[field];
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new DockerConfigError(`${where}.${field} must be a string`);
  return v;
}

function decodeAuth(auth: string, where: string): { username: string; password: string } {
  const compact = auth.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 === 1) {
    throw new DockerConfigError(`${where}.auth is not valid base64`);
  }
  const decoded = Buffer.from(compact, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) throw new DockerConfigError(`${where}.auth does not decode to "username:password"`);
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function parseEntry(entry: unknown, where: string): RegistryCredentials {
  if (!isRecord(entry)) throw new DockerConfigError(`${where} must be an object`);
  const out: RegistryCredentials = {};
  const auth = optionalString(entry, "auth", where);
  const username = optionalString(entry, "username", where);
  const password = optionalString(entry, "password", where);
  const identityToken = optionalString(entry, "identitytoken", where);
  const registryToken = optionalString(entry, "registrytoken", where);
  if (auth !== undefined) {
    const decoded = decodeAuth(auth, where);
    out.username = decoded.username;
    out.password = decoded.password;
  } else {
    if (username !== undefined) out.username = username;
    if (password !== undefined) out.password = password;
  }
  if (identityToken !== undefined) out.identityToken = identityToken;
  if (registryToken !== undefined) out.registryToken = registryToken;
  if (out.password !== undefined && out.username === undefined) {
    throw new DockerConfigError(`${where} has a password but no username`);
  }
  return out;
}

/** Parses a decoded dockerconfigjson object. */
export function parseDockerConfig(json: unknown): DockerConfig {
  if (!isRecord(json)) throw new DockerConfigError("dockerconfigjson must be a JSON object");
  let auths: unknown = json.auths;
  if (auths === undefined) {
    // Legacy .dockercfg: the host map is the top level. A modern file with only credHelpers etc.
    // has no credentials for us.
    const legacy = Object.entries(json).every(([, v]) => isRecord(v) && ("auth" in v || "username" in v));
    auths = legacy ? json : {};
  }
  if (!isRecord(auths)) throw new DockerConfigError("dockerconfigjson: auths must be an object");
  const out: DockerConfig = new Map();
  for (const [key, entry] of Object.entries(auths)) {
    const host = normaliseRegistryKey(key);
    const where = `dockerconfigjson auths[${JSON.stringify(key.slice(0, 200))}]`;
    const creds = parseEntry(entry, where);
    // An exact host key wins over a URL-shaped one for the same host.
    if (!out.has(host) || key.trim().toLowerCase() === host) out.set(host, creds);
  }
  return out;
}

/** Parses dockerconfigjson text. A syntax error is reported without echoing the text. */
export function parseDockerConfigText(text: string | Buffer): DockerConfig {
  const s = typeof text === "string" ? text : text.toString("utf8");
  let json: unknown;
  try {
    json = JSON.parse(s);
  } catch {
    throw new DockerConfigError(`dockerconfigjson is not valid JSON (${s.length} characters)`);
  }
  return parseDockerConfig(json);
}

/** The credentials for a registry host (`host[:port]`), if the config has any. */
export function credentialsForHost(config: DockerConfig, host: string): RegistryCredentials | undefined {
  const creds = config.get(normaliseRegistryKey(host));
  return creds && Object.keys(creds).length > 0 ? creds : undefined;
}

/** Every secret string in `creds`, for redaction of messages that might repeat one. */
export function secretsOf(creds: RegistryCredentials | undefined): string[] {
  if (!creds) return [];
  const out: string[] = [];
  for (const v of [creds.password, creds.identityToken, creds.registryToken]) if (v && v.length >= 4) out.push(v);
  if (creds.username !== undefined && creds.password !== undefined) {
    out.push(Buffer.from(`${creds.username}:${creds.password}`).toString("base64"));
  }
  return out;
}
