// The SBOM, provenance and signature documents, pure: Nix hash notations, store path names, the
// CycloneDX SBOM against the official CycloneDX 1.6 JSON schema (not only our own types), the SLSA
// statement's shape, DSSE's PAE and signatures checked with the public key, the cosign key formats.
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { describe, expect, it } from "vitest";
import { cosignTag, dsseEnvelope, pae, signBytes, simpleSigningPayload } from "../../src/attest/cosign-signature.ts";
import { buildCycloneDxSbom, nixPurl, parseStorePathName } from "../../src/attest/cyclonedx-sbom.ts";
import { nixBase32ToBytes, sha256Hex } from "../../src/attest/nix-hash.ts";
import { loadSigningKey } from "../../src/attest/signing-key.ts";
import { buildSlsaProvenance } from "../../src/attest/slsa-provenance.ts";
import type { BuildResult } from "../../src/builder/step-files.ts";
import type { ClosurePath } from "../../src/image/path-info.ts";
import { lockedInputs, lockedUrl } from "../../src/nix/flake-lock-inputs.ts";
import { cycloneDxValidator } from "../support/cyclonedx-schema.ts";

// sha256("hello") in Nix's three notations (from `nix hash to-base32 / to-sri`).
const HELLO_HEX = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
const HELLO_B32 = "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";
const HELLO_SRI = "sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

const p = (hash: string, name: string) => `/nix/store/${hash.repeat(32).slice(0, 32)}-${name}`;
const closure: ClosurePath[] = [
  {
    path: p("a", "hello-2.12.1"),
    narSize: 100,
    narHash: `sha256:${HELLO_B32}`,
    references: [p("a", "hello-2.12.1"), p("b", "glibc-2.39-52"), p("c", "hello-share")],
  },
  { path: p("b", "glibc-2.39-52"), narSize: 200, narHash: HELLO_SRI, references: [p("b", "glibc-2.39-52")] },
  { path: p("c", "hello-share"), narSize: 3, narHash: HELLO_SRI, references: [] },
];

describe("Nix hashes and store path names", () => {
  it("decodes base32, SRI and hex NAR hashes to the same hex", () => {
    expect(sha256Hex(`sha256:${HELLO_B32}`)).toBe(HELLO_HEX);
    expect(sha256Hex(HELLO_SRI)).toBe(HELLO_HEX);
    expect(sha256Hex(`sha256:${HELLO_HEX}`)).toBe(HELLO_HEX);
    expect(sha256Hex("md5:abc")).toBeUndefined();
    expect(nixBase32ToBytes("e".repeat(52), 32)).toBeUndefined();
  });

  it.each([
    ["hello-2.12.1", "hello", "2.12.1"],
    ["glibc-2.39-52", "glibc", "2.39-52"],
    ["python3.12-requests-2.31.0", "python3.12-requests", "2.31.0"],
    ["hello-share", "hello-share", undefined],
    ["source", "source", undefined],
    ["openssl-3.0.13-bin", "openssl", "3.0.13-bin"],
  ])("%s -> name %s, version %s", (name, pname, version) => {
    expect(parseStorePathName(p("a", name))).toEqual({ hash: "a".repeat(32), name: pname, ...(version ? { version } : {}) });
  });

  it("percent-encodes purl parts", () => {
    expect(nixPurl("gtk+3", "3.24")).toBe("pkg:nix/gtk%2B3@3.24");
    expect(nixPurl("source", undefined)).toBe("pkg:nix/source");
  });
});

