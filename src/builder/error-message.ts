// One clear message per failure of build / build-step / push-step: what failed, why (Nix's own
// reason, the registry's error code and text), and what to do. Known secrets are scrubbed from
// the text as a last line of defence (the errors themselves never carry credentials).
import { ImageFormatError } from "../image/formats/format-error.ts";
import { NixError } from "../nix/nix-error.ts";
import { RegistryError, redactSecrets } from "../oci/registry-error.ts";

export class FlakeRefDeniedError extends Error {
  override name = "FlakeRefDeniedError";
  readonly code: string;
  constructor(code: string, reason: string) {
    super(`flake ref denied by policy (${code}): ${reason}`);
    this.code = code;
  }
}

const tlsCodes = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS|EPROTO|WRONG_VERSION_NUMBER/;

function causeCode(e: unknown): string | undefined {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    const code = (c as NodeJS.ErrnoException).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** What to do about a registry failure, from its status or network error. */
function registryHint(e: RegistryError): string {
  const code = causeCode(e) ?? "";
  if (e.status === 401) return "Check the credentials for this registry in the auth file (--auth-file / the push Secret).";
  if (e.status === 403 || e.hasCode("DENIED")) return "The credentials are valid but may not push to this repository: check the registry's permissions.";
  if (e.status === 404 && e.hasCode("NAME_UNKNOWN")) return "The repository does not exist and the registry does not create it on push: create it first.";
  if (e.status === 429) return "The registry is rate limiting: try again later.";
  if (e.status !== undefined && e.status >= 500) return "The registry failed: check its logs, then try again.";
  if (tlsCodes.test(code) || /certificate|TLS|SSL/i.test(e.message)) {
    return "TLS failed: give the registry's CA with --ca-file (or the operator config's registries[].caFile); use --plain-http only for a plain-HTTP registry.";
  }
  if (e.status === undefined) return "Is the registry running and reachable from here? (--plain-http for a plain-HTTP registry.)";
  return "";
}

/** The full message for a terminal (may span lines: Nix build failures carry their last log lines). */
export function errorMessage(e: unknown, secrets: readonly string[] = []): string {
  let text: string;
  if (e instanceof NixError || e instanceof ImageFormatError || e instanceof FlakeRefDeniedError) {
    text = e.message;
  } else if (e instanceof RegistryError) {
    const hint = registryHint(e);
    const message = e.message.replace(/\s+/g, " ").trim();
    text = hint ? `${message}. What to do: ${hint}` : message;
  } else if (e instanceof Error) {
    text = e.message;
  } else {
    text = String(e);
  }
  return redactSecrets(text, secrets);
}

/** A short form for a termination message (<= ~2 KB): one paragraph, plus a failed build's last log lines. */
export function shortErrorMessage(e: unknown, secrets: readonly string[] = []): string {
  if (e instanceof NixError) {
    const tail = e.kind === "build-failed" ? e.logTail.slice(-8) : [];
    const text = [e.summary(1500), ...tail.map((l) => `> ${l.slice(0, 200)}`)].join("\n");
    return redactSecrets(text, secrets);
  }
  const text = errorMessage(e, secrets).replace(/\s*\n\s*/g, " ");
  return text.length > 2000 ? `${text.slice(0, 1999)}…` : text;
}
