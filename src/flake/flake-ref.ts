/**
 * Flake reference parsing, following what Nix 2.8 (`parseFlakeRef` in the `nix` CLI) accepts.
 *
 * A flake ref is one of:
 *   - an indirect (registry) ref: `nixpkgs`, `nixpkgs/branch`, `nixpkgs/branch/<rev>`, `flake:nixpkgs`;
 *   - a bare path: `.`, `./x`, `../x`, `/abs`, or any other relative path that is not an indirect ref;
 *   - a URL `scheme:...` whose scheme picks the fetcher: `github:` `gitlab:` `sourcehut:`,
 *     `git+https://` `git+ssh://` `git+http://` `git+file:` `git://`, `hg+https://` (and http/ssh/file),
 *     `path:`, `tarball+https://` `file+https://` (and http/file), plain `https://` `http://` `file:`
 *     URLs (an archive extension makes them tarballs, anything else a single file).
 *
 * Deliberate differences from Nix 2.8 (each checked by test/integration/flake-ref-nix.test.ts):
 *   - `tarball+`/`file+` scheme prefixes and plain non-archive URLs (`file` inputs) are accepted, as
 *     newer Nix does; Nix 2.8 reports them as unsupported.
 *   - revisions are normalised to lower-case hex; a `rev` that is a hash of another type than SHA-1
 *     (which 2.8 lets through for git/hg/path refs and then cannot use) is rejected.
 *   - a bare path's query parameters are not validated: Nix validates them only when the path is
 *     inside a git checkout, which a pure parser cannot know.
 *   - inputs longer than MAX_PARSE_LENGTH are rejected outright.
 *
 * A fragment (`#attr`) is never part of a flake ref here: the attribute is a separate field.
 */

interface FlakeRefCommon {
  /**
   * The scheme as written: `github`, `git+https`, `tarball+https`, `https`, `path`, `flake`, ...
   * Bare paths have `path`, bare indirect ids `flake` (see `form`).
   */
  scheme: string;
  /** Subdirectory of the flake inside its source (`?dir=`), absent when empty. */
  dir?: string;
  /**
   * Query parameters that have no typed field on this kind of ref (values percent-decoded; of a
   * repeated key the first wins, as in Nix). Nix ignores some of them and passes others on inside
   * the fetch URL (git, tarball); the policy decides which may appear at all.
   */
  params: Record<string, string>;
}

/** `github:`, `gitlab:`, `sourcehut:` refs. */
interface ForgeFlakeRef extends FlakeRefCommon {
  type: "github" | "gitlab" | "sourcehut";
  owner: string;
  repo: string;
  ref?: string;
  /** 40 lower-case hex digits. */
  rev?: string;
  /** `?host=` instance override (GitHub Enterprise, self-hosted GitLab / sourcehut). */
  host?: string;
}

/** `git+https://`, `git+ssh://`, `git+http://`, `git+file:`, `git://` refs. */
interface GitFlakeRef extends FlakeRefCommon {
  type: "git";
  /** The transport URL without query, e.g. `https://example.com/repo.git`, `file:///src`. */
  url: string;
  ref?: string;
  /** 40 lower-case hex digits. */
  rev?: string;
  shallow?: boolean;
  submodules?: boolean;
}

/** `hg+https://`, `hg+http://`, `hg+ssh://`, `hg+file:` refs. */
interface MercurialFlakeRef extends FlakeRefCommon {
  type: "mercurial";
  url: string;
  ref?: string;
  rev?: string;
}

/** Archives (`tarball`) and single files (`file`) fetched over https/http/file. */
interface ArchiveFlakeRef extends FlakeRefCommon {
  type: "tarball" | "file";
  /** The transport URL without query, e.g. `https://example.com/src.tar.gz`. */
  url: string;
  /** SRI `sha256-...` (Nix also accepts an empty value). */
  narHash?: string;
}

/** `path:` URLs (`form: "url"`) and bare paths (`form: "bare"`). */
interface PathFlakeRef extends FlakeRefCommon {
  type: "path";
  form: "url" | "bare";
  /** As written: not made absolute, not canonicalised, not percent-decoded (as in Nix 2.8). */
  path: string;
  rev?: string;
  narHash?: string;
  revCount?: number;
  lastModified?: number;
}

/** Registry refs: `flake:nixpkgs/...` (`form: "url"`) or bare `nixpkgs/...` (`form: "bare"`). */
interface IndirectFlakeRef extends FlakeRefCommon {
  type: "indirect";
  form: "url" | "bare";
  id: string;
  ref?: string;
  rev?: string;
}