describe("CycloneDX SBOM", () => {
  const sbom = buildCycloneDxSbom({
    closure,
    root: closure[0]!.path,
    meta: { licenses: ["MIT", "GPL-3.0-or-later"], homepage: "https://example.org/hello", description: "says hello" },
    tool: { name: "nix-image-operator", version: "0.1.0" },
    image: "r.example/acme/hello@sha256:" + "0".repeat(64),
  });

  it("validates against the official CycloneDX 1.6 JSON schema", () => {
    expect(cycloneDxValidator()(sbom)).toEqual([]);
  });

  it("the schema check is real: a broken document fails it", () => {
    expect(cycloneDxValidator()({ ...sbom, components: [{ type: "nonsense" }] }).length).toBeGreaterThan(0);
  });

  it("one component per store path, NAR hash as SHA-256, references as dependencies, meta on the root", () => {
    const doc = sbom as {
      metadata: { component: Record<string, unknown> };
      components: Record<string, unknown>[];
      dependencies: { ref: string; dependsOn: string[] }[];
    };
    expect([doc.metadata.component["bom-ref"], ...doc.components.map((c) => c["bom-ref"])].sort()).toEqual(closure.map((c) => c.path).sort());
    expect(doc.metadata.component).toMatchObject({
      name: "hello",
      version: "2.12.1",
      purl: "pkg:nix/hello@2.12.1",
      hashes: [{ alg: "SHA-256", content: HELLO_HEX }],
      licenses: [{ license: { name: "MIT" } }, { license: { name: "GPL-3.0-or-later" } }],
      externalReferences: [{ type: "website", url: "https://example.org/hello" }],
    });
    // Self-references are dropped.
    expect(doc.dependencies.find((d) => d.ref === closure[0]!.path)!.dependsOn).toEqual([p("b", "glibc-2.39-52"), p("c", "hello-share")]);
    expect(doc.dependencies.find((d) => d.ref === closure[1]!.path)!.dependsOn).toEqual([]);
  });

  it("is deterministic: the same closure gives the same bytes", () => {
    const again = buildCycloneDxSbom({ closure: [...closure].reverse(), root: closure[0]!.path, tool: { name: "nix-image-operator", version: "0.1.0" } });
    const once = buildCycloneDxSbom({ closure, root: closure[0]!.path, tool: { name: "nix-image-operator", version: "0.1.0" } });
    expect(JSON.stringify(again)).toBe(JSON.stringify(once));
  });
});

describe("flake.lock inputs and SLSA provenance", () => {
  const locks = {
    nodes: {
      root: { inputs: { nixpkgs: "nixpkgs", dep: "dep" } },
      nixpkgs: { locked: { type: "github", owner: "NixOS", repo: "nixpkgs", rev: "a".repeat(40), narHash: HELLO_SRI, lastModified: 1 }, original: {} },
      dep: { locked: { type: "git", url: "https://git.example/dep", rev: "b".repeat(40), narHash: HELLO_SRI }, original: {} },
      unlocked: { original: { type: "indirect", id: "x" } },
    },
    root: "root",
    version: 7,
  };

  it("lists every locked input with a flake URL and its NAR hash", () => {
    expect(lockedInputs(locks)).toEqual([
      { name: "dep", url: `git+https://git.example/dep?rev=${"b".repeat(40)}`, narHash: HELLO_SRI, rev: "b".repeat(40) },
      { name: "nixpkgs", url: `github:NixOS/nixpkgs/${"a".repeat(40)}`, narHash: HELLO_SRI, rev: "a".repeat(40) },
    ]);
    expect(lockedUrl({ type: "tarball", url: "https://x/y.tar.gz" })).toBe("https://x/y.tar.gz");
    expect(lockedInputs(undefined)).toEqual([]);
  });

  it("builds an in-toto v1 statement with the SLSA v1 predicate", () => {
    const build = {
      version: 1,
      flake: "github:acme/shop",
      attribute: "web",
      revision: { url: `github:acme/shop/${"c".repeat(40)}`, rev: "c".repeat(40), lastModified: 1, narHash: HELLO_SRI },
      system: "x86_64-linux",
      outPaths: [closure[0]!.path],
      outPath: closure[0]!.path,
      format: "package",
      formatReason: "",
      closure: { paths: 3, narSize: 303 },
      extraAttributes: [],
      gcRoots: [],
      seconds: {},
      startedAt: "2026-01-01T00:00:00.000Z",
      nixVersion: "2.8.0",
      inputs: lockedInputs(locks),
    } satisfies BuildResult;
    const s = buildSlsaProvenance({
      subject: { name: "r.example/acme/web", digest: `sha256:${HELLO_HEX}` },
      build,
      operatorVersion: "0.1.0",
      builderImage: `r.example/nix-builder@sha256:${HELLO_HEX}`,
      job: "web-build-7",
      finishedOn: "2026-01-01T00:01:00.000Z",
    });
    expect(s).toMatchObject({
      _type: "https://in-toto.io/Statement/v1",
      subject: [{ name: "r.example/acme/web", digest: { sha256: HELLO_HEX } }],
      predicateType: "https://slsa.dev/provenance/v1",
      predicate: {
        buildDefinition: {
          externalParameters: { flake: "github:acme/shop", attribute: "web" },
          internalParameters: { system: "x86_64-linux" },
          resolvedDependencies: [
            { uri: build.revision.url, name: "source", digest: { gitCommit: "c".repeat(40), narHash: HELLO_HEX }, annotations: { narHash: HELLO_SRI } },
            { name: "dep", digest: { gitCommit: "b".repeat(40), narHash: HELLO_HEX } },
            { name: "nixpkgs", uri: `github:NixOS/nixpkgs/${"a".repeat(40)}` },
          ],
        },
        runDetails: {
          builder: {
            version: { "nix-image-operator": "0.1.0", nix: "2.8.0" },
            builderDependencies: [{ uri: `r.example/nix-builder@sha256:${HELLO_HEX}`, digest: { sha256: HELLO_HEX } }],
          },
          metadata: { invocationId: "web-build-7", startedOn: "2026-01-01T00:00:00.000Z", finishedOn: "2026-01-01T00:01:00.000Z" },
        },
      },
    });
  });
});

