// NixError: what failed (the step, e.g. "build github:acme/shop/<rev>#web"), why (Nix's own error
// text, colour removed, plus the failing builder's last log lines), and what to do (a hint per
// kind). The classification is PURE and table-driven, so it is unit-tested on real Nix messages.
//
// Secrets never reach the message: URL user-info (`https://user:token@host`) is redacted from
// every line taken from Nix or git, and nothing from the environment is ever included.

export type NixErrorKind =
  | "attribute-missing"
  | "build-failed"
  | "eval-failed"
  | "fetch-failed"
  | "not-a-flake"
  | "indirect-ref"
  | "ifd-disabled"
  | "hash-mismatch"
  | "unsupported-system"
  | "no-space"
  | "store-incompatible"
  /** A store path's contents no longer match the hash Nix registered (verify-closure.ts). */
  | "store-corrupted"
  | "invalid-settings"
  | "invalid-output"
  | "timeout"
  | "aborted"
  | "nix-not-found"
  | "unknown";

export interface NixErrorInit {
  kind: NixErrorKind;
  /** The step that failed, in words: `lock flake git+https://...`, `build <ref>#<attr>`. */
  what: string;
  /** Nix's own explanation (first error message), one or more lines. */
  reason: string;
  /** What the user can do about it. */
  hint: string;
  /** The command line (argv joined for display; it never carries secrets). */
  command?: string;
  exitCode?: number | null;
  signal?: string | null;
  /** The failing builder's last log lines, or the last stderr lines. */
  logTail?: string[];
  /** Derivation whose builder failed, for `build-failed`. */
  drvPath?: string;
  cause?: unknown;
}

export class NixError extends Error {
  override name = "NixError";
  readonly kind: NixErrorKind;
  readonly what: string;
  readonly reason: string;
  readonly hint: string;
  readonly command: string | undefined;
  readonly exitCode: number | null | undefined;
  readonly signal: string | null | undefined;
  readonly logTail: string[];
  readonly drvPath: string | undefined;

  constructor(raw: NixErrorInit) {
    const init = redactInit(raw);
    super(formatNixErrorMessage(init), init.cause === undefined ? undefined : { cause: init.cause });
    this.kind = init.kind;
    this.what = init.what;
    this.reason = init.reason;
    this.hint = init.hint;
    this.command = init.command;
    this.exitCode = init.exitCode;
    this.signal = init.signal;
    this.logTail = init.logTail ?? [];
    this.drvPath = init.drvPath;
  }

  /** A short single-paragraph form for status conditions and termination messages. */
  summary(maxLength = 1024): string {
    const text = `${this.what} failed (${this.kind}): ${this.reason.replace(/\s*\n\s*/g, " ")} ${this.hint}`;
    return text.length > maxLength ? `${text.slice(0, maxLength - 1)}…` : text;
  }
}

function redactInit(init: NixErrorInit): NixErrorInit {
  const out: NixErrorInit = {
    ...init,
    what: redactUrlCredentials(init.what),
    reason: redactUrlCredentials(init.reason),
  };
  if (init.command !== undefined) out.command = redactUrlCredentials(init.command);
  if (init.logTail !== undefined) out.logTail = init.logTail.map(redactUrlCredentials);
  return out;
}

/** Lines of the log tail shown in the message itself (all are kept in `logTail`). */
const MESSAGE_LOG_LINES = 10;

function formatNixErrorMessage(init: NixErrorInit): string {
  const parts = [`${init.what} failed: ${init.reason}`];
  const tail = (init.logTail ?? []).slice(-MESSAGE_LOG_LINES);
  if (init.kind === "build-failed" && tail.length > 0) {
    parts.push(`last ${tail.length} log lines:\n${tail.map((l) => `  > ${l}`).join("\n")}`);
  }
  parts.push(`What to do: ${init.hint}`);
  return parts.join("\n");
}

