// The generated CRD on a real kube-apiserver: it is accepted (structural schema, CEL cost
// within budget), valid NixImages are stored with their defaults, and every invalid sample is
// rejected naming the same field `nix-image-operator validate` names. The corpus
// (test/support/niximage-corpus.ts: the invalid files and a table of field -> bad values, and every
// documented NixImage plus boundary variations) goes through server-side dry run.
//
// The API server is shared with the other integration files, which create NixImages under the
// test bed's widened CRD (installTestCrd). This file changes the CRD's policy, so it installs the
// CRD under a group of its own: its changes never decide what another file may create.
import { readFile } from "node:fs/promises";
import https from "node:https";
import { join } from "node:path";
import { ApiextensionsV1Api, type KubernetesObject } from "@kubernetes/client-node";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { createNamespace, deleteNamespace, kubeClients, kubectl, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { nixImageCrd } from "../../src/api/crd.ts";
import { defaultFlakeRefPolicy, FlakeRefPolicySchema } from "../../src/flake/flake-ref-policy.ts";
import { validateManifests } from "../../src/validate/validate-manifests.ts";
import { invalidCorpus, validCorpus, type CorpusCase } from "../support/niximage-corpus.ts";

const root = join(import.meta.dirname, "../..");
const fixtures = join(root, "test/fixtures/niximages");
const invalid = invalidCorpus();
const valid = validCorpus();
const testGroup = "crdtest.niximage.io";
const testApiVersion = `${testGroup}/v1alpha1`;
// A kind and resource names of its own too: `kubectl get niximage` elsewhere must not resolve to it.
const testKind = "NixImageCrdTest";

/** The same CRD under this file's own group and short name (see the top of the file). */
function isolated(crd: object): object {
  const copy = structuredClone(crd) as { metadata: { name: string }; spec: { group: string; names: Record<string, unknown> } };
  copy.metadata.name = `niximagecrdtests.${testGroup}`;
  copy.spec.group = testGroup;
  copy.spec.names = { kind: testKind, listKind: `${testKind}List`, plural: "niximagecrdtests", singular: "niximagecrdtest", shortNames: ["nimgcrdtest"] };
  return copy;
}

/**
 * Creates a NixImage with `fieldValidation=Strict` (as kubectl does; client-node's generic
 * create cannot ask for it) and returns the API server's message when it is rejected.
 */
async function createRejection(
  object: KubernetesObject,
  namespace: string,
  options: { dryRun?: boolean; agent?: https.Agent } = {},
): Promise<string | undefined> {
  const bed = testbed();
  const body = JSON.stringify({ ...object, apiVersion: testApiVersion, kind: testKind, metadata: { ...object.metadata, namespace } });
  const query = `fieldValidation=Strict${options.dryRun ? "&dryRun=All" : ""}`;
  const url = new URL(`/apis/${testApiVersion}/namespaces/${namespace}/niximagecrdtests?${query}`, bed.kube.server);
  const ca = await readFile(bed.kube.caFile);
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const request = https.request(
      url,
      { method: "POST", ca, agent: options.agent, headers: { authorization: `Bearer ${bed.kube.token}`, "content-type": "application/json" } },
      (response) => {
        let text = "";
        response
          .setEncoding("utf8")
          .on("data", (chunk: string) => (text += chunk))
          .on("end", () => resolve({ status: response.statusCode ?? 0, text }));
      },
    );
    request.on("error", reject).end(body);
  });
  if (status === 201) return undefined;
  if (status !== 422 && status !== 400) throw new Error(`unexpected ${status} creating ${object.metadata?.name}: ${text}`);
  return (JSON.parse(text) as { message: string }).message;
}

async function establish(crd: object) {
  const api = kubeClients().kc.makeApiClient(ApiextensionsV1Api);
  await kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], { input: JSON.stringify(isolated(crd)) });
  await waitFor("NixImage CRD Established", async () => {
    const current = await api.readCustomResourceDefinition({ name: `niximagecrdtests.${testGroup}` });
    return current.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") ?? false;
  });
}

/** The API server's answer to each object, by server-side dry run, a few requests at a time. */
async function dryRunAll(objects: KubernetesObject[], namespace: string): Promise<(string | undefined)[]> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 8 });
  try {
    return await Promise.all(objects.map((object) => createRejection(object, namespace, { dryRun: true, agent })));
  } finally {
    agent.destroy();
  }
}

const committedCrd = async () => parseYaml(await readFile(join(root, "crds/niximages.niximage.io.yaml"), "utf8")) as object;

