// GitOps with Argo CD's own application controller and repo server (built from Argo CD's Go
// modules) and the operator on one API server: the Application of
// examples/gitops/clusters/production/argocd/shop.yaml syncs examples/gitops/apps/shop from the
// test git server while the operator rolls digests out. Proven: every Git change lands, the image
// changes only when the operator rolls out (writes counted per field manager from managedFields),
// and the Application stays Synced after each rollout (managedFieldsManagers), over at least ten
// of its comparisons (every 5 s).
// Its own opt-in tier (Argo CD is a second large build): `scripts/setup.sh --with-argocd && npm run
// test:argocd`; missing, it fails with what to run. `npm test` does not include this file.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { KubernetesObject, V1Deployment } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fieldManager } from "../../src/controller/names.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { startArgoCd, type ArgoCd } from "../support/argocd.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { kubeClients, kubectl, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount, finishBuildPod, installTestCrd, pushResult, startTestOperator, waitForJob } from "../support/operator-harness.ts";
import { imageOwners, recordDeployment, watchObject } from "../support/workload-writes.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const example = (path: string) => readFile(join(repoRoot, "examples/gitops", path), "utf8");
const argoManager = "argocd-controller";
const placeholder = "registry.example.com/acme/shop-web:main";

type Application = KubernetesObject & { status?: { sync?: { status?: string; revision?: string }; reconciledAt?: string } };

