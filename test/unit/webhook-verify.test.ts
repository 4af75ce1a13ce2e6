import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { identifyDelivery, parsePushEvent, PushPayloadError } from "../../src/webhook/push-event.ts";
import { followedSource, imagesForPush, refMatches, repositoryKey } from "../../src/webhook/repository-match.ts";
import { hmacSha256Hex, verifyGitHubSignature, verifyGitLabToken, verifyHmacHex } from "../../src/webhook/webhook-signature.ts";

const fixture = (name: string) => JSON.parse(readFileSync(new URL(`../fixtures/webhooks/${name}`, import.meta.url), "utf8")) as unknown;
const secret = "It's a Secret to Everybody";
const body = Buffer.from("Hello, World!");

describe("webhook signatures", () => {
  it("GitHub: sha256=<hex HMAC> over the raw body (GitHub's documented test vector)", () => {
    const expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    expect(hmacSha256Hex(secret, body)).toBe(expected);
    expect(verifyGitHubSignature(secret, body, `sha256=${expected}`)).toBe(true);
    expect(verifyGitHubSignature(secret, body, `sha256=${expected.toUpperCase()}`)).toBe(true);
    expect(verifyGitHubSignature(secret, Buffer.from("Hello, World?"), `sha256=${expected}`)).toBe(false);
    expect(verifyGitHubSignature("another secret", body, `sha256=${expected}`)).toBe(false);
    expect(verifyGitHubSignature(secret, body, expected)).toBe(false); // no prefix
    expect(verifyGitHubSignature(secret, body, `sha1=${expected}`)).toBe(false);
    expect(verifyGitHubSignature(secret, body, `sha256=${expected.slice(2)}`)).toBe(false); // short
    expect(verifyGitHubSignature(secret, body, undefined)).toBe(false);
  });

  it("Gitea/Forgejo: bare hex HMAC", () => {
    const sig = hmacSha256Hex(secret, body);
    expect(verifyHmacHex(secret, body, sig)).toBe(true);
    expect(verifyHmacHex(secret, body, `sha256=${sig}`)).toBe(false);
    expect(verifyHmacHex(secret, body, "zz".repeat(32))).toBe(false);
    expect(verifyHmacHex(secret, body, "")).toBe(false);
  });

  it("GitLab: the token itself, compared in constant time whatever its length", () => {
    expect(verifyGitLabToken(secret, secret)).toBe(true);
    expect(verifyGitLabToken(secret, `${secret} `)).toBe(false);
    expect(verifyGitLabToken(secret, "x")).toBe(false);
    expect(verifyGitLabToken(secret, "")).toBe(false);
    expect(verifyGitLabToken(secret, undefined)).toBe(false);
  });
});

describe("webhook deliveries", () => {
  it("tell the forge by its event header; Gitea and Forgejo send GitHub's headers too", () => {
    expect(identifyDelivery({ "x-github-event": "push", "x-github-delivery": "d1", "x-hub-signature-256": "sha256=ab" })).toEqual({
      forge: "github",
      event: "push",
      isPush: true,
      id: "d1",
      proof: "sha256=ab",
    });
    const gitea = { "x-github-event": "push", "x-github-delivery": "g1", "x-gitea-event": "push", "x-gitea-delivery": "g1", "x-gitea-signature": "ab" };
    expect(identifyDelivery(gitea)).toMatchObject({ forge: "gitea", isPush: true, id: "g1", proof: "ab" });
    expect(identifyDelivery({ ...gitea, "x-forgejo-event": "push", "x-forgejo-delivery": "f1", "x-forgejo-signature": "cd" })).toMatchObject({
      forge: "forgejo",
      id: "f1",
      proof: "cd",
    });
    expect(identifyDelivery({ "x-gitlab-event": "Push Hook", "x-gitlab-event-uuid": "u1", "x-gitlab-token": "t" })).toMatchObject({
      forge: "gitlab",
      isPush: true,
      id: "u1",
      proof: "t",
    });
    expect(identifyDelivery({ "x-gitlab-event": "Tag Push Hook" })?.isPush).toBe(true);
    expect(identifyDelivery({ "x-gitlab-event": "Merge Request Hook" })?.isPush).toBe(false);
    expect(identifyDelivery({ "x-github-event": "ping" })).toEqual({ forge: "github", event: "ping", isPush: false });
    expect(identifyDelivery({ "content-type": "application/json" })).toBeUndefined();
  });

  it("read the documented push payloads of GitHub, GitLab and Gitea", () => {
    expect(parsePushEvent("github", fixture("github-push.json"))).toEqual({
      ref: "refs/heads/main",
      before: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
      after: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      deleted: false,
      name: "acme/shop",
      urls: ["https://github.com/acme/shop.git", "https://github.com/acme/shop", "git@github.com:acme/shop.git", "git://github.com/acme/shop.git"],
      defaultBranch: "main",
    });
    expect(parsePushEvent("gitlab", fixture("gitlab-push.json"))).toMatchObject({
      ref: "refs/heads/main",
      name: "acme/platform/payments",
      urls: expect.arrayContaining(["https://gitlab.example.com/acme/platform/payments.git", "git@gitlab.example.com:acme/platform/payments.git"]),
      defaultBranch: "main",
      deleted: false,
    });
    expect(parsePushEvent("gitea", fixture("gitea-push.json"))).toMatchObject({ ref: "refs/heads/develop", name: "acme/tools", defaultBranch: "develop" });
    const deleted = { ...(fixture("github-push.json") as object), deleted: true, after: "0".repeat(40) };
    expect(parsePushEvent("github", deleted).deleted).toBe(true);
  });

  it("refuse bodies that are not push payloads, without echoing them", () => {
    expect(() => parsePushEvent("github", { zen: "Keep it logically awesome." })).toThrow(PushPayloadError);
    expect(() => parsePushEvent("github", { zen: "Keep it logically awesome." })).toThrow(/ref, repository missing or invalid/);
    expect(() => parsePushEvent("gitlab", fixture("github-push.json"))).toThrow(/project/);
    try {
      parsePushEvent("github", { ref: "secret-looking-value", repository: 1 });
    } catch (error) {
      expect((error as Error).message).not.toContain("secret-looking-value");
    }
  });
});

