import { readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { validateManifests } from "../../src/validate/validate-manifests.ts";
import { defaultFlakeRefPolicy, FlakeRefPolicySchema } from "../../src/flake/flake-ref-policy.ts";
import { nixImageSchema } from "../../src/api/niximage.ts";

const fixtures = join(import.meta.dirname, "../fixtures/niximages");

describe("validateManifests", () => {
  it("accepts the valid samples and ignores other kinds", async () => {
    const report = validateManifests(await readFile(join(fixtures, "valid.yaml"), "utf8"), defaultFlakeRefPolicy);
    expect(report.problems).toEqual([]);
    expect(report.nixImages).toBe(5);
  });

  it("applies the API defaults", async () => {
    const parsed = nixImageSchema.parse({
      apiVersion: "niximage.io/v1alpha1",
      kind: "NixImage",
      metadata: { name: "web" },
      spec: { flake: "github:acme/shop", image: { repository: "registry.example.com/acme/web" } },
    });
    expect(parsed.spec).toMatchObject({
      attribute: "default",
      format: "auto",
      suspend: false,
      image: { maxLayers: 100, compression: "none" },
      rollout: { policy: "Automatic", rollbackOnFailure: false },
      build: { timeout: "1h", allowImportFromDerivation: false },
      historyLimit: { successful: 5, failed: 5 },
    });
  });

  const invalid = readdirSync(join(fixtures, "invalid"));
  it.each(invalid)("rejects invalid/%s naming the field in its header", async (file) => {
    const text = await readFile(join(fixtures, "invalid", file), "utf8");
    const field = /^# field: (\S+)/.exec(text)![1];
    const report = validateManifests(text, defaultFlakeRefPolicy);
    expect(report.problems.map((p) => p.field)).toEqual([field]);
    expect(report.problems[0]!.message.length).toBeGreaterThan(10);
  });

  it("numbers documents and reports YAML syntax errors", () => {
    const text =
      "kind: ConfigMap\n---\napiVersion: niximage.io/v1alpha1\nkind: NixImage\nmetadata: {name: a}\nspec: {flake: 'nixpkgs', image: {repository: r.example.com/a}}\n---\nkey: [unclosed\n";
    const report = validateManifests(text, defaultFlakeRefPolicy);
    expect(report.problems[0]).toMatchObject({ document: 2, line: 3, field: "spec.flake" });
    expect(report.problems[1]).toMatchObject({ document: 3, field: "(yaml)" });
  });

  it("follows a widened policy", () => {
    const text =
      "apiVersion: niximage.io/v1alpha1\nkind: NixImage\nmetadata: {name: a}\nspec: {flake: 'git+http://127.0.0.1:8080/shop.git', image: {repository: localhost:5000/shop}}\n";
    expect(validateManifests(text, defaultFlakeRefPolicy).problems).toHaveLength(1);
    const schemeOnly = FlakeRefPolicySchema.parse({ allowedSchemes: [...defaultFlakeRefPolicy.allowedSchemes, "git+http"] });
    expect(validateManifests(text, schemeOnly).problems).toMatchObject([
      { field: "spec.flake", message: expect.stringMatching(/loopback.*allowedAddressRanges/) },
    ]);
    const widened = FlakeRefPolicySchema.parse({
      allowedSchemes: [...defaultFlakeRefPolicy.allowedSchemes, "git+http"],
      allowedAddressRanges: ["127.0.0.0/8"],
    });
    expect(validateManifests(text, widened).problems).toEqual([]);
  });

  it("never echoes a value that might be a secret", () => {
    const text =
      "apiVersion: niximage.io/v1alpha1\nkind: NixImage\nmetadata: {name: a}\nspec: {flake: 'github:a/b', image: {repository: r.example.com/a, pushSecretRef: {name: 'hunter2-SECRET'}}}\n";
    const report = validateManifests(text, defaultFlakeRefPolicy);
    expect(report.problems).toHaveLength(1);
    expect(JSON.stringify(report)).not.toContain("hunter2");
  });
});