describe("GitOps with Argo CD's controllers", () => {
  let argo: ArgoCd;
  beforeAll(async () => {
    await installTestCrd();
    argo = await startArgoCd(testbed());
  }, 240_000);
  afterAll(() => argo?.stop());

  it("Argo CD applies every Git change, the operator alone sets the image, the Application stays Synced", async () => {
    const bed = testbed();
    const namespace = await testNamespace("gitops-argocd");
    const repository = `${bed.registry.plain.host}/shop/web`;
    await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    await kubeClients().core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: "registry-push", annotations: { "niximage.io/allowed-images": "shop-web" } },
        type: "kubernetes.io/dockerconfigjson",
        data: { ".dockerconfigjson": Buffer.from('{"auths":{}}').toString("base64") },
      },
    });
    const flake = await createGitRepo(minimalFlake({ attribute: "web", marker: "argocd" }), { prefix: "argocd-flake" });
    const files: Record<string, string> = {};
    for (const f of ["kustomization.yaml", "niximage.yaml", "deployment.yaml"]) files[`apps/shop/${f}`] = await example(`apps/shop/${f}`);
    const gitops = await createGitRepo(files, { prefix: "argocd-repo", branch: "main" });

    // The example's Application; only what differs on the test bed changes: namespaces, the Git
    // URL, the destination (the registered test bed), and a kustomize patch that points the
    // NixImage at the test bed's flake and registry.
    const application = parseAllDocuments(await example("clusters/production/argocd/shop.yaml"))[0]!.toJS() as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    application.metadata.namespace = argo.namespace;
    delete application.metadata.finalizers;
    application.spec.source.repoURL = gitops.httpUrl;
    application.spec.destination = { server: argo.server, namespace };
    application.spec.source.kustomize = {
      patches: [
        {
          target: { kind: "NixImage", name: "shop-web" },
          patch: JSON.stringify([
            { op: "replace", path: "/spec/flake", value: `${flake.flakeUrl}?ref=${flake.branch}` },
            { op: "replace", path: "/spec/image/repository", value: repository },
          ]),
        },
      ],
    };

    const deployment = await recordDeployment(namespace);
    const syncHistory: string[] = [];
    let comparisons = 0;
    const appPath = `/apis/argoproj.io/v1alpha1/namespaces/${argo.namespace}/applications`;
    let lastReconciled: string | undefined;
    const stopAppWatch = await watchObject<Application>(appPath, "shop", (a) => {
      const sync = a.status?.sync?.status ?? "-";
      if (syncHistory.at(-1) !== sync) syncHistory.push(sync);
      if (a.status?.reconciledAt && a.status.reconciledAt !== lastReconciled) {
        lastReconciled = a.status.reconciledAt;
        comparisons++;
      }
    });
    await kubeRequestJson(kubeClients().kc, "POST", appPath, { body: application });

    const digest = (c: string) => `${repository}@sha256:${c.repeat(64)}`;
    const path = `/apis/apps/v1/namespaces/${namespace}/deployments/shop-web`;
    const read = () => kubeRequestJson<V1Deployment>(kubeClients().kc, "GET", path);
    const readApp = () => kubeRequestJson<Application>(kubeClients().kc, "GET", `${appPath}/shop`);
    const image = async () => (await read()).spec!.template.spec!.containers[0]!.image;
    const release = async (n: number, c: string) => {
      await waitForJob(namespace, `shop-web-build-${n}`);
      await finishBuildPod(namespace, `shop-web-build-${n}`, { succeed: { message: pushResult(repository, c.repeat(64), flake.rev) } });
      await waitFor(`Deployment runs digest ${c}`, async () => (await image()) === digest(c));
      // Argo CD compares again and still finds the app in sync: the new image is ignored.
      const after = comparisons;
      await waitFor(`Application compared after rollout ${c}`, () => comparisons >= after + 2, { timeoutMs: 60_000 });
      expect((await readApp()).status?.sync?.status).toBe("Synced");
    };
    const edit = async (from: string, to: string, check: (d: V1Deployment) => boolean) => {
      const text = (await readFile(join(gitops.workDir, "apps/shop/deployment.yaml"), "utf8")).replace(from, to);
      const rev = await gitops.commit({ "apps/shop/deployment.yaml": text });
      await waitFor(`Argo CD synced ${rev}`, async () => (await readApp()).status?.sync?.revision === rev, { timeoutMs: 90_000 });
      return waitFor(`Deployment has Git change ${rev}`, async () => {
        const d = await read();
        return check(d) ? d : undefined;
      });
    };

    await waitFor("Argo CD created the Deployment", () => read().catch(() => undefined), { timeoutMs: 120_000 });
    expect(await image()).toBe(placeholder);
    await release(1, "a");
    let d = await edit("replicas: 3", "replicas: 2", (x) => x.spec!.replicas === 2);
    expect(d.spec!.template.spec!.containers[0]!.image).toBe(digest("a"));
    await kubectl(["annotate", "-n", namespace, "--overwrite", "niximage/shop-web", "niximage.io/rebuild=1"]);
    await release(2, "b");
    d = await edit(
      "          ports:\n",
      "          env:\n            - { name: LOG_LEVEL, value: debug }\n          ports:\n",
      (x) => x.spec!.template.spec!.containers[0]!.env?.[0]?.value === "debug",
    );
    expect(d.spec!.template.spec!.containers[0]!.image).toBe(digest("b"));
    const first = comparisons;
    await waitFor("ten comparisons in all, three after the last change", () => comparisons >= Math.max(10, first + 3), { timeoutMs: 120_000 });
    deployment.stop();
    stopAppWatch();

    const { changes } = deployment;
    const imageChanges = changes.filter((c, i) => i > 0 && c.image !== changes[i - 1]!.image);
    const writes: Record<string, number> = {};
    for (const c of changes.slice(1)) for (const m of c.managers) writes[m] = (writes[m] ?? 0) + 1;
    console.log(
      `gitops-argocd: ${JSON.stringify({ created: changes[0]!.managers, writes, imageChangesBy: imageChanges.map((c) => c.managers), comparisons, syncHistory })}`,
    );
    expect(changes[0]!.managers).toEqual([argoManager]);
    expect(imageChanges.map((c) => [c.image, c.managers])).toEqual([
      [digest("a"), [fieldManager]],
      [digest("b"), [fieldManager]],
    ]);
    expect(writes[fieldManager]).toBe(2);
    expect(writes[argoManager]).toBe(2);
    expect(Object.keys(writes).filter((m) => ![argoManager, fieldManager, "kube-controller-manager"].includes(m))).toEqual([]);
    // RespectIgnoreDifferences sends the live image back: Argo CD co-owns it with the same value.
    expect(imageOwners(await read(), "web")).toContain(fieldManager);
    // OutOfSync only for what Git changed (the first sync and the two commits), never for a rollout.
    expect(syncHistory.filter((s) => s === "OutOfSync")).toHaveLength(3);
    expect((await readApp()).status?.sync?.status).toBe("Synced");
  }, 420_000);
});