describe("NixImage CRD on the API server", () => {
  beforeAll(async () => {
    // The committed file is what users apply; applying it proves the schema is structural and
    // every CEL rule fits the cost budget.
    await establish(await committedCrd());
  });

  it("accepts the valid samples and stores the defaults", async () => {
    const namespace = await testNamespace("crd-valid");
    const docs = parseAllDocuments(await readFile(join(fixtures, "valid.yaml"), "utf8")).map((d) => d.toJS() as KubernetesObject);
    const nixImages = docs.filter((d) => d.kind === "NixImage");
    expect(nixImages.length).toBeGreaterThanOrEqual(5);
    for (const doc of nixImages) {
      expect(await createRejection(doc, namespace), doc.metadata?.name).toBeUndefined();
    }
    const stored = (await kubeClients().objects.read({
      apiVersion: testApiVersion,
      kind: testKind,
      metadata: { name: "ssh", namespace },
    })) as KubernetesObject & {
      spec: Record<string, unknown>;
    };
    expect(stored.spec).toMatchObject({
      attribute: "default",
      format: "auto",
      suspend: false,
      image: { maxLayers: 100, compression: "none" },
      rollout: { policy: "Automatic", rollbackOnFailure: false },
      build: { timeout: "1h", allowImportFromDerivation: false },
      historyLimit: { successful: 5, failed: 5 },
    });
    // The short name and printer columns work as documented.
    const table = await kubectl(["get", "nimgcrdtest", "-n", namespace]);
    expect(table.split("\n")[0]).toMatch(/NAME\s+READY\s+LATEST IMAGE\s+REVISION\s+AGE/);
  });

  describe(`the spec corpus: ${invalid.length} invalid and ${valid.length} valid NixImages (server-side dry run)`, () => {
    let rejections: (string | undefined)[] = [];
    let validAnswers: (string | undefined)[] = [];
    beforeAll(async () => {
      const namespace = await createNamespace("crd-corpus");
      // Every case is named "bad" or "v<n>": a dry run stores nothing, so names may repeat.
      rejections = await dryRunAll(
        invalid.map((c) => c.object as KubernetesObject),
        namespace,
      );
      validAnswers = await dryRunAll(
        valid.map((c) => c.object as KubernetesObject),
        namespace,
      );
      await deleteNamespace(namespace);
    });

    it(`has at least 300 distinct invalid specs`, () => {
      expect(new Set(invalid.map((c) => c.name)).size).toBe(invalid.length);
      expect(new Set(invalid.map((c) => JSON.stringify(c.object))).size).toBe(invalid.length);
      expect(invalid.length).toBeGreaterThanOrEqual(300);
    });

    it.each(invalid.map((c, i) => [c.name, c, i] as [string, CorpusCase, number]))("rejects %s", (_name, corpusCase, i) => {
      const message = rejections[i];
      // The API server names list items (spec.image.tags[1]) and unknown fields
      // ("unknown field \"spec.flakeRef\"") its own way; both contain the path.
      expect(message, "accepted by the API server").toBeDefined();
      expect(message).toContain(corpusCase.field);
      const cli = validateManifests(JSON.stringify(corpusCase.object), defaultFlakeRefPolicy).problems.map((p) => p.field);
      expect(
        cli.some((f) => f === corpusCase.field || f.startsWith(`${corpusCase.field}.`) || f.startsWith(`${corpusCase.field}[`)),
        cli.join(", "),
      ).toBe(true);
    });

    it.each(valid.map((c, i) => [c.name, i] as [string, number]))("accepts %s", (_name, i) => {
      expect(validAnswers[i]).toBeUndefined();
    });
  });

  it("a CRD generated from a widened policy accepts what the default one rejects", async () => {
    const namespace = await testNamespace("crd-policy");
    const sample: KubernetesObject = {
      apiVersion: "niximage.io/v1alpha1",
      kind: "NixImage",
      metadata: { name: "local-git" },
      spec: { flake: "git+http://127.0.0.1:8080/shop.git?ref=main", image: { repository: "127.0.0.1:5000/shop" } },
    } as KubernetesObject;
    expect(await createRejection(sample, namespace)).toMatch(/spec\.flake/);
    // The scheme alone does not open loopback (SSRF); the address range must be allowed as well.
    const schemeOnly = FlakeRefPolicySchema.parse({ allowedSchemes: [...defaultFlakeRefPolicy.allowedSchemes, "git+http"] });
    const widened = FlakeRefPolicySchema.parse({
      allowedSchemes: [...defaultFlakeRefPolicy.allowedSchemes, "git+http"],
      allowedAddressRanges: ["127.0.0.0/8"],
    });
    // Established is already True from the previous version: the API server serves a new
    // schema a moment later, so each step waits until the new rule answers.
    const rejectionOf = (pattern: RegExp) =>
      waitFor(`a rejection matching ${pattern}`, async () => pattern.test((await createRejection(sample, namespace)) ?? "the NixImage was created"));
    try {
      await establish(nixImageCrd({ flakeRefPolicy: schemeOnly }));
      await rejectionOf(/spec\.flake.*SSRF.*allowedAddressRanges/);
      await establish(nixImageCrd({ flakeRefPolicy: widened }));
      await waitFor("the widened CRD to accept the loopback git+http flake", async () => (await createRejection(sample, namespace)) === undefined);
      // Only that range: the cloud metadata address stays refused.
      const metadata = { ...sample, metadata: { name: "metadata" }, spec: { ...(sample as { spec: object }).spec, flake: "git+http://169.254.169.254/x" } };
      expect(await createRejection(metadata as KubernetesObject, namespace)).toMatch(/spec\.flake/);
    } finally {
      await establish(await committedCrd());
    }
  });
});
