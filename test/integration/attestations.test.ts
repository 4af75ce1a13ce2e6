// SBOM, provenance and signatures of a pushed image, checked by independent clients: the real
// cosign (built from its Go module by scripts/setup.sh) verifies the image signature and both
// attestations offline against docker-registry 2.8 (no transparency log, plain HTTP); the real
// oras lists the SBOM and provenance as referrers through the tag-schema fallback (the registry
// has no referrers API); the SBOM validates against the official CycloneDX 1.6 schema and its
// components are exactly `nix path-info -r` of the output.
import { generateKeyPairSync } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { PushStepResult } from "../../src/builder/step-results.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import { cycloneDxValidator } from "../support/cyclonedx-schema.ts";
import { supplyChainTool } from "../support/supply-chain-tools.ts";
import { testbed } from "../support/kube.ts";
import { fixtureRepo, lastJson, plainAccess, run, runCli, skopeoInspect, testbedConfig, uniqueRepo } from "../support/builder-fixtures.ts";

const bed = testbed();
const plain = bed.registry.plain;
const cosign = supplyChainTool("cosign");
const oras = supplyChainTool("oras");
// Offline against a plain-HTTP registry: no Rekor entry to check, no TLS.
const cosignOffline = ["--insecure-ignore-tlog=true", "--allow-http-registry=true", "--allow-insecure-registry=true"];
let config = "";
let work = "";
let app: GitRepo;

/** A flake whose package is the hello fixture (an input, so flake.lock has one) with meta: license, homepage. */
function appFlake(helloUrl: string): Record<string, string> {
  return {
    "flake.nix": `{
  inputs.hello.url = "${helloUrl}";
  outputs = { self, hello }: {
    packages.x86_64-linux.default = hello.packages.x86_64-linux.default // {
      meta = { mainProgram = "hello"; license = { spdxId = "MIT"; shortName = "mit"; }; homepage = "https://example.org/hello"; description = "hello with meta"; };
    };
  };
}
`,
  };
}

beforeAll(async () => {
  config = await testbedConfig(bed);
  const hello = await fixtureRepo("hello");
  app = await createGitRepo(appFlake(hello.flakeUrl), { prefix: "attest-app" });
  work = join(bed.tmpDir, "attestations");
  await mkdir(work, { recursive: true });
});

const cosignEnv = () => ({ ...process.env, HOME: work, COSIGN_PASSWORD: "s3cret", COSIGN_YES: "true" });

async function build(repository: string, extra: string[]): Promise<PushStepResult> {
  const r = await runCli(
    bed,
    ["build", `${app.flakeUrl}#default`, "--image", `${plain.host}/${repository}`, "--plain-http", "--config", config, "--json", ...extra],
    {
      env: { COSIGN_PASSWORD: "s3cret" },
    },
  );
  expect(r.code, r.stderr).toBe(0);
  return lastJson<PushStepResult>(r.stdout);
}

async function nixPathInfo(path: string): Promise<{ path: string; narHash: string; references: string[] }[]> {
  const out = await run("nix", ["path-info", "--json", "-r", path], { env: { ...process.env, ...bed.nix.env } });
  const json = JSON.parse(out) as unknown;
  return Array.isArray(json) ? (json as never[]) : Object.entries(json as Record<string, object>).map(([p, v]) => ({ path: p, ...(v as object) }) as never);
}

