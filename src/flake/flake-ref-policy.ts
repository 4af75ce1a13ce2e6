/**
 * Flake refs and attributes come from users (NixImage specs) and are untrusted (design.md §6).
 *
 * `checkFlakeRef` decides whether a ref may be built: a safe character set, a scheme from the
 * policy's allowlist, only the query parameters that scheme needs, no credentials in URLs, and a
 * key Secret for `git+ssh`. `flakeRefCelRegex` expresses the same syntax-level rules as ONE regex
 * (within the common subset of RE2 and JavaScript) for the CRD's `x-kubernetes-validations`; the
 * check itself uses the very same per-scheme patterns, so the two agree by construction. What the
 * regex cannot see and only `checkFlakeRef` reports: semantic parse errors (`Invalid`: a malformed
 * commit hash, a repeated parameter, a bad branch name...), the length limit (`TooLong`: use CEL
 * `size(self) <= maxLength`), and a missing ssh key (`SshKeyRequired`).
 *
 * `&` is a shell metacharacter, but it is also the only way to give a flake ref two parameters
 * (`git+https://host/repo?ref=main&dir=sub`), so it is allowed exactly as the separator between
 * `key=value` pairs of the query; nowhere else, and never percent-encoded. Flake refs are passed to
 * Nix as argv, never through a shell, so this is safe.
 */
import { z } from "zod";
import { FlakeRefError, KNOWN_SCHEMES, describeChar, parseFlakeRef, redactCredentials, splitUrl, type FlakeRef } from "./flake-ref.ts";
import {
  DENIED_ADDRESS_RANGES,
  NUMERIC_LABEL_SOURCE,
  addressRangesSchema,
  checkAddress,
  classifyHost,
  formatIpAddress,
  parseAddressRanges,
  parseCidr,
} from "./address-policy.ts";
import { ipv4AllowedRegex } from "./ipv4-range-regex.ts";

const FLAKE_REF_SCHEMES = KNOWN_SCHEMES as readonly [string, ...string[]];

/** Allowed by default (design.md §6). `git+ssh` additionally needs a key Secret. */
export const DEFAULT_ALLOWED_SCHEMES: readonly string[] = ["github", "gitlab", "sourcehut", "git+https", "git+ssh", "tarball+https", "https"];

const DEFAULT_FLAKE_REF_MAX_LENGTH = 1024;

/**
 * Operator configuration `flakeRefPolicy`. Scheme names are those of flake refs as written
 * (`github`, `git+https`, `tarball+https`, `https`, ...); `path` also covers bare paths (`./x`,
 * `/abs`) and `flake` also covers bare registry names (`nixpkgs/branch`). A plain `https`/`http`/
 * `file` URL is allowed by its scheme only when it names an archive (`.tar.gz`, `.zip`, ...).
 */
export const FlakeRefPolicySchema = z.strictObject({
  allowedSchemes: z
    .array(z.enum(FLAKE_REF_SCHEMES))
    .default(() => [...DEFAULT_ALLOWED_SCHEMES])
    .describe("Flake ref schemes that NixImages may use."),
  allowHostOverride: z.boolean().default(false).describe("Allow `?host=` on github:/gitlab:/sourcehut: refs (self-hosted instances)."),
  maxLength: z.number().int().min(16).max(4096).default(DEFAULT_FLAKE_REF_MAX_LENGTH).describe("Longest flake ref accepted."),
  allowedAddressRanges: addressRangesSchema,
});

/** The same schema under the name the operator config uses. */

export type FlakeRefPolicy = z.output<typeof FlakeRefPolicySchema>;

/** The defaults, deeply frozen (it is shared, e.g. as the operator config's default). */
export const defaultFlakeRefPolicy: FlakeRefPolicy = (() => {
  const p = FlakeRefPolicySchema.parse({});
  Object.freeze(p.allowedSchemes);
  Object.freeze(p.allowedAddressRanges);
  return Object.freeze(p);
})();

