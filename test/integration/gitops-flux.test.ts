// GitOps with Flux's own controllers (source-controller and kustomize-controller, built from Flux's
// Go modules) and the operator on one API server: Flux applies examples/gitops/apps/shop from a
// Git repository on the test git server, as examples/gitops/clusters/production/flux/shop.yaml
// says, while the operator rolls digests out into the same Deployment. Proven here:
//   - every Git change (replicas, env, labels) lands, and the image changes only when the
//     operator rolls out (each change of the Deployment is attributed to its field manager from
//     managedFields, recorded by a watch over the whole run);
//   - the Kustomization never goes Ready=False over at least ten Flux reconciles (interval 3 s);
//   - Flux's health check sees the NixImage's own readiness (kstatus): a reconcile during a build
//     waits for it, a failed build (Stalled) fails the Kustomization, the next good build heals it.
//     (The very first reconcile may pass before the operator has written any status: kstatus
//     takes a resource without conditions as Current.)
// The recipe: the Deployment keeps a placeholder image in Git (the API server requires one), and
// the Kustomization's `spec.ignore` names that field. The counter-example without it: Flux puts
// the placeholder back after each rollout, and the two take turns.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { KubernetesObject, V1Deployment } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fieldManager } from "../../src/controller/names.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { startFlux, type Flux } from "../support/flux.ts";
import { createGitRepo, minimalFlake, type GitRepo } from "../support/git-fixtures.ts";
import { apply, kubeClients, kubectl, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount, finishBuildPod, installTestCrd, pushResult, startTestOperator, waitForJob } from "../support/operator-harness.ts";
import { imageOwners, recordDeployment, watchObject } from "../support/workload-writes.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const example = (path: string) => readFile(join(repoRoot, "examples/gitops", path), "utf8");
const interval = "3s";
const fluxManager = "kustomize-controller";
/** The image of the Deployment in Git (examples/gitops/apps/shop/deployment.yaml). */
const placeholder = "registry.example.com/acme/shop-web:main";

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
type Kustomization = KubernetesObject & { status?: { conditions?: Condition[]; lastAppliedRevision?: string; inventory?: { entries?: { id: string }[] } } };

const condition = (o: { status?: { conditions?: Condition[] } }, type: string) => o.status?.conditions?.find((c) => c.type === type);

/** The test's copy of the Flux objects from examples/gitops/clusters/production/flux/shop.yaml. */
async function fluxObjects(namespace: string, gitops: GitRepo, flake: GitRepo, repository: string) {
  const docs = parseAllDocuments(await example("clusters/production/flux/shop.yaml")).map((d) => d.toJS() as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any
  const source = docs.find((d) => d.kind === "GitRepository")!;
  const kustomization = docs.find((d) => d.kind === "Kustomization")!;
  // Only what differs on the test bed: namespaces, the Git URL, short intervals, and a kustomize
  // patch that points the NixImage at the test bed's flake and registry.
  source.metadata.namespace = namespace;
  source.spec.url = gitops.httpUrl;
  source.spec.interval = interval;
  kustomization.metadata.namespace = namespace;
  kustomization.spec.interval = interval;
  kustomization.spec.targetNamespace = namespace;
  for (const check of kustomization.spec.healthChecks) check.namespace = namespace;
  kustomization.spec.patches = [
    {
      target: { kind: "NixImage", name: "shop-web" },
      patch: JSON.stringify([
        { op: "replace", path: "/spec/flake", value: `${flake.flakeUrl}?ref=${flake.branch}` },
        { op: "replace", path: "/spec/image/repository", value: repository },
      ]),
    },
  ];
  return { source, kustomization };
}

/** Files of the GitOps repository: apps/shop exactly as in examples/gitops. */
async function appFiles(): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const f of ["kustomization.yaml", "niximage.yaml", "deployment.yaml"]) files[`apps/shop/${f}`] = await example(`apps/shop/${f}`);
  return files;
}

