import { describe, expect, it } from "vitest";
import {
  credentialsForHost,
  DockerConfigError,
  normaliseRegistryKey,
  parseDockerConfig,
  parseDockerConfigText,
  secretsOf,
} from "../../src/oci/docker-config.ts";

const SECRET = "s3cr3t-P@ss:with:colons";
const b64 = (s: string) => Buffer.from(s).toString("base64");

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DockerConfigError);
    return (e as Error).message;
  }
  throw new Error("did not throw");
}

describe("parseDockerConfig", () => {
  it("reads auth (base64 user:password, password may contain colons)", () => {
    const cfg = parseDockerConfigText(JSON.stringify({ auths: { "reg.example.com": { auth: b64(`bob:${SECRET}`) } } }));
    expect(credentialsForHost(cfg, "reg.example.com")).toEqual({ username: "bob", password: SECRET });
  });

  it("reads username/password, identitytoken and registrytoken", () => {
    const cfg = parseDockerConfig({
      auths: {
        "a.io": { username: "u", password: "p" },
        "b.io": { identitytoken: "refresh-xyz" },
        "c.io:5000": { registrytoken: "bearer-xyz" },
      },
    });
    expect(credentialsForHost(cfg, "a.io")).toEqual({ username: "u", password: "p" });
    expect(credentialsForHost(cfg, "b.io")).toEqual({ identityToken: "refresh-xyz" });
    expect(credentialsForHost(cfg, "c.io:5000")).toEqual({ registryToken: "bearer-xyz" });
    expect(credentialsForHost(cfg, "d.io")).toBeUndefined();
  });

  it("matches URL-shaped keys and Docker Hub aliases, case-insensitively", () => {
    const cfg = parseDockerConfig({
      auths: {
        "https://index.docker.io/v1/": { auth: b64("hub:pw") },
        "http://Reg.Example.com:5000/v2/": { auth: b64("r:pw") },
      },
    });
    expect(credentialsForHost(cfg, "docker.io")?.username).toBe("hub");
    expect(credentialsForHost(cfg, "registry-1.docker.io")?.username).toBe("hub");
    expect(credentialsForHost(cfg, "reg.example.com:5000")?.username).toBe("r");
    expect(credentialsForHost(cfg, "reg.example.com")).toBeUndefined();
  });

  it("prefers an exact host key over a URL-shaped one", () => {
    const cfg = parseDockerConfig({ auths: { "reg.io": { auth: b64("exact:1") }, "https://reg.io": { auth: b64("url:1") } } });
    expect(credentialsForHost(cfg, "reg.io")?.username).toBe("exact");
  });

  it("reads the legacy .dockercfg shape", () => {
    const cfg = parseDockerConfig({ "reg.io": { auth: b64("old:pw"), email: "x@y" } });
    expect(credentialsForHost(cfg, "reg.io")).toEqual({ username: "old", password: "pw" });
  });

  it("treats a config with only credHelpers as having no credentials", () => {
    const cfg = parseDockerConfig({ credHelpers: { "reg.io": "ecr-login" } });
    expect(credentialsForHost(cfg, "reg.io")).toBeUndefined();
  });

  it("gives an entry with empty fields no credentials", () => {
    expect(credentialsForHost(parseDockerConfig({ auths: { "reg.io": { auth: "" } } }), "reg.io")).toBeUndefined();
  });

  it.each([
    ["invalid JSON", `{"auths":{"reg.io":{"auth":"${b64(`bob:${SECRET}`)}"`, /not valid JSON/],
    ["auth not base64", JSON.stringify({ auths: { "reg.io": { auth: `${SECRET}!!` } } }), /auth is not valid base64/],
    ["auth without a colon", JSON.stringify({ auths: { "reg.io": { auth: b64(SECRET.replace(/:/g, "")) } } }), /username:password/],
    ["password without username", JSON.stringify({ auths: { "reg.io": { password: SECRET } } }), /no username/],
    ["password not a string", JSON.stringify({ auths: { "reg.io": { username: "u", password: 123456789 } } }), /password must be a string/],
    ["an entry not an object", JSON.stringify({ auths: { "reg.io": SECRET } }), /must be an object/],
    ["auths not an object", JSON.stringify({ auths: [SECRET] }), /auths must be an object/],
    ["a JSON array", JSON.stringify([SECRET]), /must be a JSON object/],
  ])("rejects %s without echoing any secret", (_what, text, error) => {
    const msg = messageOf(() => parseDockerConfigText(text));
    expect(msg).toMatch(error);
    expect(msg).not.toContain(SECRET);
    expect(msg).not.toContain(b64(`bob:${SECRET}`));
    expect(msg).not.toContain("s3cr3t");
  });
});

describe("normaliseRegistryKey", () => {
  it.each([
    ["https://index.docker.io/v1/", "docker.io"],
    ["registry-1.docker.io", "docker.io"],
    ["HTTP://LOCALHOST:5000", "localhost:5000"],
    ["reg.io/some/path", "reg.io"],
  ])("%s -> %s", (key, host) => expect(normaliseRegistryKey(key)).toBe(host));
});

describe("secretsOf", () => {
  it("lists passwords, tokens and the basic auth encoding", () => {
    expect(secretsOf({ username: "u", password: "pass1", identityToken: "idtok", registryToken: "regtok" })).toEqual([
      "pass1",
      "idtok",
      "regtok",
      b64("u:pass1"),
    ]);
    expect(secretsOf(undefined)).toEqual([]);
  });
});