export type FlakeRefDenyCode =
  "TooLong" | "Invalid" | "UnsafeCharacter" | "SchemeDenied" | "ParameterDenied" | "CredentialsInUrl" | "SshKeyRequired" | "AddressDenied";

export type FlakeRefCheck = { ok: true; ref: FlakeRef; scheme: string } | { ok: false; code: FlakeRefDenyCode; reason: string };

export interface CheckFlakeRefOptions {
  /** The NixImage names an ssh key Secret (required for `git+ssh`). */
  hasSshKey?: boolean;
}

const ADMIN_HINT = "An operator admin can widen flakeRefPolicy.allowedSchemes.";

// ---------------------------------------------------------------------------------------------
// Patterns (RE2 ∩ JavaScript: no lookaround, no backreferences, no named groups, no \d).

/** %-escapes of the characters a flake ref may contain anyway (letters, digits, - . _ ~ + = : @ /). */
const ESC = "%(?:2[BDEFbdef]|3[0-9ADad]|4[0-9A-Fa-f]|5[0-9AFaf]|6[1-9A-Fa-f]|7[0-9AEae])";
const PCH = `(?:[A-Za-z0-9._~+=:@-]|${ESC})`;
const SEG = `${PCH}+`;
const HOST = "[A-Za-z0-9._-]+(?::[0-9]{1,5})?";
const USER = "[A-Za-z0-9._~-]+@";
const NET_PATH = `(?:/${PCH}*)*`;
const FILE_PATH = `(?:///|/)${SEG}(?:/${PCH}*)*`;
const ARCHIVE_EXT = "\\.(?:zip|tar|tgz|tar\\.gz|tar\\.xz|tar\\.bz2|tar\\.zst)";
const NET_ARCHIVE_PATH = `/(?:${PCH}|/)*${ARCHIVE_EXT}`;
const FILE_ARCHIVE_PATH = `(?:///|/)${PCH}(?:${PCH}|/)*${ARCHIVE_EXT}`;
const BARE_SEG = "[A-Za-z0-9._~+=-]+";
const BARE_PATH = `(?:\\.\\.?/?|(?:\\.\\.?)?/${BARE_SEG}(?:/${BARE_SEG})*/?)`;
const FLAKE_ID = "[a-zA-Z][a-zA-Z0-9_-]*";
const INDIRECT_TAIL = "(?:/[a-zA-Z0-9][a-zA-Z0-9._/-]*)?";
const DIR_SEG = "(?:[A-Za-z0-9_+-][A-Za-z0-9._+-]*|\\.[A-Za-z0-9_+-][A-Za-z0-9._+-]*|\\.\\.[A-Za-z0-9._+-]+)";

/** What each query parameter's value may look like (raw, as written). */
const VALUE_PATTERNS: Record<string, string> = {
  ref: "[A-Za-z0-9][A-Za-z0-9._/+-]*",
  rev: "[0-9a-fA-F]{40}",
  dir: `${DIR_SEG}(?:/${DIR_SEG})*`,
  narHash: "sha256-(?:[A-Za-z0-9+/]|%2[BbFf]){43}(?:=|%3[Dd])?",
  shallow: "[01]",
  submodules: "[01]",
  host: "[A-Za-z0-9.-]+",
  revCount: "[0-9]+",
  lastModified: "[0-9]+",
};

const VALUE_DESCRIPTIONS: Record<string, string> = {
  ref: "a branch or tag name (letters, digits, . _ / + -)",
  rev: "a commit hash of 40 hex digits",
  dir: "a relative directory inside the source (letters, digits, . _ + -, segments separated by '/', no '.' or '..' segments)",
  narHash: "an SRI hash sha256-<43 base64 digits>=",
  shallow: "0 or 1",
  submodules: "0 or 1",
  host: "a host name",
  revCount: "a number",
  lastModified: "a number",
};

