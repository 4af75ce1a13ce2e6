// Exact no-op through the real controller (issue 14): after a pushed build, a new commit's build
// is told the output of the image in use; when the push step answers "unchanged", the NixImage
// keeps its image, moves latestRevision on, says BuildUnchanged once, and patches no workload.
import type { KubernetesObject } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import type { PushStepResult } from "../../src/builder/step-results.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { apply, kubeClients, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount, finishBuildPod, installTestCrd, OffsetClock, startTestOperator, waitForJob } from "../support/operator-harness.ts";

type NixImageObject = KubernetesObject & { status?: NixImageStatus };
const repository = "127.0.0.1:5000/shop/web";
const digest = `sha256:${"d".repeat(64)}`;
const outPath = "/nix/store/wkjazii3rjn901h0xl6rdlwhiblf3pc2-testbed-default";

// Typed with the push step's result schema, so this fixture cannot drift from the real writer.
const result = (rev: string, extra: Partial<PushStepResult> = {}) =>
  JSON.stringify({
    image: `${repository}@${digest}`,
    digest,
    tags: [`rev-${rev.slice(0, 12)}-wkjazii3`],
    format: "package",
    revision: { url: `git+http://127.0.0.1/x.git?rev=${rev}`, rev, lastModified: 1704067200, narHash: "sha256-AAAA" },
    layers: { total: 1, pushed: 1, skipped: 0, mounted: 0 },
    bytesPushed: 1234,
    seconds: { build: 1.5, push: 0.5 },
    outPath,
    ...extra,
  } satisfies PushStepResult);

describe("exact no-op in the controller", () => {
  beforeAll(installTestCrd);

  it("an unchanged output: same image, new latestRevision, one BuildUnchanged, no BuildSucceeded, no workload patch", async () => {
    const namespace = await testNamespace("unchanged");
    const repo = await createGitRepo({ ...minimalFlake({ marker: "same" }), "README.md": "# app\n" }, { prefix: "unchanged" });
    const clock = new OffsetClock();
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace], clock });
    await apply({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace, annotations: { "niximage.io/from": "web" } },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: "web" } },
        template: { metadata: { labels: { app: "web" } }, spec: { containers: [{ name: "web", image: "busybox:1" }] } },
      },
    });
    await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
      body: {
        apiVersion: "niximage.io/v1alpha1",
        kind: "NixImage",
        metadata: { name: "web" },
        spec: { flake: repo.flakeUrl, triggers: { interval: "1m" }, image: { repository } },
      },
    });
    const read = () => kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`);
    const events = async (reason: string) => (await kubeClients().core.listNamespacedEvent({ namespace })).items.filter((e) => e.reason === reason);

    const job1 = await waitForJob(namespace, "web-build-1");
    expect(job1.spec!.template.spec!.containers[0]!.args).not.toContain("--unchanged-out-path");
    await finishBuildPod(namespace, "web-build-1", { succeed: { message: result(repo.rev) } });
    await waitFor("rolled out", async () => {
      const d = await kubeClients().apps.readNamespacedDeployment({ namespace, name: "web" });
      return d.spec?.template.spec?.containers[0]?.image === `${repository}@${digest}` ? d : undefined;
    });
    const first = await waitFor("latestOutput recorded", async () => {
      const image = await read();
      return image.status?.latestOutput ? image : undefined;
    });
    expect(first.status?.latestOutput).toMatchObject({ outPath, digest });
    await operator.idle();
    const patchesBefore = operator.writes.get("PATCH deployment") ?? 0;
    expect(patchesBefore).toBe(1);

    // A README-only commit: the build is told the output of the image in use.
    const second = await repo.commit({ "README.md": "# app\n\nMore words.\n" });
    clock.advance(70_000);
    operator.enqueueAll();
    const job2 = await waitForJob(namespace, "web-build-2");
    const args = job2.spec!.template.spec!.containers[0]!.args!;
    expect(args.slice(args.indexOf("--unchanged-out-path"), args.indexOf("--unchanged-out-path") + 4)).toEqual([
      "--unchanged-out-path",
      outPath,
      "--unchanged-digest",
      digest,
    ]);
    await finishBuildPod(namespace, "web-build-2", {
      succeed: { message: result(second, { unchanged: true, tags: [], layers: { total: 0, pushed: 0, skipped: 0, mounted: 0 }, bytesPushed: 0 }) },
    });
    const done = await waitFor("Unchanged recorded", async () => {
      const image = await read();
      return image.status?.lastBuild?.result === "Unchanged" ? image : undefined;
    });
    expect(done.status?.latestImage).toBe(`${repository}@${digest}`);
    expect(done.status?.latestRevision?.rev).toBe(second);
    expect(done.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    await operator.idle();
    expect(await events("BuildUnchanged")).toHaveLength(1);
    expect(await events("BuildSucceeded")).toHaveLength(1); // build 1 only
    expect(operator.writes.get("PATCH deployment") ?? 0).toBe(patchesBefore);
    expect(operator.metrics.render()).toMatch(/^niximage_builds_total\{kind="Image",result="Unchanged"\} 1$/m);

    // Nothing more to do: the same commit is not built again.
    clock.advance(70_000);
    operator.enqueueAll();
    await operator.idle();
    expect((await kubeClients().batch.listNamespacedJob({ namespace })).items.map((j) => j.metadata?.name).sort()).toEqual(["web-build-1", "web-build-2"]);
  });
});
