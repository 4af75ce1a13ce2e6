import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import { validateManifests } from "../../src/validate/validate-manifests.ts";
import { defaultFlakeRefPolicy, FlakeRefPolicySchema } from "../../src/flake/flake-ref-policy.ts";
import { nixImageSchema } from "../../src/api/niximage.ts";
import { invalidCorpus, validCorpus, type CorpusCase } from "../support/niximage-corpus.ts";

const root = join(import.meta.dirname, "../..");
const invalid = invalidCorpus();
const valid = validCorpus();
/** `validate` names the field itself, or a part of it (a list item, a map key). */
const namesField = (fields: string[], field: string) => fields.some((f) => f === field || f.startsWith(`${field}.`) || f.startsWith(`${field}[`));

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

  it.each(invalid.map((c) => [c.name, c] as [string, CorpusCase]))("rejects %s, naming the field", (_name, corpusCase) => {
    const report = validateManifests(stringify(corpusCase.object, { lineWidth: 0 }), defaultFlakeRefPolicy);
    expect(report.nixImages).toBe(1);
    const fields = report.problems.map((p) => p.field);
    expect(namesField(fields, corpusCase.field), `names ${fields.join(", ") || "nothing"}`).toBe(true);
    for (const problem of report.problems) expect(problem.message.length).toBeGreaterThan(10);
  });

  it.each(valid.map((c) => [c.name, c.object] as [string, unknown]))("accepts %s", (_name, object) => {
    expect(validateManifests(stringify(object, { lineWidth: 0 }), defaultFlakeRefPolicy).problems).toEqual([]);
  });

  it(`the CLI: \`validate --json\` on the whole corpus (${invalid.length} invalid, ${valid.length} valid) names each field and passes the valid file`, async () => {
    const dir = await mkdtemp(join(tmpdir(), "nio-corpus-"));
    try {
      const write = (name: string, objects: unknown[]) => writeFile(join(dir, name), objects.map((o) => stringify(o, { lineWidth: 0 })).join("---\n"));
      await write(
        "invalid.yaml",
        invalid.map((c) => c.object),
      );
      await write(
        "valid.yaml",
        valid.map((c) => c.object),
      );
      const cli = (file: string) =>
        promisify(execFile)(process.execPath, [join(root, "src/cli/main.ts"), "validate", "--json", join(dir, file)], { maxBuffer: 64 << 20 }).then(
          (done) => ({ code: 0, stdout: done.stdout }),
          (failed: { code: number; stdout: string }) => ({ code: failed.code, stdout: failed.stdout }),
        );
      type Report = { nixImages: number; invalid: number; results: { problems: { document: number; field: string }[] }[] };
      const bad = await cli("invalid.yaml");
      const badReport = JSON.parse(bad.stdout) as Report;
      expect(bad.code).toBe(1);
      expect({ nixImages: badReport.nixImages, invalid: badReport.invalid }).toEqual({ nixImages: invalid.length, invalid: invalid.length });
      const unnamed = invalid.filter(
        (c, i) =>
          !namesField(
            badReport.results[0]!.problems.filter((p) => p.document === i + 1).map((p) => p.field),
            c.field,
          ),
      );
      expect(unnamed.map((c) => c.name)).toEqual([]);
      const good = await cli("valid.yaml");
      expect(good.code, good.stdout).toBe(0);
      expect(JSON.parse(good.stdout)).toMatchObject({ nixImages: valid.length, invalid: 0 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);

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