describe("attestations", () => {
  it("signed with a cosign-generated (encrypted) key: cosign verify and verify-attestation accept the image", async () => {
    // cosign's own key format: scrypt + secretbox, password from COSIGN_PASSWORD.
    await run(cosign, ["generate-key-pair"], { cwd: work, env: cosignEnv() });
    const repository = uniqueRepo("attest");
    const result = await build(repository, ["--sign-key", join(work, "cosign.key")]);
    const ref = `${plain.host}/${repository}@${result.digest}`;
    expect(result.attestations).toEqual({
      sbom: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      provenance: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      signature: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      attestations: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    });

    const pub = join(work, "cosign.pub");
    const verified = JSON.parse(await run(cosign, ["verify", "--key", pub, ...cosignOffline, "--output", "json", ref], { env: cosignEnv() })) as {
      critical: { image: { "docker-manifest-digest": string } };
    }[];
    expect(verified[0]!.critical.image["docker-manifest-digest"]).toBe(result.digest);

    for (const [type, predicate] of [
      ["slsaprovenance1", "https://slsa.dev/provenance/v1"],
      ["cyclonedx", "https://cyclonedx.org/bom"],
    ] as const) {
      const out = await run(cosign, ["verify-attestation", "--key", pub, "--type", type, ...cosignOffline, ref], { env: cosignEnv() });
      const envelopes = out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { payload: string });
      const statements = envelopes.map(
        (e) => JSON.parse(Buffer.from(e.payload, "base64").toString()) as { predicateType: string; subject: { digest: { sha256: string } }[] },
      );
      const mine = statements.find((s) => s.predicateType === predicate);
      expect(mine, type).toBeDefined();
      expect(mine!.subject[0]!.digest.sha256).toBe(result.digest.slice(7));
    }

    // A wrong password fails before the build, with a message that does not echo it.
    const wrong = await runCli(
      bed,
      [
        "build",
        `${app.flakeUrl}#default`,
        "--image",
        `${plain.host}/${repository}`,
        "--plain-http",
        "--config",
        config,
        "--sign-key",
        join(work, "cosign.key"),
      ],
      { env: { COSIGN_PASSWORD: "not-the-password" } },
    );
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("cannot decrypt the signing key: wrong password");
    expect(wrong.stderr).not.toContain("not-the-password");

    // A different key must not verify.
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "pem", type: "spki" }).toString();
    await writeFile(join(work, "other.pub"), other);
    await expect(run(cosign, ["verify", "--key", join(work, "other.pub"), ...cosignOffline, ref], { env: cosignEnv() })).rejects.toThrow();
  });

  it("oras discover lists the SBOM and provenance through the sha256-<hex> fallback tag; the SBOM is valid and equals nix path-info -r", async () => {
    const repository = uniqueRepo("attest");
    // A plain PEM key (openssl's SEC1 form) works too.
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "pem", type: "sec1" }).toString();
    await writeFile(join(work, "plain.key"), key, { mode: 0o600 });
    const result = await build(repository, ["--sign-key", join(work, "plain.key"), "--out", join(work, "out")]);

    const discovered = JSON.parse(
      await run(oras, ["discover", "--plain-http", "--format", "json", `${plain.host}/${repository}@${result.digest}`], {
        env: { ...process.env, HOME: work },
      }),
    ) as { referrers?: { artifactType: string; digest: string }[]; manifests?: { artifactType: string; digest: string }[] };
    const referrers = discovered.referrers ?? discovered.manifests ?? [];
    expect(referrers.map((r) => [r.artifactType, r.digest]).sort()).toEqual(
      [
        ["application/vnd.cyclonedx+json", result.attestations!.sbom],
        ["application/vnd.in-toto+json", result.attestations!.provenance],
      ].sort(),
    );
    // The fallback tag is there, beside the cosign tags; the image tags are unchanged.
    const tags = (await skopeoInspect(`${plain.host}/${repository}@${result.digest}`, plainAccess())).RepoTags as string[];
    const hex = result.digest.slice(7);
    expect(tags.sort()).toEqual([...result.tags, `sha256-${hex}`, `sha256-${hex}.att`, `sha256-${hex}.sig`].sort());

    // The SBOM as stored: fetch the referrer's one layer with oras.
    const sbomDir = join(work, "sbom");
    await run(oras, ["pull", "--plain-http", "-o", sbomDir, `${plain.host}/${repository}@${result.attestations!.sbom}`], {
      env: { ...process.env, HOME: work },
    });
    const sbom = JSON.parse(await readFile(join(sbomDir, "sbom.cdx.json"), "utf8")) as {
      metadata: { component: Record<string, unknown> };
      components: Record<string, unknown>[];
      dependencies: { ref: string; dependsOn: string[] }[];
    };
    expect(cycloneDxValidator()(sbom)).toEqual([]);
    const built = JSON.parse(await readFile(join(work, "out", "result.json"), "utf8")) as { outPath: string };
    const info = await nixPathInfo(built.outPath);
    const all = [sbom.metadata.component, ...sbom.components];
    expect(all.map((c) => c["bom-ref"]).sort()).toEqual(info.map((p) => p.path).sort());
    expect(sbom.metadata.component).toMatchObject({
      name: "hello",
      version: "1.0",
      purl: "pkg:nix/hello@1.0",
      licenses: [{ license: { name: "MIT" } }],
      externalReferences: [{ type: "website", url: "https://example.org/hello" }],
    });
    for (const p of info) {
      const dep = sbom.dependencies.find((d) => d.ref === p.path)!;
      expect(dep.dependsOn.sort(), p.path).toEqual(p.references.filter((r) => r !== p.path).sort());
    }
  });

  it("provenance names the locked source, every flake.lock input with its NAR hash, the Nix version and the Job", async () => {
    const repository = uniqueRepo("attest");
    const result = await build(repository, ["--no-sbom", "--job", "web-build-3", "--builder-image", `${plain.host}/nix-builder@sha256:${"1".repeat(64)}`]);
    expect(result.attestations).toEqual({ provenance: expect.stringMatching(/^sha256:/) });
    const dir = join(work, "provenance");
    await run(oras, ["pull", "--plain-http", "-o", dir, `${plain.host}/${repository}@${result.attestations!.provenance}`], {
      env: { ...process.env, HOME: work },
    });
    const statement = JSON.parse(await readFile(join(dir, "provenance.intoto.json"), "utf8")) as { predicate: Record<string, Record<string, unknown>> };
    expect(statement).toMatchObject({
      predicateType: "https://slsa.dev/provenance/v1",
      subject: [{ name: `${plain.host}/${repository}`, digest: { sha256: result.digest.slice(7) } }],
      predicate: {
        buildDefinition: {
          externalParameters: { flake: app.flakeUrl, attribute: "default" },
          internalParameters: { system: bed.nix.system },
          resolvedDependencies: [
            { uri: result.revision.url, name: "source", digest: { gitCommit: app.rev } },
            {
              name: "hello",
              uri: expect.stringContaining("rev="),
              digest: { gitCommit: expect.stringMatching(/^[0-9a-f]{40}$/), narHash: expect.stringMatching(/^[0-9a-f]{64}$/) },
            },
          ],
        },
        runDetails: {
          builder: { version: { nix: bed.nix.version }, builderDependencies: [{ digest: { sha256: "1".repeat(64) } }] },
          metadata: { invocationId: "web-build-3", startedOn: expect.any(String), finishedOn: expect.any(String) },
        },
      },
    });
  });

  it("on the TLS registry with basic auth: referrers through the fallback tag and a signature cosign verifies with the same credentials", async () => {
    const tls = bed.registry.tls;
    const repository = uniqueRepo("attest-tls");
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" });
    await writeFile(join(work, "tls.key"), key.privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
    await writeFile(join(work, "tls.pub"), key.publicKey.export({ format: "pem", type: "spki" }));
    const r = await runCli(bed, [
      "build",
      `${app.flakeUrl}#default`,
      "--image",
      `${tls.host}/${repository}`,
      "--auth-file",
      tls.authFile,
      "--ca-file",
      tls.caFile,
      "--config",
      config,
      "--json",
      "--sign-key",
      join(work, "tls.key"),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const result = lastJson<PushStepResult>(r.stdout);
    const ref = `${tls.host}/${repository}@${result.digest}`;
    const discovered = JSON.parse(
      await run(oras, ["discover", "--ca-file", tls.caFile, "--registry-config", tls.authFile, "--format", "json", ref], {
        env: { ...process.env, HOME: work },
      }),
    ) as { referrers?: { digest: string }[] };
    expect((discovered.referrers ?? []).map((d) => d.digest).sort()).toEqual([result.attestations!.sbom, result.attestations!.provenance].sort());
    // cosign reads credentials from $DOCKER_CONFIG/config.json and trusts the CA via SSL_CERT_FILE.
    const dockerConfig = join(work, "docker-config");
    await mkdir(dockerConfig, { recursive: true });
    await writeFile(join(dockerConfig, "config.json"), await readFile(tls.authFile));
    const env = { ...cosignEnv(), DOCKER_CONFIG: dockerConfig, SSL_CERT_FILE: tls.caFile };
    await run(cosign, ["verify", "--key", join(work, "tls.pub"), "--insecure-ignore-tlog=true", ref], { env });
    await run(cosign, ["verify-attestation", "--key", join(work, "tls.pub"), "--type", "slsaprovenance1", "--insecure-ignore-tlog=true", ref], { env });
  });

  it("a rebuild of the same digest keeps one SBOM and one provenance of ours and another tool's referrer", async () => {
    const repository = uniqueRepo("attest");
    const first = await build(repository, []);
    const ref = `${plain.host}/${repository}@${first.digest}`;
    // Another tool attaches its own referrer (oras attach writes to the same fallback tag).
    await writeFile(join(work, "scan.json"), '{"scanner":"x"}');
    await run(oras, ["attach", "--plain-http", "--artifact-type", "application/vnd.example.scan+json", ref, "scan.json"], {
      cwd: work,
      env: { ...process.env, HOME: work },
    });
    const second = await build(repository, []);
    expect(second.digest).toBe(first.digest);
    expect(second.attestations!.sbom).toBe(first.attestations!.sbom);
    const discovered = JSON.parse(await run(oras, ["discover", "--plain-http", "--format", "json", ref], { env: { ...process.env, HOME: work } })) as {
      referrers?: { artifactType: string }[];
      manifests?: { artifactType: string }[];
    };
    const types = (discovered.referrers ?? discovered.manifests ?? []).map((r) => r.artifactType).sort();
    expect(types).toEqual(["application/vnd.cyclonedx+json", "application/vnd.example.scan+json", "application/vnd.in-toto+json"]);
  });
});
