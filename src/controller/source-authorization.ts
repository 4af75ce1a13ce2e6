// PURE: the `Authorization` header the revision poller sends to a private repository's git
// smart-HTTP endpoint, from the same Secret keys the builder's fetch step gives Nix and git
// (spec.sourceCredentialsSecretRef: `netrc`, `access-tokens`). The value is built per poll and
// dropped with the request; `from` says where it came from without any secret in it, for messages.
//
// Git over HTTP takes HTTP Basic everywhere (GitHub, GitLab, Gitea, Bitbucket, `git http-backend`
// behind a web server), and forge tokens are accepted as its password, so a token becomes Basic
// too: GitHub wants any user name with the token, GitLab `oauth2` with a personal or OAuth2 token.
// Bearer is not used: git servers behind a plain web server do not accept it.

/** The Secret keys that can authorize an HTTP poll (ssh keys cannot). */
export interface SourceCredentialData {
  netrc?: string;
  /** Nix's `access-tokens` value: `host=token` words (`gitlab.example.com=PAT:glpat-...`). */
  accessTokens?: string;
}

export interface SourceAuthorization {
  header: string;
  /** Which entry was used, e.g. `netrc machine git.example.com`; never a secret. */
  from: string;
}

interface NetrcEntry {
  /** undefined for `default`. */
  machine: string | undefined;
  login: string;
  password: string;
}

/** Parses netrc text (machine/default entries with login and password; macdef bodies skipped). */
export function parseNetrc(text: string): NetrcEntry[] {
  const lines = text.split("\n");
  const words: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const lineWords = lines[i]!.split(/\s+/).filter((w) => w !== "");
    const macdef = lineWords.indexOf("macdef");
    if (macdef >= 0) {
      words.push(...lineWords.slice(0, macdef));
      // A macro body runs to the next empty line.
      while (i + 1 < lines.length && lines[i + 1]!.trim() !== "") i++;
      continue;
    }
    words.push(...lineWords);
  }
  const entries: NetrcEntry[] = [];
  let current: { machine: string | undefined; login: string; password: string } | undefined;
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === "machine" || w === "default") {
      if (current) entries.push(current);
      current = { machine: w === "machine" ? words[++i] : undefined, login: "", password: "" };
    } else if (current && (w === "login" || w === "password" || w === "account")) {
      const value = words[++i] ?? "";
      if (w === "login") current.login = value;
      if (w === "password") current.password = value;
    }
  }
  if (current) entries.push(current);
  return entries;
}

function basic(user: string, password: string): string {
  return "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
}

function fromNetrc(text: string, url: URL): SourceAuthorization | undefined {
  const entries = parseNetrc(text);
  // Like curl: the first entry for the host name (ports are not part of netrc). Unlike curl, never
  // the `default` entry: the flake ref's host is the tenant's choice, and a credential goes only
  // to a host its Secret names.
  const entry = entries.find((e) => e.machine === url.hostname);
  if (!entry || (entry.login === "" && entry.password === "")) return undefined;
  return { header: basic(entry.login, entry.password), from: `netrc machine ${entry.machine}` };
}

/** Nix's matching: a `host` key, or `host/path-prefix` for part of a forge; the longest match wins. */
function fromAccessTokens(value: string, url: URL): SourceAuthorization | undefined {
  const repoPath = url.pathname.replace(/\/+$/, "").replace(/\.git$/, "");
  let best: { key: string; token: string } | undefined;
  for (const word of value.split(/\s+/)) {
    const eq = word.indexOf("=");
    if (eq <= 0) continue;
    const key = word.slice(0, eq);
    const token = word.slice(eq + 1);
    const slash = key.indexOf("/");
    const host = slash < 0 ? key : key.slice(0, slash);
    if (host !== url.host && host !== url.hostname) continue;
    if (slash >= 0) {
      const prefix = key.slice(slash).replace(/\/+$/, "");
      if (repoPath !== prefix && !repoPath.startsWith(`${prefix}/`)) continue;
    }
    if (!best || key.length > best.key.length) best = { key, token };
  }
  if (!best || best.token === "") return undefined;
  const from = `access-tokens entry ${best.key}`;
  // GitLab's forms: PAT:<token> and OAuth2:<token>; both are the password of user oauth2 over git.
  const typed = /^(PAT|OAuth2):(.+)$/.exec(best.token);
  if (typed) return { header: basic("oauth2", typed[2]!), from };
  return { header: basic("x-access-token", best.token), from };
}

/**
 * The header for polling `url`, or undefined when the Secret has nothing for its host (the poll
 * is then anonymous: the credential may be for a private input on another host). Forge refs
 * (github:, gitlab:, sourcehut:) prefer `access-tokens`, as Nix does for them; git+https refs
 * prefer `netrc`, which is what git reads.
 */
export function sourceAuthorization(data: SourceCredentialData, url: URL, preferTokens: boolean): SourceAuthorization | undefined {
  const netrc = () => (data.netrc !== undefined ? fromNetrc(data.netrc, url) : undefined);
  const tokens = () => (data.accessTokens !== undefined ? fromAccessTokens(data.accessTokens, url) : undefined);
  return preferTokens ? (tokens() ?? netrc()) : (netrc() ?? tokens());
}

/** The secret words in `data` (netrc passwords, tokens), to scrub from any message as a last line of defence. */
export function secretWords(data: SourceCredentialData): string[] {
  const words: string[] = [];
  if (data.netrc !== undefined) for (const e of parseNetrc(data.netrc)) if (e.password !== "") words.push(e.password);
  for (const word of data.accessTokens?.split(/\s+/) ?? []) {
    const token = word.slice(word.indexOf("=") + 1);
    if (word.includes("=") && token !== "") words.push(token, token.replace(/^(PAT|OAuth2):/, ""));
  }
  return words.filter((w) => w.length >= 4);
}