describe("signatures", () => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });

  it("names cosign's tags", () => {
    expect(cosignTag(`sha256:${HELLO_HEX}`, "sig")).toBe(`sha256-${HELLO_HEX}.sig`);
  });

  it("signs the simple-signing payload (ECDSA-SHA256, DER)", () => {
    const payload = simpleSigningPayload("r.example/acme/web", `sha256:${HELLO_HEX}`);
    expect(JSON.parse(payload.toString())).toEqual({
      critical: {
        identity: { "docker-reference": "r.example/acme/web" },
        image: { "docker-manifest-digest": `sha256:${HELLO_HEX}` },
        type: "cosign container image signature",
      },
      optional: null,
    });
    expect(verify("sha256", payload, publicKey, Buffer.from(signBytes(privateKey, payload), "base64"))).toBe(true);
  });

  it("DSSE: signs PAE(payloadType, payload)", () => {
    expect(pae("t", Buffer.from("ab")).toString()).toBe("DSSEv1 1 t 2 ab");
    const env = JSON.parse(dsseEnvelope(privateKey, { _type: "x" }).toString()) as { payloadType: string; payload: string; signatures: { sig: string }[] };
    expect(env.payloadType).toBe("application/vnd.in-toto+json");
    const payload = Buffer.from(env.payload, "base64");
    expect(JSON.parse(payload.toString())).toEqual({ _type: "x" });
    expect(verify("sha256", pae(env.payloadType, payload), publicKey, Buffer.from(env.signatures[0]!.sig, "base64"))).toBe(true);
  });

  it("loads PKCS#8 and SEC1 P-256 keys; refuses other curves and non-PEM without echoing them", async () => {
    const pkcs8 = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    const sec1 = privateKey.export({ format: "pem", type: "sec1" }).toString();
    const want = publicKey.export({ format: "pem", type: "spki" }).toString();
    expect((await loadSigningKey(pkcs8)).publicKeyPem).toBe(want);
    expect((await loadSigningKey(sec1)).publicKeyPem).toBe(want);
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    await expect(loadSigningKey(p384)).rejects.toThrow(/P-256/);
    await expect(loadSigningKey("secret-material")).rejects.toThrow(/^the signing key is not PEM$/);
    expect(createPublicKey(want).asymmetricKeyType).toBe("ec");
  });
});
