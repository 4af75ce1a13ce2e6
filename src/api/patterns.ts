/**
 * Regexes shared by the zod schema and the CRD. They must stay inside the common subset of
 * JavaScript RegExp and RE2 (Kubernetes evaluates `pattern` and CEL `matches()` with RE2):
 * no lookaround, no backreferences.
 */

const hostLabel = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?";
const port = ":[0-9]{1,5}";
/** A registry host must be explicit: has a dot, a port, or is localhost (no implicit Docker Hub). */
const registryHost = `(localhost(${port})?|${hostLabel}(\\.${hostLabel})+(${port})?|${hostLabel}${port})`;
const pathComponent = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";

/** `registry.example.com[:port]/path/name`, no tag, no digest. */
export const repositoryPattern = `^${registryHost}(/${pathComponent})+$`;
export const tagPattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$";
/** Kubernetes object names referenced by this API (Secrets): RFC 1123 subdomain. */
export const dnsSubdomainPattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
export const envNamePattern = "^[A-Za-z_][A-Za-z0-9_]*$";
/** A port 1-65535 (the pattern bounds it: 70000 would be stored and then fail in the image config). */
export const exposedPortPattern = "^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(/(tcp|udp|sctp))?$";
export const timeZonePattern = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$";
/**
 * A binary cache: https only (plain http would let anyone on the path feed the store), a host name
 * and port without credentials, and a path of URL characters (RFC 3986), no query or fragment. The
 * build step checks the same (src/nix/nix-command.ts): a URL with a user, a NUL, a quote or a bidi
 * override used to pass here and fail there.
 */
export const substituterPattern = "^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$";
/** `name:base64-ed25519-key`, as in nix.conf's trusted-public-keys; the name never starts with `-` (it is an argv value). */
export const trustedPublicKeyPattern = "^[A-Za-z0-9][A-Za-z0-9._-]*:[A-Za-z0-9+/]{43}=$";
export const quantityPattern = "^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";
export const labelKeyPattern = "^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$";