describe("GitOps with Flux's controllers", () => {
  let flux: Flux;
  beforeAll(async () => {
    await installTestCrd();
    flux = await startFlux(testbed());
  }, 180_000);
  afterAll(() => flux?.stop());

  async function setUp(prefix: string) {
    const namespace = await testNamespace(prefix);
    const repository = `${testbed().registry.plain.host}/shop/web`;
    const access = await chartServiceAccount();
    await startTestOperator({ access, namespaces: [namespace] });
    // The push Secret the NixImage names is made outside Git (examples/gitops/clusters/production/namespaces.yaml).
    await kubeClients().core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: "registry-push", annotations: { "niximage.io/allowed-images": "shop-web" } },
        type: "kubernetes.io/dockerconfigjson",
        data: { ".dockerconfigjson": Buffer.from('{"auths":{}}').toString("base64") },
      },
    });
    const flake = await createGitRepo(minimalFlake({ attribute: "web", marker: prefix }), { prefix: `${prefix}-flake` });
    const gitops = await createGitRepo(await appFiles(), { prefix: `${prefix}-repo`, branch: "main" });
    const { source, kustomization } = await fluxObjects(namespace, gitops, flake, repository);
    const digest = (c: string) => `${repository}@sha256:${c.repeat(64)}`;
    const release = async (n: number, c: string) => {
      await waitForJob(namespace, `shop-web-build-${n}`);
      await finishBuildPod(namespace, `shop-web-build-${n}`, { succeed: { message: pushResult(repository, c.repeat(64), flake.rev) } });
    };
    const rebuild = (token: string) => kubectl(["annotate", "-n", namespace, "--overwrite", "niximage/shop-web", `niximage.io/rebuild=${token}`]);
    const deploymentPath = `/apis/apps/v1/namespaces/${namespace}/deployments/shop-web`;
    const readDeployment = () => kubeRequestJson<V1Deployment>(kubeClients().kc, "GET", deploymentPath);
    const readKustomization = () =>
      kubeRequestJson<Kustomization>(kubeClients().kc, "GET", `/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/${namespace}/kustomizations/shop`);
    return { namespace, gitops, source, kustomization, digest, release, rebuild, readDeployment, readKustomization };
  }

  it("Flux applies every Git change, the operator alone sets the image, the Kustomization stays Ready and health-checks the NixImage", async () => {
    const { namespace, gitops, source, kustomization, digest, release, rebuild, readDeployment, readKustomization } = await setUp("gitops-flux");

    // Everything that happens to the Deployment and the Kustomization, from before Flux starts.
    const deployment = await recordDeployment(namespace);
    const changes = deployment.changes;
    const readyHistory: string[] = [];
    let reconciles = 0;
    const stopKustomizationWatch = await watchObject<Kustomization>(
      `/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/${namespace}/kustomizations`,
      "shop",
      (k) => {
        const ready = condition(k, "Ready");
        const entry = `${ready?.status ?? "-"}/${ready?.reason ?? "-"}`;
        if (readyHistory.at(-1) !== entry) {
          readyHistory.push(entry);
          if (ready?.status === "True") reconciles++;
        }
      },
    );

    await apply(source, { fieldManager: "flux-bootstrap" });
    await apply(kustomization, { fieldManager: "flux-bootstrap" });

    // Flux creates the Deployment (with Git's placeholder image) and the NixImage; the operator starts build 1.
    const created = await waitFor("Flux created the Deployment", () => readDeployment().catch(() => undefined), { timeoutMs: 60_000 });
    expect(created.spec!.template.spec!.containers[0]!.image).toBe(placeholder);
    await waitForJob(namespace, "shop-web-build-1");
    // While the first build runs, Flux's health check sees the NixImage in progress (kstatus).
    const waiting = await waitFor("Kustomization health check waits for the NixImage", async () => {
      const k = await readKustomization();
      const healthy = condition(k, "Healthy");
      return healthy?.status === "Unknown" && /health checks/.test(healthy.message ?? "") ? k : undefined;
    });
    expect(condition(waiting, "Ready")?.status).not.toBe("True");
    await release(1, "a");
    await waitFor("Deployment runs digest a", async () => (await readDeployment()).spec!.template.spec!.containers[0]!.image === digest("a"));
    await waitFor("Kustomization Ready and Healthy", async () => {
      const k = await readKustomization();
      return condition(k, "Ready")?.status === "True" && condition(k, "Healthy")?.status === "True";
    });
    const firstReady = reconciles;

    // Git changes and rollouts, interleaved; each lands, nothing else moves.
    const landed = async (rev: string, check: (d: V1Deployment) => boolean) => {
      await waitFor(`Flux applied ${rev}`, async () => (await readKustomization()).status?.lastAppliedRevision === `main@sha1:${rev}`, { timeoutMs: 60_000 });
      return waitFor(`Deployment has Git change ${rev}`, async () => {
        const d = await readDeployment();
        return check(d) ? d : undefined;
      });
    };
    const deploymentYaml = () => readFile(join(gitops.workDir, "apps/shop/deployment.yaml"), "utf8");
    const edit = async (from: string, to: string) => {
      const text = await deploymentYaml();
      expect(text).toContain(from);
      return gitops.commit({ "apps/shop/deployment.yaml": text.replace(from, to) });
    };

    let d = await landed(await edit("replicas: 3", "replicas: 2"), (x) => x.spec!.replicas === 2);
    expect(d.spec!.template.spec!.containers[0]!.image).toBe(digest("a"));

    await rebuild("1");
    await release(2, "b");
    await waitFor("Deployment runs digest b", async () => (await readDeployment()).spec!.template.spec!.containers[0]!.image === digest("b"));

    d = await landed(
      await edit("          ports:\n", "          env:\n            - { name: LOG_LEVEL, value: debug }\n          ports:\n"),
      (x) => x.spec!.template.spec!.containers[0]!.env?.[0]?.value === "debug",
    );
    expect(d.spec!.template.spec!.containers[0]!.image).toBe(digest("b"));
    d = await landed(
      await edit(
        "  labels: { app.kubernetes.io/name: shop-web }\n  annotations:",
        "  labels: { app.kubernetes.io/name: shop-web, app.kubernetes.io/part-of: shop }\n  annotations:",
      ),
      (x) => x.metadata!.labels?.["app.kubernetes.io/part-of"] === "shop",
    );
    expect(d.spec!.template.spec!.containers[0]!.image).toBe(digest("b"));

    await rebuild("2");
    await release(3, "c");
    await waitFor("Deployment runs digest c", async () => (await readDeployment()).spec!.template.spec!.containers[0]!.image === digest("c"));
    // At least ten Flux reconciles in all, the last three after the last rollout.
    const afterLastRollout = reconciles;
    await waitFor("ten Flux reconciles, three after the last rollout", () => reconciles >= Math.max(firstReady + 10, afterLastRollout + 3), {
      timeoutMs: 120_000,
    });
    deployment.stop();
    stopKustomizationWatch();

    const final = await readDeployment();
    expect(final.spec!.replicas).toBe(2);
    expect(final.spec!.template.spec!.containers[0]!.image).toBe(digest("c"));
    expect(final.spec!.template.spec!.containers[0]!.env).toEqual([{ name: "LOG_LEVEL", value: "debug" }]);
    expect(imageOwners(final, "web")).toEqual([fieldManager]);

    // Every write to the Deployment, by field manager: Flux created it and applied the three Git
    // changes; the operator made the three image changes; nobody else wrote it (kube-controller-
    // manager may set its deployment.kubernetes.io/revision annotation).
    const imageChanges = changes.filter((c, i) => i > 0 && c.image !== changes[i - 1]!.image);
    const writes: Record<string, number> = {};
    for (const c of changes.slice(1)) for (const m of c.managers) writes[m] = (writes[m] ?? 0) + 1;
    const summary = { created: changes[0]!.managers, writes, imageChangesBy: imageChanges.map((c) => c.managers), reconciles, readyHistory };
    console.log(`gitops-flux: ${JSON.stringify(summary)}`);
    expect(changes[0]!.managers).toEqual([fluxManager]);
    expect(imageChanges.map((c) => c.image)).toEqual([digest("a"), digest("b"), digest("c")]);
    for (const c of imageChanges) expect(c.managers).toEqual([fieldManager]);
    expect(writes[fluxManager]).toBe(3);
    expect(writes[fieldManager]).toBe(3);
    expect(Object.keys(writes).filter((m) => ![fluxManager, fieldManager, "kube-controller-manager"].includes(m))).toEqual([]);
    expect(changes.every((c) => c.managers.length === 1)).toBe(true);

    // Once Ready, the Kustomization never went Ready=False (each reconcile shows Unknown/Progressing
    // while it runs). Before the first one, the source's first artifact may not be there yet.
    const sinceReady = readyHistory.slice(readyHistory.indexOf("True/ReconciliationSucceeded"));
    expect(sinceReady.filter((h) => !["Unknown/Progressing", "True/ReconciliationSucceeded"].includes(h))).toEqual([]);
    const k = await readKustomization();
    expect(condition(k, "Ready")?.status).toBe("True");
    expect(k.status?.lastAppliedRevision).toBe(`main@sha1:${gitops.rev}`);
    expect((k.status?.inventory?.entries ?? []).map((e) => e.id).sort()).toEqual(
      [`${namespace}_shop-web_apps_Deployment`, `${namespace}_shop-web_niximage.io_NixImage`, `${namespace}_shop-web__Service`].sort(),
    );

    // The health check is the NixImage's kstatus: a failed build (Stalled=True) fails it, the next
    // good build heals it; the digest on the Deployment stays c meanwhile.
    await rebuild("3");
    await waitForJob(namespace, "shop-web-build-4");
    await finishBuildPod(namespace, "shop-web-build-4", {
      fail: { step: "build", exitCode: 1, message: "error: builder for '/nix/store/00000000000000000000000000000000-web.drv' failed with exit code 1" },
    });
    const failed = await waitFor("Kustomization health check fails with the NixImage", async () => {
      const ready = condition(await readKustomization(), "Ready");
      return ready?.status === "False" ? ready : undefined;
    });
    expect(failed.reason).toBe("HealthCheckFailed");
    expect(failed.message).toContain("NixImage");
    await rebuild("4");
    await release(5, "d");
    await waitFor("Kustomization Ready again", async () => condition(await readKustomization(), "Ready")?.status === "True", { timeoutMs: 60_000 });
    await waitFor("Deployment runs digest d", async () => (await readDeployment()).spec!.template.spec!.containers[0]!.image === digest("d"));
  }, 300_000);

  it("without `spec.ignore`, Flux forces Git's placeholder back after a rollout and Flux and the operator take turns", async () => {
    const { namespace, source, kustomization, digest, release } = await setUp("gitops-fight");
    delete kustomization.spec.ignore;
    const deployment = await recordDeployment(namespace);
    await apply(source, { fieldManager: "flux-bootstrap" });
    await apply(kustomization, { fieldManager: "flux-bootstrap" });
    await release(1, "a");
    // Two rounds of the fight are enough to show it; it goes on at every Flux interval.
    const flips = () => deployment.changes.filter((c, i) => i > 0 && c.image !== deployment.changes[i - 1]!.image);
    await waitFor("Flux and the operator each set the image twice", () => flips().length >= 4, { timeoutMs: 120_000 });
    deployment.stop();
    const rounds = flips()
      .slice(0, 4)
      .map((c) => [c.image, c.managers]);
    console.log(`gitops-flux without spec.ignore: ${JSON.stringify(flips().map((c) => [c.image === digest("a") ? "digest" : c.image, c.managers]))}`);
    expect(rounds).toEqual([
      [digest("a"), [fieldManager]],
      [placeholder, [fluxManager]],
      [digest("a"), [fieldManager]],
      [placeholder, [fluxManager]],
    ]);
  }, 300_000);
});