interface Form {
  /** Pattern of everything before the query. */
  head: string;
  /** Query parameters this form takes (`host` only with allowHostOverride). */
  keys: readonly string[];
  /** How to write it, for messages. */
  example: string;
}

const FORGE_KEYS = ["ref", "rev", "dir", "host"] as const;
const GIT_KEYS = ["ref", "rev", "dir", "shallow", "submodules"] as const;
const HG_KEYS = ["ref", "rev", "dir"] as const;
const ARCHIVE_KEYS = ["dir", "narHash"] as const;

function esc(s: string): string {
  return s.replace(/[.+*?^$()[\]{}|\\]/g, "\\$&");
}

/** The accepted forms of each policy scheme name (bare forms belong to `path` and `flake`). */
const FORMS: Record<string, Form[]> = (() => {
  const forms: Record<string, Form[]> = {};
  for (const s of ["github", "gitlab", "sourcehut"]) {
    forms[s] = [{ head: `${s}:${SEG}/${SEG}(?:/${SEG})*`, keys: FORGE_KEYS, example: `${s}:OWNER/REPO[/BRANCH][?dir=SUBDIR]` }];
  }
  const net = (scheme: string, keys: readonly string[], example: string): Form => ({
    head: `${esc(scheme)}://${HOST}${NET_PATH}`,
    keys,
    example: `${scheme}://${example}`,
  });
  const ssh = (scheme: string, keys: readonly string[]): Form => ({
    head: `${esc(scheme)}://(?:${USER})?${HOST}${NET_PATH}`,
    keys,
    example: `${scheme}://git@HOST/PATH`,
  });
  const file = (scheme: string, keys: readonly string[]): Form => ({
    head: `${esc(scheme)}:${FILE_PATH}`,
    keys,
    example: `${scheme}:///ABSOLUTE/PATH`,
  });
  forms["git+https"] = [net("git+https", GIT_KEYS, "HOST/PATH[?ref=BRANCH][&dir=SUBDIR]")];
  forms["git+http"] = [net("git+http", GIT_KEYS, "HOST/PATH[?ref=BRANCH]")];
  forms["git"] = [net("git", GIT_KEYS, "HOST/PATH")];
  forms["git+ssh"] = [ssh("git+ssh", GIT_KEYS)];
  forms["git+file"] = [file("git+file", GIT_KEYS)];
  forms["hg+https"] = [net("hg+https", HG_KEYS, "HOST/PATH")];
  forms["hg+http"] = [net("hg+http", HG_KEYS, "HOST/PATH")];
  forms["hg+ssh"] = [ssh("hg+ssh", HG_KEYS)];
  forms["hg+file"] = [file("hg+file", HG_KEYS)];
  for (const t of ["https", "http"]) {
    forms[`tarball+${t}`] = [net(`tarball+${t}`, ARCHIVE_KEYS, "HOST/PATH")];
    forms[`file+${t}`] = [net(`file+${t}`, ARCHIVE_KEYS, "HOST/PATH")];
    forms[t] = [{ head: `${t}://${HOST}${NET_ARCHIVE_PATH}`, keys: ARCHIVE_KEYS, example: `${t}://HOST/PATH.tar.gz` }];
  }
  forms["tarball+file"] = [file("tarball+file", ARCHIVE_KEYS)];
  forms["file+file"] = [file("file+file", ARCHIVE_KEYS)];
  forms["file"] = [{ head: `file:${FILE_ARCHIVE_PATH}`, keys: ARCHIVE_KEYS, example: "file:///ABSOLUTE/PATH.tar.gz" }];
  forms["path"] = [
    { head: `path:${FILE_PATH}`, keys: ["rev", "narHash", "revCount", "lastModified"], example: "path:/ABSOLUTE/PATH" },
    { head: BARE_PATH, keys: ["dir", "ref", "rev"], example: "./RELATIVE/PATH or /ABSOLUTE/PATH" },
  ];
  forms["flake"] = [
    { head: `flake:${FLAKE_ID}${INDIRECT_TAIL}`, keys: ["dir"], example: "flake:ID[/BRANCH][/COMMIT]" },
    { head: `${FLAKE_ID}${INDIRECT_TAIL}`, keys: [], example: "ID[/BRANCH][/COMMIT]" },
  ];
  return forms;
})();