describe("repository matching", () => {
  it("knows a repository by host/path whatever the URL form", () => {
    const key = "github.com/acme/shop";
    for (const url of [
      "https://github.com/acme/shop.git",
      "https://github.com/acme/shop",
      "https://github.com/Acme/Shop/",
      "https://user:pw@github.com/acme/shop.git",
      "https://github.com:443/acme/shop.git",
      "git@github.com:acme/shop.git",
      "ssh://git@github.com/acme/shop.git",
      "ssh://git@github.com:22/acme/shop",
      "git://github.com/acme/shop.git",
    ]) {
      expect(repositoryKey(url), url).toBe(key);
    }
    expect(repositoryKey("http://127.0.0.1:8080/repos/app.git")).toBe("127.0.0.1:8080/repos/app");
    expect(repositoryKey("ssh://git@git.example.org:2222/acme/tools.git")).toBe("git.example.org/acme/tools");
    expect(repositoryKey("not a url")).toBeUndefined();
    expect(repositoryKey("https://github.com/")).toBeUndefined();
    expect(repositoryKey("file:///src/repo")).toBeUndefined();
  });

  it("maps flake refs to the repository and branch they follow", () => {
    expect(followedSource("github:acme/shop")).toEqual({ repository: "github.com/acme/shop" });
    expect(followedSource("github:acme/shop/release")).toEqual({ repository: "github.com/acme/shop", ref: "release" });
    expect(followedSource("github:acme/shop?ref=release")).toEqual({ repository: "github.com/acme/shop", ref: "release" });
    expect(followedSource("gitlab:acme%2Fplatform/payments")).toEqual({ repository: "gitlab.com/acme/platform/payments" });
    expect(followedSource("gitlab:acme%2Fplatform/payments?host=gitlab.example.com")).toEqual({ repository: "gitlab.example.com/acme/platform/payments" });
    expect(followedSource("git+https://git.example.org/acme/tools.git?ref=develop")).toEqual({ repository: "git.example.org/acme/tools", ref: "develop" });
    expect(followedSource("git+ssh://git@git.example.org/acme/tools")).toEqual({ repository: "git.example.org/acme/tools" });
    expect(followedSource("git+http://127.0.0.1:8080/app.git?ref=refs/heads/main")).toEqual({ repository: "127.0.0.1:8080/app", ref: "refs/heads/main" });
    // Pinned refs and archives never move.
    expect(followedSource(`github:acme/shop/${"a".repeat(40)}`)).toBeUndefined();
    expect(followedSource("https://example.org/src.tar.gz")).toBeUndefined();
    expect(followedSource("not a flake ref ::")).toBeUndefined();
  });

  it("matches refs: short names as branches or tags, full names exactly, none as the default branch", () => {
    expect(refMatches("main", "refs/heads/main", "main")).toBe(true);
    expect(refMatches("v1.0", "refs/tags/v1.0", "main")).toBe(true);
    expect(refMatches("main", "refs/heads/main2", "main")).toBe(false);
    expect(refMatches("refs/heads/main", "refs/heads/main", undefined)).toBe(true);
    expect(refMatches("refs/heads/main", "refs/tags/main", undefined)).toBe(false);
    expect(refMatches(undefined, "refs/heads/main", "main")).toBe(true);
    expect(refMatches(undefined, "refs/heads/feature", "main")).toBe(false);
    expect(refMatches("HEAD", "refs/heads/trunk", "trunk")).toBe(true);
    expect(refMatches(undefined, "refs/heads/anything", undefined)).toBe(true);
    expect(refMatches(undefined, "refs/tags/v1", undefined)).toBe(false);
  });

  it("picks the NixImages that follow the pushed repository and branch", () => {
    const images = [
      { key: "shop/web", flake: "github:acme/shop" },
      { key: "shop/api", flake: "git+https://github.com/acme/shop.git?ref=main" },
      { key: "shop/release", flake: "github:acme/shop/release" },
      { key: "other/site", flake: "github:acme/site" },
      { key: "shop/pinned", flake: `github:acme/shop/${"b".repeat(40)}` },
    ];
    const push = parsePushEvent("github", fixture("github-push.json"));
    expect(imagesForPush(push, images)).toEqual(["shop/web", "shop/api"]);
    expect(imagesForPush({ ...push, ref: "refs/heads/release" }, images)).toEqual(["shop/release"]);
    expect(imagesForPush({ ...push, deleted: true }, images)).toEqual([]);
    const gitea = parsePushEvent("gitea", fixture("gitea-push.json"));
    expect(imagesForPush(gitea, [{ key: "t/tools", flake: "git+ssh://git@git.example.org/acme/tools" }])).toEqual(["t/tools"]);
    expect(imagesForPush(gitea, [{ key: "t/tools", flake: "git+https://git.example.org/acme/tools?ref=main" }])).toEqual([]);
    const gitlab = parsePushEvent("gitlab", fixture("gitlab-push.json"));
    expect(imagesForPush(gitlab, [{ key: "p/pay", flake: "gitlab:acme%2Fplatform/payments?host=gitlab.example.com" }])).toEqual(["p/pay"]);
  });
});
