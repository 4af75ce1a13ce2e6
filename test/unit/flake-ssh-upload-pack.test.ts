import { createHmac, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { checkHostKey } from "../../src/flake/ssh-upload-pack.ts";

const key = randomBytes(51);
const other = randomBytes(51);
const b64 = (b: Buffer) => b.toString("base64");
const hashed = (name: string) => {
  const salt = randomBytes(20);
  return `|1|${b64(salt)}|${createHmac("sha1", salt).update(name).digest("base64")}`;
};

describe("checkHostKey (known_hosts)", () => {
  it.each([
    { what: "plain host, port 22", known: `git.example.com ssh-ed25519 ${b64(key)}`, host: "git.example.com", port: 22, want: "ok" },
    { what: "[host]:port for another port", known: `[git.example.com]:2222 ssh-ed25519 ${b64(key)}`, host: "git.example.com", port: 2222, want: "ok" },
    {
      what: "a port-22 entry does not cover another port",
      known: `git.example.com ssh-ed25519 ${b64(key)}`,
      host: "git.example.com",
      port: 2222,
      want: "unknown",
    },
    { what: "comma list and wildcard", known: `a.example,*.example.com ssh-ed25519 ${b64(key)}`, host: "git.example.com", port: 22, want: "ok" },
    { what: "a negated pattern excludes", known: `*.example.com,!git.example.com ssh-ed25519 ${b64(key)}`, host: "git.example.com", port: 22, want: "unknown" },
    { what: "hashed entry", known: `${hashed("[10.0.0.1]:2222")} ssh-ed25519 ${b64(key)}`, host: "10.0.0.1", port: 2222, want: "ok" },
    { what: "another key for the host", known: `git.example.com ssh-ed25519 ${b64(other)}`, host: "git.example.com", port: 22, want: "mismatch" },
    {
      what: "one of several keys (rotation)",
      known: `git.example.com ssh-ed25519 ${b64(other)}\ngit.example.com ssh-rsa ${b64(key)}`,
      host: "git.example.com",
      port: 22,
      want: "ok",
    },
    {
      what: "@revoked wins",
      known: `git.example.com ssh-ed25519 ${b64(key)}\n@revoked * ssh-ed25519 ${b64(key)}`,
      host: "git.example.com",
      port: 22,
      want: "revoked",
    },
    { what: "@cert-authority lines are not host keys", known: `@cert-authority * ssh-ed25519 ${b64(key)}`, host: "git.example.com", port: 22, want: "unknown" },
    {
      what: "comments and blank lines",
      known: `# team keys\n\n  git.example.com ssh-ed25519 ${b64(key)} comment here`,
      host: "git.example.com",
      port: 22,
      want: "ok",
    },
  ])("$what", ({ known, host, port, want }) => {
    expect(checkHostKey(known, host, port, key)).toBe(want);
  });
});