function keysOf(form: Form, policy: FlakeRefPolicy): string[] {
  return form.keys.filter((k) => k !== "host" || policy.allowHostOverride);
}

function formPattern(form: Form, policy: FlakeRefPolicy): string {
  const keys = keysOf(form, policy);
  if (keys.length === 0) return form.head;
  const kv = `(?:${keys.map((k) => `${k}=${VALUE_PATTERNS[k]}`).join("|")})`;
  return `${form.head}(?:\\?${kv}(?:&${kv})*)?`;
}

/**
 * ONE regex (RE2 syntax, also valid JavaScript) that a flake ref must match to pass the policy at
 * the syntax level: scheme allowlist, safe characters, known parameters, no credentials. For the
 * CRD: `self.matches(<this>)` plus `size(self) <= maxLength`.
 */
export function flakeRefCelRegex(policy: FlakeRefPolicy = defaultFlakeRefPolicy): string {
  const alternatives: string[] = [];
  for (const scheme of policy.allowedSchemes) {
    for (const form of FORMS[scheme] ?? []) alternatives.push(formPattern(form, policy));
  }
  if (alternatives.length === 0) return "^$";
  return `^(?:${alternatives.join("|")})$`;
}

/**
 * Parse rules the one syntax regex cannot express, each as a regex of what it DENIES, for the CRD
 * (`!self.matches(denied)`). `checkFlakeRef` finds the same refs through the parser, with a message
 * naming the exact value; without these the API server stored refs the controller then refused
 * (a repeated parameter, a branch named twice, a git branch name git refuses).
 */