export type FlakeRef = ForgeFlakeRef | GitFlakeRef | MercurialFlakeRef | ArchiveFlakeRef | PathFlakeRef | IndirectFlakeRef;

/** The only error `parseFlakeRef` throws. Its message never contains a password from a URL. */
export class FlakeRefError extends Error {
  override readonly name = "FlakeRefError";
  /** The offending input, with any URL password replaced by `***`. */
  readonly input: string;

  constructor(input: string, message: string) {
    super(message);
    this.input = redactCredentials(input);
  }
}

/** Longest input `parseFlakeRef` looks at; far above any real flake ref. */
const MAX_PARSE_LENGTH = 8192;

/** File name endings that make a plain http(s)/file URL an archive (Nix 2.8's list; case-sensitive). */
const ARCHIVE_EXTENSIONS: readonly string[] = [".zip", ".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst"];

// ---------------------------------------------------------------------------------------------
// Grammar (the same character classes Nix's URL regexes use).

const UNRESERVED = "A-Za-z0-9._~\\-";
const SUBDELIMS = "!$&'\"()*+,;=";
const PCT = "%[0-9A-Fa-f]{2}";
const PCHAR = `(?:[${UNRESERVED}${SUBDELIMS}:@]|${PCT})`;
const QCHAR = `(?:[${UNRESERVED}${SUBDELIMS}:@/? "]|${PCT})`;
const SEGMENT = `${PCHAR}*`;
const SCHEME = "[a-z][a-z0-9+.-]*";
const IPV6_BODY = "[0-9a-fA-F:]+(?:%\\w+)?";
const HOST = `(?:\\[${IPV6_BODY}\\]|${IPV6_BODY}|(?:[${UNRESERVED}${SUBDELIMS}]|${PCT})*)`;
const USERINFO = `(?:[${UNRESERVED}${SUBDELIMS}:]|${PCT})*`;
const AUTHORITY = `(?:${USERINFO}@)?${HOST}(?::[0-9]+)?`;
const ABS_PATH = `(?:(?:/${SEGMENT})*/?)`;
const REL_PATH = `(?:${SEGMENT}(?:/${SEGMENT})*/?)`;

const URL_RE = new RegExp(`^(${SCHEME}):(?://(${AUTHORITY})(${ABS_PATH})|(/?${REL_PATH}))(?:\\?(${QCHAR}*))?(?:#(${QCHAR}*))?$`);

/** Characters of a bare path segment (Nix's `fnRegex`: no `%`, `:` or `@`). */
const FN = "[0-9a-zA-Z._~!$&'\"()*+,;=-]+";
const BARE_PATH_RE = new RegExp(`^(/?${FN}(?:/${FN})*/?)(?:\\?(${QCHAR}*))?(?:#(${QCHAR}*))?$`);

/** A flake id in the registry, e.g. `nixpkgs`. */
const FLAKE_ID_REGEX_SOURCE = "[a-zA-Z][a-zA-Z0-9_-]*";
/** A branch or tag name as Nix 2.8 accepts it in `github:`/indirect refs (slashes allowed). */
const REF_NAME_REGEX_SOURCE = "[a-zA-Z0-9][a-zA-Z0-9_./-]*";
/** A full git commit hash. */
const REV_REGEX_SOURCE = "[0-9a-fA-F]{40}";

const FLAKE_ID_RE = new RegExp(`^${FLAKE_ID_REGEX_SOURCE}$`);
const REF_RE = new RegExp(`^${REF_NAME_REGEX_SOURCE}$`);
const REV_RE = new RegExp(`^${REV_REGEX_SOURCE}$`);
const INDIRECT_RE = new RegExp(`^(${FLAKE_ID_REGEX_SOURCE}(?:/(?:${REV_REGEX_SOURCE}|${REF_NAME_REGEX_SOURCE}(?:/${REV_REGEX_SOURCE})?))?)(?:#(${QCHAR}*))?$`);
/** What Nix 2.8 accepts in `?host=` of github/gitlab/sourcehut refs (no `-`, as observed). */
const FORGE_HOST_RE = /^[a-zA-Z0-9.]*$/;