// `scheme://user:password@host` or `scheme://token@host` -> `scheme://[redacted]@host`.
const userInfoPattern = /([a-z][a-z0-9+.-]*:\/\/)[^/\s@'"]+@/gi;

/** Removes credentials embedded in URLs. */
export function redactUrlCredentials(text: string): string {
  return text.replace(userInfoPattern, "$1[redacted]@");
}

interface Rule {
  kind: NixErrorKind;
  pattern: RegExp;
  hint: string;
}

/** First match wins; ordered from most to least specific. */
const rules: readonly Rule[] = [
  {
    kind: "attribute-missing",
    pattern: /does not provide attribute/,
    hint:
      "Check spec.attribute against what the flake provides (`nix flake show <flake>`). A bare name `x` is looked up as " +
      "packages.<system>.x, legacyPackages.<system>.x, then x; the default attribute is `default`.",
  },
  {
    kind: "indirect-ref",
    pattern: /unable to download ''|cannot find flake '[^']*' in the flake registries|in the flake registr/,
    hint:
      "Registry names (like `nixpkgs`) are not resolved: the flake registry is disabled for untrusted flakes. " +
      "Use a full flake URL (e.g. github:NixOS/nixpkgs/nixos-unstable), also for the flake's inputs, or commit a flake.lock.",
  },
  {
    kind: "ifd-disabled",
    pattern: /allow-import-from-derivation|import-from-derivation|because the option 'allow-import-from-derivation'/,
    hint: "The flake builds during evaluation (import-from-derivation). If you trust it, set spec.build.allowImportFromDerivation: true.",
  },
  {
    kind: "not-a-flake",
    pattern: /does not contain a '\/?flake\.nix'|flake\.nix' does not exist|getting status of '[^']*\/flake\.nix'|is not a flake/,
    hint: "The source has no flake.nix at that revision (or in that directory: `?dir=`). Point spec.flake at a flake.",
  },
  {
    kind: "hash-mismatch",
    pattern: /hash mismatch in fixed-output derivation|NAR hash mismatch/,
    hint: "A fixed-output derivation produced different content than its declared hash: update the hash in the flake.",
  },
  {
    kind: "unsupported-system",
    pattern: /with features \{[^}]*\} is required to build|but I am a '/,
    hint: "The attribute is built for a different system than the builder's; select the attribute for the builder's system.",
  },
  {
    kind: "no-space",
    pattern: /No space left on device/,
    hint: "The Nix store volume is full: let the operator garbage-collect it, or give the store volumes more space.",
  },
  {
    kind: "store-incompatible",
    pattern: /store schema is version|database schema version|but I only support/,
    hint: "The store volume was written by a newer Nix than the builder image has: use a matching builder image or a new volume.",
  },
  {
    kind: "build-failed",
    pattern: /builder for '[^']+' failed|build of '[^']+' failed|dependencies couldn't be built|dependency failed|cannot build derivation/,
    hint:
      "A derivation's builder failed; its last log lines are above. Reproduce with `nix build <flake>#<attribute> -L` " +
      "at the same revision, fix the flake, and push a new commit.",
  },
  {
    kind: "fetch-failed",
    pattern:
      /program 'git' failed|does not appear to be a git repository|unable to download|Could not resolve host|Couldn't connect|Failed to connect|HTTP error \d+|Repository not found|not found in the repository|cannot find Git revision|Couldn't resolve|could not read Username|Authentication failed|fetching Git repository .* failed|fatal: /,
    hint:
      "Nix could not fetch the flake source: check the URL, that the ref/revision exists, network access to the host, " +
      "and for private repositories the credentials Secret.",
  },
];

const evalHint =
  "Evaluating the flake failed (before anything was built). Check the flake at this revision with " +
  "`nix eval <flake>#<attribute>.drvPath --show-trace` and fix the error shown.";

export interface ClassifiedNixFailure {
  kind: NixErrorKind;
  hint: string;
  /** The message the kind was derived from (first matching, or the first error). */
  reason: string;
  /** The derivation named in a "builder for '...drv' failed" message. */
  drvPath?: string;
}

/**
 * Decides the kind of a failure from Nix's error messages and the plain stderr lines (git writes
 * those). `evaluationOnly` says no realisation started: an unrecognised error is then an
 * evaluation error.
 */
export function classifyNixFailure(errors: readonly string[], textLines: readonly string[], evaluationOnly: boolean): ClassifiedNixFailure {
  const candidates = [...errors, ...textLines].map(redactUrlCredentials);
  for (const rule of rules) {
    const hit = candidates.find((c) => rule.pattern.test(c));
    if (hit !== undefined) {
      // Report Nix's own error (the first one), but with the kind's reason when it is more telling.
      const reason = rule.kind === "fetch-failed" || errors.length === 0 ? joinReason(errors, textLines, hit) : firstMatchOrFirst(errors, rule.pattern);
      const out: ClassifiedNixFailure = { kind: rule.kind, hint: rule.hint, reason };
      const drv = /builder for '([^']+\.drv)' failed/.exec(candidates.join("\n"))?.[1] ?? /build of '([^']+\.drv)' failed/.exec(candidates.join("\n"))?.[1];
      if (drv !== undefined) out.drvPath = drv;
      return out;
    }
  }
  const reason = errors.length > 0 ? redactUrlCredentials(errors[0]!) : lastMeaningful(textLines);
  if (evaluationOnly && errors.length > 0) return { kind: "eval-failed", hint: evalHint, reason };
  return {
    kind: "unknown",
    hint: "See the Nix output above; rerun the same command locally at the same revision to investigate.",
    reason,
  };
}

function firstMatchOrFirst(errors: readonly string[], pattern: RegExp): string {
  const hit = errors.find((e) => pattern.test(e)) ?? errors[0] ?? "";
  return redactUrlCredentials(hit);
}

/** For fetch errors git's own lines ("fatal: repository ... not found") say more than Nix's. */
function joinReason(errors: readonly string[], textLines: readonly string[], hit: string): string {
  const gitLines = textLines.filter((l) => /^(fatal|error|remote):/i.test(l.trim())).map(redactUrlCredentials);
  const nix = errors.length > 0 ? redactUrlCredentials(errors[errors.length - 1]!) : hit;
  const lines = [...new Set([...gitLines.slice(-3), nix])];
  return lines.join("\n");
}

function lastMeaningful(lines: readonly string[]): string {
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i]!.trim();
    if (l !== "") return redactUrlCredentials(l);
  }
  return "Nix exited without an error message";
}