export function flakeRefSemanticCelRules(): { denied: string; message: string }[] {
  const forge = "^(?:github|gitlab|sourcehut):";
  // After OWNER/REPO: a third path segment (a branch or commit in the path).
  const pathRef = `${forge}[^/?]*/[^/?]*/+[^/?]`;
  const query = (key: string) => `[^?]*\\?(?:.*&)?${key}=`;
  const keys = Object.keys(VALUE_PATTERNS);
  return [
    {
      denied: keys.map((k) => `[?&]${k}=.*&${k}=`).join("|"),
      message: "gives a query parameter twice (like ?ref=a&ref=b): keep one",
    },
    {
      denied: `${pathRef}[^?]*\\?(?:.*&)?(?:ref|rev)=|${forge}${query("ref")}.*&rev=|${forge}${query("rev")}.*&ref=`,
      message: "names the branch/tag or commit twice: a github:, gitlab: or sourcehut: ref takes one, in the path (OWNER/REPO/BRANCH) or in ?ref= or ?rev=",
    },
    {
      denied: `${forge}[^/?]*/[^/?]*/+(?:[^/?a-zA-Z0-9]|[^?]*[^?a-zA-Z0-9_./-])|${forge}${query("ref")}(?:[^a-zA-Z0-9&]|[^&]*[^&a-zA-Z0-9_./-])`,
      message: "has a branch/tag name Nix does not accept in github:, gitlab: and sourcehut: refs: a letter or digit, then letters, digits, _ . / -",
    },
    {
      denied: `^git(?:\\+[a-z]+)?:${query("ref")}[^&]*(?://|/\\.|\\.\\.|\\.lock(?:/|&|$)|[/.](?:&|$))`,
      message: "has a ?ref= that git does not accept as a branch/tag name (no '..', '//', '/.', trailing '/' or '.', or '.lock')",
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Addresses (SSRF): a host that is an IP literal or localhost must lie in an allowed range.

const DENIED_RANGES = DENIED_ADDRESS_RANGES.map((r) => parseCidr(r.cidr)!);
const AUTHORITY_PREFIX = "^[a-z][a-z0-9+.-]*://(?:[^/?#@]*@)?";
const NUMERIC_HOST = `(?:[^/?#@:&]*\\.)?${NUMERIC_LABEL_SOURCE}`;
const LOCALHOST_HOST = "(?:[^/?#@:&]*\\.)?[lL][oO][cC][aA][lL][hH][oO][sS][tT]";

function loopbackAllowed(policy: FlakeRefPolicy): boolean {
  return checkAddress({ family: 4, bytes: Uint8Array.of(127, 0, 0, 1) }, parseAddressRanges(policy.allowedAddressRanges)).allowed;
}

/**
 * The CRD's address rule, `!self.matches(denied) || self.matches(allowed)`: a host (the URL's, or
 * a forge ref's `?host=`) that is written as a number (any IPv4 spelling) or is localhost must be a
 * canonical dotted quad outside the denied ranges or inside `allowedAddressRanges`. IPv6 literals
 * never pass the main regex (brackets are not in its character set).
 */
export function flakeRefAddressCelRegexes(policy: FlakeRefPolicy = defaultFlakeRefPolicy): { denied: string; allowed: string } {
  const hosts = loopbackAllowed(policy) ? NUMERIC_HOST : `${NUMERIC_HOST}|${LOCALHOST_HOST}`;
  const denied = `${AUTHORITY_PREFIX}(?:${hosts})\\.?(?:[:/?#]|$)|[?&]host=(?:${hosts})\\.?(?:[&#]|$)`;
  const quad = ipv4AllowedRegex(DENIED_RANGES, parseAddressRanges(policy.allowedAddressRanges));
  const allowed = quad === undefined ? "^$" : `${AUTHORITY_PREFIX}${quad}(?::[0-9]{1,5})?(?:[/?#]|$)|[?&]host=${quad}(?:[&#]|$)`;
  return { denied, allowed };
}

const ADDRESS_HINT = "an operator admin can allow its range in flakeRefPolicy.allowedAddressRanges";

/** Why the host of `input` may not be reached, or undefined. */
function addressProblem(input: string, ref: FlakeRef, policy: FlakeRefPolicy): string | undefined {
  const url = splitUrl(input);
  let host: string | undefined;
  if (url?.authority !== undefined) {
    const hostPort = url.authority.slice(url.authority.lastIndexOf("@") + 1);
    host = hostPort.startsWith("[") ? hostPort.slice(0, hostPort.indexOf("]") + 1) : hostPort.split(":")[0]!;
  } else if ((ref.type === "github" || ref.type === "gitlab" || ref.type === "sourcehut") && ref.host !== undefined) {
    host = ref.host;
  }
  if (host === undefined || host === "") return undefined;
  const kind = classifyHost(host);
  const ranges = parseAddressRanges(policy.allowedAddressRanges);
  switch (kind.kind) {
    case "name":
      return undefined;
    case "localhost":
      if (loopbackAllowed(policy)) return undefined;
      return `the flake ref's host '${host}' is localhost (loopback); a flake ref must not reach the operator's or the node's own services (SSRF): use a public host name, or ${ADDRESS_HINT}`;
    case "bad-number":
      return `the flake ref's host '${host}' ends in a number but is not an IP address; write a host name`;
    case "ip": {
      const verdict = checkAddress(kind.address, ranges);
      if (!verdict.allowed) {
        const same = verdict.address === host.replace(/^\[|\]$/g, "");
        return `the flake ref's host '${host}'${same ? "" : ` (${verdict.address})`} is in ${verdict.what}, ${verdict.cidr}; a flake ref must not reach the cluster's or the node's own networks (SSRF): use a public host name, or ${ADDRESS_HINT}`;
      }
      if (kind.address.family === 6) {
        return `the flake ref's host '${host}' is an IPv6 address literal, which flake refs may not use: write a host name`;
      }
      if (!kind.canonical) {
        const plain = formatIpAddress(kind.address);
        return `the flake ref's host '${host}' is the IPv4 address ${plain} in an unusual spelling; write ${plain} or a host name`;
      }
      return undefined;
    }
  }
}

/** The policy's scheme name for a parsed ref (bare paths are `path`, bare registry names `flake`). */
function policySchemeOf(ref: FlakeRef): string {
  return ref.scheme;
}

// ---------------------------------------------------------------------------------------------
// The check.

const SAFE_CHAR = /[A-Za-z0-9._~/:@+=?&%-]/;
const SHELL_META = new Set([";", "|", "&", "$", "`", "<", ">", "\\", "(", ")", "*", "!", "'", '"', "{", "}", "[", "]", "^"]);
const ALLOWED_ESCAPE = new RegExp(`^${ESC}$`);

function deny(code: FlakeRefDenyCode, reason: string): FlakeRefCheck {
  return { ok: false, code, reason };
}

function listSchemes(policy: FlakeRefPolicy): string {
  return policy.allowedSchemes.length ? policy.allowedSchemes.map((s) => s + ":").join(", ") : "none";
}

/**
 * Decides whether `input` may be built under `policy`. Reasons name the offending part and what is
 * allowed instead; they never echo a URL password.
 */
export function checkFlakeRef(input: string, policy: FlakeRefPolicy = defaultFlakeRefPolicy, options: CheckFlakeRefOptions = {}): FlakeRefCheck {
  if (typeof input !== "string" || input === "") {
    return deny("Invalid", "the flake ref is empty; write e.g. github:OWNER/REPO");
  }
  if (input.length > policy.maxLength) {
    return deny("TooLong", `the flake ref is ${input.length} characters long; at most ${policy.maxLength} are allowed`);
  }
  const hash = input.indexOf("#");
  if (hash >= 0) {
    return deny(
      "Invalid",
      `the flake ref contains '#${redactCredentials(input.slice(hash + 1))}': write the ref without '#...' and put the attribute (e.g. packages.x86_64-linux.default) in the separate attribute field`,
    );
  }

  // An IPv6 literal would fail the character check below; say what is wrong with it instead.
  const bracket = /^[a-z][a-z0-9+.-]*:\/\/(?:[^/?#@]*@)?(\[[^\]/]*\])/.exec(input);
  if (bracket) {
    const kind = classifyHost(bracket[1]!);
    const verdict = kind.kind === "ip" ? checkAddress(kind.address, parseAddressRanges(policy.allowedAddressRanges)) : undefined;
    const what = verdict && !verdict.allowed ? ` in ${verdict.what}, ${verdict.cidr}` : "";
    return deny(
      "AddressDenied",
      `the flake ref's host '${bracket[1]}' is an IPv6 address literal${what}; flake refs may not use IPv6 literals: write a host name`,
    );
  }

  // Characters: a conservative set; %-escapes only of characters from that set (no encoded '&', '?', '%').
  for (let i = 0; i < input.length;) {
    const ch = String.fromCodePoint(input.codePointAt(i)!);
    if (ch === "%") {
      const escape = input.slice(i, i + 3);
      if (!ALLOWED_ESCAPE.test(escape)) {
        return deny(
          "UnsafeCharacter",
          `the flake ref contains the escape '${escape}' at position ${i}; only %-escapes of letters, digits and - . _ ~ + = : @ / are allowed`,
        );
      }
      i += 3;
      continue;
    }
    if (!SAFE_CHAR.test(ch)) {
      const what = SHELL_META.has(ch) ? `the shell metacharacter '${ch}'` : describeChar(ch);
      return deny(
        "UnsafeCharacter",
        `the flake ref contains ${what} at position ${i}; flake refs may contain only letters, digits and - . _ ~ / : @ + = ? & (and %-escapes of those)`,
      );
    }
    i += ch.length;
  }

  let ref: FlakeRef;
  try {
    ref = parseFlakeRef(input);
  } catch (e) {
    if (!(e instanceof FlakeRefError)) throw e;
    const url = splitUrl(input);
    if (url && KNOWN_SCHEMES.includes(url.scheme) && !policy.allowedSchemes.includes(url.scheme)) {
      return deny("SchemeDenied", schemeDeniedReason(url.scheme, policy));
    }
    return deny("Invalid", e.message);
  }

  const scheme = policySchemeOf(ref);
  if (!policy.allowedSchemes.includes(scheme)) {
    return deny("SchemeDenied", schemeDeniedReason(scheme, policy, ref));
  }
  if (ref.type === "file" && (scheme === "https" || scheme === "http" || scheme === "file")) {
    return deny(
      "SchemeDenied",
      `the ${scheme} URL does not name an archive (${["tar.gz", "tgz", "tar.xz", "tar.bz2", "tar.zst", "tar", "zip"].map((e) => "." + e).join(", ")}), so Nix would fetch it as a single file, which cannot be a flake; if it is an archive, write tarball+${scheme}://...`,
    );
  }
  if (ref.type === "path" && ref.form === "bare" && !/^[./]/.test(ref.path)) {
    return deny("Invalid", `'${ref.path}' is a relative path that is easy to mistake for a registry name; write ./${ref.path}`);
  }

  const forms = FORMS[scheme] ?? [];
  const form = ref.type === "path" || ref.type === "indirect" ? forms[ref.form === "bare" ? 1 : 0] : forms[0];
  if (!form) return deny("SchemeDenied", schemeDeniedReason(scheme, policy, ref));
  const keys = keysOf(form, policy);

  // Credentials never belong in a flake ref (it is logged, shown in status, stored in etcd).
  const url = splitUrl(input);
  if (url?.authority?.includes("@")) {
    const userinfo = url.authority.slice(0, url.authority.lastIndexOf("@"));
    const isSsh = url.scheme === "git+ssh" || url.scheme === "hg+ssh";
    if (!isSsh) {
      return deny("CredentialsInUrl", `the ${url.scheme} URL contains user credentials; remove 'USER@' and give credentials through a Secret`);
    }
    if (userinfo.includes(":")) {
      return deny("CredentialsInUrl", `the ${url.scheme} URL contains a password; write ${url.scheme}://USER@HOST/PATH and use an ssh key Secret`);
    }
  }

  // Query parameters.
  const q = input.indexOf("?");
  if (q >= 0) {
    const raw = input.slice(q + 1);
    const seen = new Set<string>();
    for (const token of raw.split("&")) {
      if (token === "") {
        return deny("Invalid", `the query of the flake ref has an empty parameter ('?&', '&&' or a trailing '&' or '?'); remove it`);
      }
      const eq = token.indexOf("=");
      const key = eq < 0 ? token : token.slice(0, eq);
      if (eq < 0) {
        return deny("Invalid", `the query parameter '${key}' has no value; write ${key}=VALUE or remove it`);
      }
      if (seen.has(key)) return deny("Invalid", `the query parameter '${key}' is given twice; keep one`);
      seen.add(key);
      if (key === "host" && form.keys.includes("host") && !policy.allowHostOverride) {
        return deny(
          "ParameterDenied",
          `'?host=' (a different ${scheme} instance) is not allowed here; an operator admin can set flakeRefPolicy.allowHostOverride`,
        );
      }
      if (!keys.includes(key)) {
        return deny(
          "ParameterDenied",
          `the query parameter '${key}' is not allowed in ${scheme === "flake" || (ref.type === "path" && ref.form === "bare") ? "this kind of" : scheme + ":"} flake ref; allowed: ${keys.length ? keys.join(", ") : "none"}`,
        );
      }
      const value = token.slice(eq + 1);
      if (!new RegExp(`^(?:${VALUE_PATTERNS[key]})$`).test(value)) {
        return deny("ParameterDenied", `the value of '${key}' must be ${VALUE_DESCRIPTIONS[key]}`);
      }
    }
  }

  // Everything else about the shape: the same pattern the CRD uses.
  if (!new RegExp(`^(?:${formPattern(form, policy)})$`).test(input)) {
    return deny("Invalid", `the flake ref is not in the form allowed for ${scheme}: refs; write ${form.example}`);
  }

  const address = addressProblem(input, ref, policy);
  if (address !== undefined) return deny("AddressDenied", address);

  if ((scheme === "git+ssh" || scheme === "hg+ssh") && !options.hasSshKey) {
    return deny("SshKeyRequired", `${scheme}: flake refs need an ssh key: set a key Secret on the NixImage, or use git+https://`);
  }
  return { ok: true, ref, scheme };
}

function schemeDeniedReason(scheme: string, policy: FlakeRefPolicy, ref?: FlakeRef): string {
  let what = `'${scheme}:' flake refs are`;
  if (ref?.type === "path" && ref.form === "bare") what = "local paths are";
  else if (ref?.type === "indirect" && ref.form === "bare") what = `registry names ('${ref.id}') are`;
  else if (scheme === "flake") what = "registry refs ('flake:') are";
  const hint =
    scheme === "http" || scheme === "git+http" || scheme === "tarball+http" || scheme === "file+http"
      ? ` Use the https form instead.`
      : scheme === "flake"
        ? ` Write the source directly, e.g. github:NixOS/nixpkgs/nixos-unstable.`
        : "";
  return `${what} not allowed here (allowed: ${listSchemes(policy)}).${hint} ${ADMIN_HINT}`;
}

// ---------------------------------------------------------------------------------------------
// Attributes (`nix build REF#ATTRIBUTE`).

export const ATTRIBUTE_MAX_LENGTH = 256;
/** One attribute name: letters, digits, _ ' + -, not starting with '-'. */
const ATTRIBUTE_SEGMENT_REGEX_SOURCE = "[A-Za-z0-9_'+][A-Za-z0-9_'+-]*";
/** A dot-separated attribute path such as packages.x86_64-linux.web (RE2 and JavaScript: also the CEL `self.matches(...)` regex, paired with `size(self) <= 256`). */
export const ATTRIBUTE_REGEX_SOURCE = `^${ATTRIBUTE_SEGMENT_REGEX_SOURCE}(?:\\.${ATTRIBUTE_SEGMENT_REGEX_SOURCE})*$`;
export const attributePattern = new RegExp(ATTRIBUTE_REGEX_SOURCE);

/**
 * Why `attr` is not a safe flake output attribute, or undefined when it is. The reason says what
 * to change.
 */
export function checkAttribute(attr: string): string | undefined {
  if (typeof attr !== "string" || attr === "") return "the attribute is empty; write e.g. default or packages.x86_64-linux.web";
  if (attr.length > ATTRIBUTE_MAX_LENGTH) return `the attribute is ${attr.length} characters long; at most ${ATTRIBUTE_MAX_LENGTH} are allowed`;
  for (let i = 0; i < attr.length;) {
    const ch = String.fromCodePoint(attr.codePointAt(i)!);
    if (!/[A-Za-z0-9_'+.-]/.test(ch)) {
      const what = SHELL_META.has(ch) || ch === "#" ? `the character '${ch}'` : describeChar(ch);
      return `the attribute contains ${what} at position ${i}; attributes may contain only letters, digits and _ ' + - separated by dots`;
    }
    i += ch.length;
  }
  if (attr.startsWith(".") || attr.endsWith(".") || attr.includes("..")) {
    return "the attribute has an empty name (a leading or trailing '.', or '..'); write names separated by single dots";
  }
  const dash = attr.split(".").find((s) => s.startsWith("-"));
  if (dash !== undefined) return `the attribute name '${dash}' starts with '-'; names must start with a letter, digit, _, ' or +`;
  if (!attributePattern.test(attr)) return "the attribute is not a dot-separated path of names";
  return undefined;
}