/** Substrings that make a git ref name invalid (git's check-ref-format rules, as Nix applies them). */
// eslint-disable-next-line no-control-regex
const BAD_GIT_REF_RE = /\/\/|^[./]|\/\.|\.\.|[\x00-\x20\x7f:?^~[]|\\|\*|\.lock$|\.lock\/|@\{|[/.]$|^@$|^$/;

const GIT_SCHEMES = new Set(["git", "git+http", "git+https", "git+ssh", "git+file"]);
const HG_SCHEMES = new Set(["hg+http", "hg+https", "hg+ssh", "hg+file"]);
const FORGE_SCHEMES = new Set(["github", "gitlab", "sourcehut"]);
const CURL_TRANSPORTS = new Set(["http", "https", "file"]);

/** Every scheme the parser knows, for messages. */
export const KNOWN_SCHEMES: readonly string[] = [
  "github",
  "gitlab",
  "sourcehut",
  "git+https",
  "git+ssh",
  "git+http",
  "git+file",
  "git",
  "hg+https",
  "hg+http",
  "hg+ssh",
  "hg+file",
  "tarball+https",
  "tarball+http",
  "tarball+file",
  "file+https",
  "file+http",
  "file+file",
  "https",
  "http",
  "file",
  "path",
  "flake",
];

// ---------------------------------------------------------------------------------------------
// Small helpers.

/** Replaces the password of any `scheme://user:password@` in `s` by `***`. */
export function redactCredentials(s: string): string {
  return s.replace(/(\/\/[^/?#@:]*:)[^/?#@]*@/g, "$1***@");
}

const utf8 = new TextDecoder("utf-8");
const utf8Encoder = new TextEncoder();

/** Decodes `%XX` escapes (bytes as UTF-8; invalid sequences become U+FFFD). Other text is kept. */
export function percentDecode(s: string): string {
  if (!s.includes("%")) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length;) {
    const c = s[i]!;
    if (c === "%" && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 3;
    } else {
      const cp = s.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      for (const b of utf8Encoder.encode(ch)) bytes.push(b);
      i += ch.length;
    }
  }
  return utf8.decode(Uint8Array.from(bytes));
}

/** Query values are written with these characters as-is; everything else is percent-encoded. */
const QUERY_VALUE_SAFE = /[A-Za-z0-9._~:@/+=,-]/;

function encodeQueryValue(v: string): string {
  let out = "";
  for (const ch of v) {
    if (QUERY_VALUE_SAFE.test(ch)) out += ch;
    else for (const b of utf8Encoder.encode(ch)) out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/**
 * Splits a raw query into key/value pairs the way Nix does: `&`-separated tokens, each split at its
 * first `=`; tokens without `=` are ignored; keys are kept raw, values percent-decoded; the first
 * occurrence of a key wins.
 */
export function decodeQuery(raw: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (raw === undefined || raw === "") return out;
  for (const token of raw.split("&")) {
    if (token === "") continue;
    const eq = token.indexOf("=");
    if (eq < 0) continue;
    const key = token.slice(0, eq);
    if (!out.has(key)) out.set(key, percentDecode(token.slice(eq + 1)));
  }
  return out;
}

/** A URL split the way Nix splits it. `authority` is undefined when there is no `//`. */
export interface UrlParts {
  scheme: string;
  authority: string | undefined;
  path: string;
  query: string | undefined;
  fragment: string | undefined;
}

/** Splits `s` as a URL with Nix's grammar, or returns undefined when it is not one. */
export function splitUrl(s: string): UrlParts | undefined {
  const m = URL_RE.exec(s);
  if (!m) return undefined;
  return {
    scheme: m[1]!,
    authority: m[2],
    path: m[3] ?? m[4] ?? "",
    query: m[5],
    fragment: m[6],
  };
}

function urlWithoutQuery(transport: string, authority: string | undefined, path: string): string {
  return `${transport}:${authority !== undefined ? "//" + authority : ""}${path}`;
}

function hasArchiveExtension(path: string): boolean {
  return ARCHIVE_EXTENSIONS.some((ext) => path.endsWith(ext));
}

// Nix's base-32 alphabet (omits e, o, t, u).
const NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz";
const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function decodeNixBase32(s: string, size: number): Uint8Array | undefined {
  const out = new Uint8Array(size);
  for (let n = 0; n < s.length; n++) {
    const digit = NIX_BASE32.indexOf(s[s.length - n - 1]!);
    if (digit < 0) return undefined;
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i] = (out[i]! | (digit << j)) & 0xff;
    const carry = digit >> (8 - j);
    if (i < size - 1) out[i + 1] = (out[i + 1]! | carry) & 0xff;
    else if (carry) return undefined;
  }
  return out;
}

/** Nix's lenient base64 decoder: stops at the first `=`, skips newlines. */
function decodeBase64(s: string): Uint8Array | undefined {
  const out: number[] = [];
  let bits = 0;
  let acc = 0;
  for (const c of s) {
    if (c === "=") break;
    if (c === "\n") continue;
    const d = BASE64.indexOf(c);
    if (d < 0) return undefined;
    acc = (acc << 6) | d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
  }
  return Uint8Array.from(out);
}

/**
 * Parses a commit hash as Nix's `Hash::parseAny(s, sha1)` does: 40 hex digits, 32 Nix base-32
 * digits, 28 base-64 characters, optionally prefixed `sha1:`; or SRI `sha1-<base64>`. Returns 40
 * lower-case hex digits, or a reason.
 */
function parseSha1(value: string): { hex: string } | { error: string } {
  let body = value;
  let sri = false;
  const prefixed = /^([a-z0-9]+)([:-])(.*)$/s.exec(value);
  if (prefixed) {
    if (prefixed[1] !== "sha1") return { error: `'${value}' is a ${prefixed[1]} hash, not a git commit hash (sha1)` };
    sri = prefixed[2] === "-";
    body = prefixed[3]!;
  }
  let bytes: Uint8Array | undefined;
  if (!sri && body.length === 40) {
    if (!/^[0-9a-fA-F]{40}$/.test(body)) return { error: `'${value}' is not a hexadecimal commit hash` };
    return { hex: body.toLowerCase() };
  } else if (!sri && body.length === 32) {
    bytes = decodeNixBase32(body, 20);
  } else if (sri || body.length === 28) {
    bytes = decodeBase64(body);
  } else {
    return { error: `'${value}' has the wrong length for a commit hash (expected 40 hex digits)` };
  }
  if (!bytes || bytes.length !== 20) return { error: `'${value}' is not a valid commit hash (expected 40 hex digits)` };
  return { hex: hex(bytes) };
}

/** Nix accepts `narHash` as an SRI SHA-256 hash (`sha256-` + 43 base-64 digits), or empty. */
function isValidNarHash(v: string): boolean {
  if (v === "") return true;
  if (!v.startsWith("sha256-")) return false;
  const bytes = decodeBase64(v.slice("sha256-".length));
  return bytes !== undefined && bytes.length === 32;
}

/** Nix's `string2Int<uint64_t>`: digits with an optional leading `+`. */
function parseUint(v: string): number | undefined {
  if (!/^\+?[0-9]+$/.test(v)) return undefined;
  const big = BigInt(v.replace(/^\+/, ""));
  if (big > 18446744073709551615n) return undefined;
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return Number(big);
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/**
 * Parses a flake ref the way the `nix` CLI does (see the module comment for the few differences).
 * Throws FlakeRefError, with a message naming the wrong part and how to write it, and nothing else.
 */
export function parseFlakeRef(input: string): FlakeRef {
  if (typeof input !== "string") throw new FlakeRefError(String(input), "a flake ref must be a string");
  if (input.length === 0) throw new FlakeRefError(input, "the flake ref is empty; write e.g. github:OWNER/REPO");
  if (input.length > MAX_PARSE_LENGTH) {
    throw new FlakeRefError(input.slice(0, 64), `the flake ref is ${input.length} characters long (at most ${MAX_PARSE_LENGTH})`);
  }
  const shown = redactCredentials(input);
  const fail = (message: string): never => {
    throw new FlakeRefError(input, message);
  };

  const ind = INDIRECT_RE.exec(input);
  if (ind) {
    rejectFragment(input, ind[2], fail);
    return parseIndirect(input, "bare", ind[1]!, new Map(), fail);
  }

  const bare = BARE_PATH_RE.exec(input);
  if (bare) {
    rejectFragment(input, bare[3], fail);
    const query = decodeQuery(bare[2]);
    const dir = takeDir(query);
    return withOptional({ type: "path", scheme: "path", form: "bare", path: bare[1]!, params: paramsOf(query) } as PathFlakeRef, { dir });
  }

  const url = splitUrl(input);
  if (!url) return fail(describeSyntaxError(input, shown));
  rejectFragment(input, url.fragment, fail);

  const { scheme } = url;
  const plus = scheme.indexOf("+");
  const transport = plus >= 0 ? scheme.slice(plus + 1) : scheme;
  if (transport === "file") {
    if (url.authority !== undefined && url.authority !== "") {
      fail(`'${shown}' names host '${url.authority}' in a file URL; write ${scheme}:///absolute/path`);
    }
    if (url.path === "") url.path = "/";
  }
  const query = decodeQuery(url.query);

  if (scheme === "flake") {
    const dir = takeDir(query);
    const r = parseIndirect(input, "url", url.path, query, fail);
    return withOptional(r, { dir });
  }
  if (FORGE_SCHEMES.has(scheme)) return parseForge(shown, scheme as ForgeFlakeRef["type"], url, query, fail);
  if (GIT_SCHEMES.has(scheme)) return parseGit(shown, scheme, transport, url, query, fail);
  if (HG_SCHEMES.has(scheme)) return parseMercurial(shown, scheme, transport, url, query, fail);
  if (scheme === "path") return parsePathUrl(shown, url, query, fail);
  if (CURL_TRANSPORTS.has(transport)) {
    const app = plus >= 0 ? scheme.slice(0, plus) : undefined;
    if (app === undefined || app === "tarball" || app === "file") {
      const type: ArchiveFlakeRef["type"] = app === "tarball" ? "tarball" : app === "file" ? "file" : hasArchiveExtension(url.path) ? "tarball" : "file";
      const dir = takeDir(query);
      const narHash = query.get("narHash");
      query.delete("narHash");
      if (narHash !== undefined && !isValidNarHash(narHash)) {
        fail(`in '${shown}', narHash '${narHash}' is not an SRI SHA-256 hash (sha256-<base64>)`);
      }
      return withOptional({ type, scheme, url: urlWithoutQuery(transport, url.authority, url.path), params: paramsOf(query) } as ArchiveFlakeRef, {
        dir,
        narHash,
      });
    }
  }
  return fail(
    `'${shown}' uses the unsupported scheme '${scheme}:'; flake refs use one of ${KNOWN_SCHEMES.map((s) => s + ":").join(" ")}, a path or a registry name`,
  );
}

function rejectFragment(input: string, fragment: string | undefined, fail: (m: string) => never): void {
  if (fragment === undefined) return;
  const decoded = percentDecode(fragment);
  if (decoded === "") return;
  fail(`the flake ref contains the fragment '#${decoded}': write the ref without '#...' and put '${decoded}' in the separate attribute field`);
}

function describeSyntaxError(input: string, shown: string): string {
  // eslint-disable-next-line no-control-regex
  const bad = /[\x00-\x20\x7f-\u{10ffff}`|<>\\^{}[\]]/u.exec(input);
  if (bad) return `'${shown}' is not a valid flake ref: ${describeChar(bad[0])} at position ${bad.index} is not allowed (percent-encode it, or remove it)`;
  if (/%(?![0-9A-Fa-f]{2})/.test(input)) return `'${shown}' is not a valid flake ref: '%' must start a %XX escape`;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(input) && /[A-Z]/.test(input.slice(0, input.indexOf(":")))) {
    return `'${shown}' is not a valid flake ref: the scheme must be lower case (e.g. github:, git+https://)`;
  }
  return `'${shown}' is not a valid flake ref: expected SCHEME:..., a path (./dir, /abs/dir) or a registry name (nixpkgs/branch)`;
}

/** Names a character for an error message without echoing invisible or confusable bytes raw. */
export function describeChar(ch: string): string {
  const cp = ch.codePointAt(0)!;
  const u = "U+" + cp.toString(16).toUpperCase().padStart(4, "0");
  if (ch === " ") return "a space";
  if (/\s/u.test(ch)) return `whitespace (${u})`;
  if (cp < 0x20 || cp === 0x7f) return `a control character (${u})`;
  if (cp > 0x7e) return `the non-ASCII character '${ch}' (${u})`;
  return `the character '${ch}'`;
}

function takeDir(query: Map<string, string>): string | undefined {
  const dir = query.get("dir");
  query.delete("dir");
  return dir === undefined || dir === "" ? undefined : dir;
}

function paramsOf(query: Map<string, string>): Record<string, string> {
  return Object.fromEntries(query);
}

/** Adds the defined optional fields (so that absent fields are absent, not `undefined`). */
function withOptional<T extends object>(base: T, extra: Record<string, unknown>): T {
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) out[k] = v;
  return out as T;
}

function parseIndirect(input: string, form: "url" | "bare", path: string, query: Map<string, string>, fail: (m: string) => never): IndirectFlakeRef {
  const shown = redactCredentials(input);
  const parts = path.split("/").filter((p) => p !== "");
  let ref: string | undefined;
  let rev: string | undefined;
  if (parts.length === 2) {
    const p = parts[1]!;
    if (REV_RE.test(p)) rev = p.toLowerCase();
    else if (REF_RE.test(p)) ref = p;
    else fail(`in '${shown}', '${p}' is neither a commit hash (40 hex digits) nor a branch/tag name`);
  } else if (parts.length === 3) {
    const [, r, c] = parts as [string, string, string];
    if (!REF_RE.test(r)) fail(`in '${shown}', '${r}' is not a branch/tag name`);
    if (!REV_RE.test(c)) fail(`in '${shown}', '${c}' is not a commit hash (40 hex digits); write ID/BRANCH/COMMIT`);
    ref = r;
    rev = c.toLowerCase();
  } else if (parts.length !== 1) {
    fail(`'${shown}' is not a valid registry ref; write ID, ID/BRANCH, ID/COMMIT or ID/BRANCH/COMMIT`);
  }
  const id = parts[0]!;
  if (!FLAKE_ID_RE.test(id)) fail(`in '${shown}', '${id}' is not a valid flake id (a letter, then letters, digits, '_' or '-')`);
  return withOptional({ type: "indirect", scheme: "flake", form, id, params: paramsOf(query) } as IndirectFlakeRef, { ref, rev });
}

function parseForge(shown: string, type: ForgeFlakeRef["type"], url: UrlParts, query: Map<string, string>, fail: (m: string) => never): ForgeFlakeRef {
  const parts = url.path.split("/").filter((p) => p !== "");
  if (parts.length < 2) fail(`'${shown}' needs an owner and a repository: write ${type}:OWNER/REPO`);
  let ref: string | undefined;
  let rev: string | undefined;
  let host: string | undefined;
  if (parts.length === 3) {
    const p = parts[2]!;
    if (REV_RE.test(p)) rev = p.toLowerCase();
    else if (REF_RE.test(p)) ref = p;
    else fail(`in '${shown}', '${p}' is neither a commit hash (40 hex digits) nor a branch/tag name`);
  } else if (parts.length > 3) {
    const r = parts.slice(2).join("/");
    if (!REF_RE.test(r)) fail(`in '${shown}', '${r}' is not a branch/tag name`);
    ref = r;
  }
  const hostValue = query.get("host");
  if (hostValue !== undefined) {
    if (!FORGE_HOST_RE.test(hostValue)) fail(`in '${shown}', host '${hostValue}' is not a valid host name (Nix 2.8 accepts letters, digits and dots)`);
    host = hostValue;
  }
  const refValue = query.get("ref");
  if (refValue !== undefined) {
    if (!REF_RE.test(refValue)) fail(`in '${shown}', '${refValue}' is not a valid branch/tag name`);
    if (ref !== undefined) fail(`'${shown}' names a branch/tag twice (in the path and in ?ref=); keep one`);
    ref = refValue;
  }
  const revValue = query.get("rev");
  if (revValue !== undefined) {
    if (rev !== undefined) fail(`'${shown}' names a commit twice (in the path and in ?rev=); keep one`);
    const h = parseSha1(revValue);
    if ("error" in h) fail(`in '${shown}', ${h.error}`);
    else rev = h.hex;
  }
  if (ref !== undefined && rev !== undefined) {
    fail(`'${shown}' names both a branch/tag and a commit; ${type}: refs take one of them (the commit pins it)`);
  }
  query.delete("host");
  query.delete("ref");
  query.delete("rev");
  const dir = takeDir(query);
  return withOptional({ type, scheme: type, owner: parts[0]!, repo: parts[1]!, params: paramsOf(query) } as ForgeFlakeRef, { ref, rev, host, dir });
}

function takeRev(shown: string, query: Map<string, string>, fail: (m: string) => never): string | undefined {
  const v = query.get("rev");
  query.delete("rev");
  if (v === undefined) return undefined;
  const h = parseSha1(v);
  if ("error" in h) return fail(`in '${shown}', ${h.error}`);
  return h.hex;
}

function parseGit(shown: string, scheme: string, transport: string, url: UrlParts, query: Map<string, string>, fail: (m: string) => never): GitFlakeRef {
  const ref = query.get("ref");
  query.delete("ref");
  if (ref !== undefined && BAD_GIT_REF_RE.test(ref)) fail(`in '${shown}', '${ref}' is not a valid git branch/tag name`);
  const rev = takeRev(shown, query, fail);
  const bool = (k: string): boolean | undefined => {
    const v = query.get(k);
    query.delete(k);
    return v === undefined ? undefined : v === "1";
  };
  const shallow = bool("shallow");
  const submodules = bool("submodules");
  const dir = takeDir(query);
  return withOptional({ type: "git", scheme, url: urlWithoutQuery(transport, url.authority, url.path), params: paramsOf(query) } as GitFlakeRef, {
    ref,
    rev,
    shallow,
    submodules,
    dir,
  });
}

function parseMercurial(
  shown: string,
  scheme: string,
  transport: string,
  url: UrlParts,
  query: Map<string, string>,
  fail: (m: string) => never,
): MercurialFlakeRef {
  const ref = query.get("ref");
  query.delete("ref");
  if (ref !== undefined && !REF_RE.test(ref)) fail(`in '${shown}', '${ref}' is not a valid Mercurial branch/tag name`);
  const rev = takeRev(shown, query, fail);
  const dir = takeDir(query);
  return withOptional({ type: "mercurial", scheme, url: urlWithoutQuery(transport, url.authority, url.path), params: paramsOf(query) } as MercurialFlakeRef, {
    ref,
    rev,
    dir,
  });
}

function parsePathUrl(shown: string, url: UrlParts, query: Map<string, string>, fail: (m: string) => never): PathFlakeRef {
  if (url.authority !== undefined && url.authority !== "") {
    fail(`'${shown}' names host '${url.authority}'; a path: ref has none: write path:/absolute/path`);
  }
  let rev: string | undefined;
  let narHash: string | undefined;
  let revCount: number | undefined;
  let lastModified: number | undefined;
  for (const [k, v] of query) {
    if (k === "rev") {
      const h = parseSha1(v);
      if ("error" in h) fail(`in '${shown}', ${h.error}`);
      else rev = h.hex;
    } else if (k === "narHash") {
      if (!isValidNarHash(v)) fail(`in '${shown}', narHash '${v}' is not an SRI SHA-256 hash (sha256-<base64>)`);
      narHash = v;
    } else if (k === "revCount" || k === "lastModified") {
      const n = parseUint(v);
      if (n === undefined) fail(`in '${shown}', ${k} '${v}' is not a non-negative integer`);
      if (k === "revCount") revCount = n;
      else lastModified = n;
    } else if (k === "dir") {
      fail(`'${shown}' has '?dir=', which path: refs do not take (Nix 2.8): put the subdirectory into the path instead`);
    } else {
      fail(`'${shown}' has the parameter '${k}', which path: refs do not take (they take rev, narHash, revCount, lastModified)`);
    }
  }
  return withOptional({ type: "path", scheme: "path", form: "url", path: url.path, params: {} } as PathFlakeRef, { rev, narHash, revCount, lastModified });
}

// ---------------------------------------------------------------------------------------------
// Formatting.

function formatQuery(typed: [string, string | undefined][], params: Record<string, string>): string {
  const parts: string[] = [];
  for (const [k, v] of typed) if (v !== undefined) parts.push(`${k}=${encodeQueryValue(v)}`);
  for (const [k, v] of Object.entries(params)) parts.push(`${k}=${encodeQueryValue(v)}`);
  return parts.length ? "?" + parts.join("&") : "";
}

const boolParam = (b: boolean | undefined): string | undefined => (b === undefined ? undefined : b ? "1" : "0");
const numParam = (n: number | undefined): string | undefined => (n === undefined ? undefined : String(n));

/** Can `ref` be written as path segments (`github:o/r/<ref>`) and read back unchanged? */
function refFitsInPath(ref: string): boolean {
  return !REV_RE.test(ref) && ref.split("/").every((p) => p !== "");
}

/** Writes `url` (a transport URL) with the flake scheme `scheme` in front (`https://x` -> `git+https://x`). */
function withScheme(scheme: string, url: string): string {
  return scheme + url.slice(url.indexOf(":"));
}

/**
 * A canonical string for `ref`: `parseFlakeRef(formatFlakeRef(r))` deep-equals `r` for every `r`
 * that `parseFlakeRef` returned. Typed parameters come first, in a fixed order, then `params` in
 * their original order.
 */
export function formatFlakeRef(ref: FlakeRef): string {
  switch (ref.type) {
    case "github":
    case "gitlab":
    case "sourcehut": {
      let head = `${ref.scheme}:${ref.owner}/${ref.repo}`;
      let queryRef: string | undefined;
      if (ref.rev !== undefined) {
        head += "/" + ref.rev;
        queryRef = ref.ref;
      } else if (ref.ref !== undefined) {
        if (refFitsInPath(ref.ref)) head += "/" + ref.ref;
        else queryRef = ref.ref;
      }
      return (
        head +
        formatQuery(
          [
            ["ref", queryRef],
            ["dir", ref.dir],
            ["host", ref.host],
          ],
          ref.params,
        )
      );
    }
    case "git":
      return (
        withScheme(ref.scheme, ref.url) +
        formatQuery(
          [
            ["ref", ref.ref],
            ["rev", ref.rev],
            ["dir", ref.dir],
            ["shallow", boolParam(ref.shallow)],
            ["submodules", boolParam(ref.submodules)],
          ],
          ref.params,
        )
      );
    case "mercurial":
      return (
        withScheme(ref.scheme, ref.url) +
        formatQuery(
          [
            ["ref", ref.ref],
            ["rev", ref.rev],
            ["dir", ref.dir],
          ],
          ref.params,
        )
      );
    case "tarball":
    case "file":
      return (
        withScheme(ref.scheme, ref.url) +
        formatQuery(
          [
            ["dir", ref.dir],
            ["narHash", ref.narHash],
          ],
          ref.params,
        )
      );
    case "path": {
      const query = formatQuery(
        [
          ["dir", ref.dir],
          ["rev", ref.rev],
          ["narHash", ref.narHash],
          ["revCount", numParam(ref.revCount)],
          ["lastModified", numParam(ref.lastModified)],
        ],
        ref.params,
      );
      if (ref.form === "bare") {
        // `nixpkgs?` is the relative path ./nixpkgs; without the `?` it would be a registry name.
        if (query === "" && INDIRECT_RE.test(ref.path)) return ref.path + "?";
        return ref.path + query;
      }
      return (ref.path.startsWith("//") ? "path://" : "path:") + ref.path + query;
    }
    case "indirect": {
      const tail = (ref.ref !== undefined ? "/" + ref.ref : "") + (ref.rev !== undefined ? "/" + ref.rev : "");
      const query = formatQuery([["dir", ref.dir]], ref.params);
      if (ref.form === "bare" && query === "") return ref.id + tail;
      return `flake:${ref.id}${tail}${query}`;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Revisions and ref discovery.

/**
 * The same flake ref pinned to the commit `rev` (40 hex digits), to build exactly a revision that
 * polling found. github/gitlab/sourcehut refs drop their branch (Nix refuses both); git, Mercurial
 * and registry refs keep it (git fetches the branch to find the commit).
 */
export function withRevision(ref: FlakeRef, rev: string): FlakeRef {
  if (!REV_RE.test(rev)) {
    throw new FlakeRefError(rev, `'${rev}' is not a commit hash: a revision is 40 hexadecimal digits`);
  }
  const r = rev.toLowerCase();
  switch (ref.type) {
    case "github":
    case "gitlab":
    case "sourcehut": {
      const { ref: _dropped, ...rest } = ref;
      void _dropped;
      return { ...rest, rev: r };
    }
    case "git":
    case "mercurial":
    case "indirect":
      return { ...ref, rev: r };
    default:
      throw new FlakeRefError(
        formatFlakeRef(ref),
        `a ${ref.type} flake ref has no commits to pin; only github, gitlab, sourcehut, git, Mercurial and registry refs can be pinned to a revision`,
      );
  }
}

/** Where git smart-HTTP ref discovery (`GET <url>/info/refs?service=git-upload-pack`) can run. */
export interface CloneTarget {
  /** `https://…` (or `http://…` for git+http refs). */
  url: string;
  /** The ref to look up: the flake ref's branch/tag, or `HEAD`. */
  ref: string;
  /** Present when the flake ref is already pinned to a commit. */
  rev?: string;
}

const DEFAULT_FORGE_HOST: Record<ForgeFlakeRef["type"], string> = {
  github: "github.com",
  gitlab: "gitlab.com",
  sourcehut: "git.sr.ht",
};

/**
 * The git URL on which smart-HTTP ref discovery finds the commit of `ref` (github:o/r ->
 * https://github.com/o/r.git), or undefined when there is none (ssh, file, git://, Mercurial,
 * archives, paths, registry refs).
 */
export function cloneUrlOf(ref: FlakeRef): CloneTarget | undefined {
  let url: string;
  switch (ref.type) {
    case "github":
    case "gitlab":
    case "sourcehut": {
      const host = ref.host !== undefined && ref.host !== "" ? ref.host : DEFAULT_FORGE_HOST[ref.type];
      if (ref.type === "gitlab") {
        // gitlab:group%2Fsubgroup/repo names a project in a subgroup.
        url = `https://${host}/${ref.owner.replace(/%2F/gi, "/")}/${ref.repo}.git`;
      } else if (ref.type === "sourcehut") {
        url = `https://${host}/${ref.owner}/${ref.repo}`;
      } else {
        url = `https://${host}/${ref.owner}/${ref.repo}.git`;
      }
      break;
    }
    case "git":
      if (!ref.url.startsWith("https:") && !ref.url.startsWith("http:")) return undefined;
      url = ref.url;
      break;
    default:
      return undefined;
  }
  const out: CloneTarget = { url, ref: ref.ref ?? "HEAD" };
  if (ref.rev !== undefined) out.rev = ref.rev;
  return out;
}
