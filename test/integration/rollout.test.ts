// Rollout of a pushed digest to the workloads that opted in, on the real API server with
// kube-controller-manager (Deployments get ReplicaSets) and the chart's RBAC.
import type { KubernetesObject, V1Deployment, V1PodTemplateSpec } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { apply, kubeClients, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount, finishBuildPod, installTestCrd, OffsetClock, pushResult, startTestOperator, waitForJob } from "../support/operator-harness.ts";

type NixImageObject = KubernetesObject & { status?: NixImageStatus };
const repository = "127.0.0.1:5000/shop/web";
const digest = (c: string) => `${repository}@sha256:${c.repeat(64)}`;

async function nixImage(namespace: string, name: string, flake: string, extra: Record<string, unknown> = {}) {
  await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
    body: { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", metadata: { name }, spec: { flake, image: { repository }, ...extra } },
  });
}
const readImage = (namespace: string, name: string) =>
  kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/${name}`);

/** Runs build n of `name` to success with digest filled from character `c`. */
async function succeed(namespace: string, name: string, n: number, c: string, rev: string) {
  await waitForJob(namespace, `${name}-build-${n}`);
  await finishBuildPod(namespace, `${name}-build-${n}`, { succeed: { message: pushResult(repository, c.repeat(64), rev) } });
  await waitFor(`${name} has ${digest(c)}`, async () => (await readImage(namespace, name)).status?.latestImage === digest(c));
}

function template(containers: { name: string; image: string }[], initContainers: { name: string; image: string }[] = []): V1PodTemplateSpec {
  return {
    metadata: { labels: { app: "web" }, annotations: { team: "shop" } },
    spec: {
      containers: containers.map((c) => ({ ...c, env: [{ name: "MODE", value: "production" }], ports: [{ containerPort: 8080 }] })),
      ...(initContainers.length ? { initContainers } : {}),
    },
  };
}

function deployment(namespace: string, name: string, annotations: Record<string, string>, tpl = template([{ name: "web", image: "busybox:1" }])) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace, annotations },
    spec: { replicas: 1, selector: { matchLabels: { app: "web" } }, template: tpl, progressDeadlineSeconds: 60 },
  };
}

async function readDeployment(namespace: string, name: string): Promise<V1Deployment> {
  return kubeClients().apps.readNamespacedDeployment({ namespace, name });
}

/**
 * Whether the deployment controller is done with the current template: it has observed it, every
 * ReplicaSet has the pods it asked for, and the Deployment's counts are the ReplicaSets' sums.
 * Without a kubelet no pod becomes ready, so nothing moves after this.
 */
async function settled(namespace: string, name: string, generation: number): Promise<boolean> {
  const d = await readDeployment(namespace, name);
  if (d.status?.observedGeneration !== generation) return false;
  const owned = (await kubeClients().apps.listNamespacedReplicaSet({ namespace })).items.filter((r) =>
    r.metadata?.ownerReferences?.some((o) => o.uid === d.metadata?.uid),
  );
  if (!owned.every((r) => r.status?.observedGeneration === r.metadata?.generation && (r.status?.replicas ?? 0) === (r.spec?.replicas ?? 0))) return false;
  const image = d.spec!.template.spec!.containers[0]!.image;
  const current = owned.filter((r) => r.spec?.template?.spec?.containers[0]?.image === image);
  const sum = (rs: typeof owned) => rs.reduce((n, r) => n + (r.status?.replicas ?? 0), 0);
  return current.length === 1 && (d.status.replicas ?? 0) === sum(owned) && (d.status.updatedReplicas ?? 0) === sum(current);
}

async function warningsFor(namespace: string, name: string, reason = "RolloutRefused") {
  return (await kubeClients().core.listNamespacedEvent({ namespace })).items.filter((e) => e.involvedObject.name === name && e.reason === reason);
}

describe("rollout", () => {
  let flake: Awaited<ReturnType<typeof createGitRepo>>;
  beforeAll(async () => {
    await installTestCrd();
    flake = await createGitRepo(minimalFlake({ marker: "rollout" }), { prefix: "rollout" });
  });

  it("patches only the image of an opted-in Deployment; the new ReplicaSet's template differs in nothing else; no second write", async () => {
    const namespace = await testNamespace("rollout-deploy");
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    await apply(deployment(namespace, "web", { "niximage.io/from": "web" }));
    const before = (await readDeployment(namespace, "web")).spec!.template;
    await nixImage(namespace, "web", flake.flakeUrl);
    await succeed(namespace, "web", 1, "a", flake.rev);

    const after = await waitFor("Deployment runs the digest", async () => {
      const d = await readDeployment(namespace, "web");
      return d.spec!.template.spec!.containers[0]!.image === digest("a") ? d : undefined;
    });
    const expected = structuredClone(before);
    expected.spec!.containers[0]!.image = digest("a");
    expected.metadata!.annotations = { ...expected.metadata!.annotations, "niximage.io/revision": flake.rev };
    expect(after.spec!.template).toEqual(expected);
    // kube-controller-manager made a ReplicaSet for the new template, with exactly that template.
    const rs = await waitFor("a ReplicaSet with the digest", async () => {
      const list = await kubeClients().apps.listNamespacedReplicaSet({ namespace });
      return list.items.find((r) => r.spec?.template?.spec?.containers[0]?.image === digest("a"));
    });
    const { "pod-template-hash": _hash, ...rsLabels } = rs.spec!.template!.metadata!.labels!;
    void _hash;
    expect({ ...rs.spec!.template, metadata: { ...rs.spec!.template!.metadata, labels: rsLabels } }).toEqual(expected);
    // Our manager owns the image field and the annotation, nothing else.
    const ours = after.metadata!.managedFields!.filter((m) => m.manager === "nix-image-operator");
    expect(ours).toHaveLength(1);
    const owned = JSON.stringify(ours[0]!.fieldsV1);
    expect(owned).toContain('"f:image"');
    expect(owned).not.toContain("f:env");
    expect(owned).not.toContain("f:replicas");

    await operator.idle();
    const status = (await readImage(namespace, "web")).status!;
    expect(status.rollout).toEqual([
      expect.objectContaining({ kind: "Deployment", name: "web", container: "web", image: digest("a"), previousImage: "busybox:1" }),
    ]);
    expect(status.conditions?.find((c) => c.type === "RolledOut")).toMatchObject({ status: "False", reason: "RollingOut" });
    expect((await kubeClients().core.listNamespacedEvent({ namespace })).items.some((e) => e.reason === "RolledOut")).toBe(true);

    const writes = operator.writes.get("PATCH deployment");
    operator.enqueueAll();
    await operator.idle();
    expect(operator.writes.get("PATCH deployment")).toBe(writes);
  });

  it("updates StatefulSets, DaemonSets, CronJobs, a named container of several, a named init container; a new opted-in workload at once", async () => {
    const namespace = await testNamespace("rollout-kinds");
    await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    const tpl = template([{ name: "web", image: "busybox:1" }]);
    await apply({
      apiVersion: "apps/v1",
      kind: "StatefulSet",
      metadata: { name: "db", namespace, annotations: { "niximage.io/from": "web" } },
      spec: { serviceName: "db", selector: { matchLabels: { app: "web" } }, template: tpl },
    });
    await apply({
      apiVersion: "apps/v1",
      kind: "DaemonSet",
      metadata: { name: "agent", namespace, annotations: { "niximage.io/from": "web" } },
      spec: { selector: { matchLabels: { app: "web" } }, template: tpl },
    });
    await apply({
      apiVersion: "batch/v1",
      kind: "CronJob",
      metadata: { name: "nightly", namespace, annotations: { "niximage.io/from": "web" } },
      spec: {
        schedule: "0 1 * * *",
        jobTemplate: { spec: { template: { spec: { restartPolicy: "Never", containers: [{ name: "task", image: "busybox:1" }] } } } },
      },
    });
    await apply(
      deployment(
        namespace,
        "multi",
        { "niximage.io/from": "web", "niximage.io/container": "app" },
        template([
          { name: "sidecar", image: "envoy:1" },
          { name: "app", image: "busybox:1" },
        ]),
      ),
    );
    await apply(
      deployment(
        namespace,
        "migrate",
        { "niximage.io/from": "web", "niximage.io/container": "migrate" },
        template([{ name: "app", image: "busybox:1" }], [{ name: "migrate", image: "busybox:1" }]),
      ),
    );
    await nixImage(namespace, "web", flake.flakeUrl);
    await succeed(namespace, "web", 1, "b", flake.rev);

    const { apps, batch } = kubeClients();
    await waitFor("all targets run the digest", async () => {
      const sts = await apps.readNamespacedStatefulSet({ namespace, name: "db" });
      const ds = await apps.readNamespacedDaemonSet({ namespace, name: "agent" });
      const cj = await batch.readNamespacedCronJob({ namespace, name: "nightly" });
      const multi = await readDeployment(namespace, "multi");
      const migrate = await readDeployment(namespace, "migrate");
      return (
        sts.spec!.template.spec!.containers[0]!.image === digest("b") &&
        ds.spec!.template.spec!.containers[0]!.image === digest("b") &&
        cj.spec!.jobTemplate.spec!.template.spec!.containers[0]!.image === digest("b") &&
        multi.spec!.template.spec!.containers.map((c) => c.image).join() === `envoy:1,${digest("b")}` &&
        migrate.spec!.template.spec!.initContainers![0]!.image === digest("b") &&
        migrate.spec!.template.spec!.containers[0]!.image === "busybox:1"
      );
    });

    // A workload that opts in later gets the latest image without a build.
    await apply(deployment(namespace, "late", { "niximage.io/from": "web" }));
    await waitFor("late Deployment updated", async () => (await readDeployment(namespace, "late")).spec!.template.spec!.containers[0]!.image === digest("b"));
  });

  it("refuses, with an Event and no write: another namespace, a missing NixImage, a missing container, several containers unnamed", async () => {
    const namespace = await testNamespace("rollout-refuse");
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    await nixImage(namespace, "web", flake.flakeUrl);
    await succeed(namespace, "web", 1, "c", flake.rev);
    await apply(deployment(namespace, "cross", { "niximage.io/from": "other-namespace/web" }));
    await apply(deployment(namespace, "ghost", { "niximage.io/from": "does-not-exist" }));
    await apply(deployment(namespace, "typo", { "niximage.io/from": "web", "niximage.io/container": "wbe" }));
    await apply(
      deployment(
        namespace,
        "two",
        { "niximage.io/from": "web" },
        template([
          { name: "a", image: "busybox:1" },
          { name: "b", image: "busybox:1" },
        ]),
      ),
    );

    await waitFor("four refusals", async () => {
      const counts = await Promise.all(["cross", "ghost", "typo", "two"].map(async (n) => (await warningsFor(namespace, n)).length));
      return counts.every((c) => c === 1);
    });
    expect((await warningsFor(namespace, "cross"))[0]!.message).toContain("another namespace");
    expect((await warningsFor(namespace, "ghost"))[0]!.message).toContain('NixImage "does-not-exist" does not exist');
    expect((await warningsFor(namespace, "typo"))[0]!.message).toContain('container "wbe"');
    expect((await warningsFor(namespace, "two"))[0]!.message).toContain("niximage.io/container");
    for (const name of ["cross", "ghost", "typo", "two"]) {
      const d = await readDeployment(namespace, name);
      expect(d.spec!.template.spec!.containers.every((c) => c.image === "busybox:1")).toBe(true);
      expect(d.metadata!.managedFields!.some((m) => m.manager === "nix-image-operator")).toBe(false);
    }
    const status = (await readImage(namespace, "web")).status!;
    expect(status.conditions?.find((c) => c.type === "RolledOut")).toMatchObject({ status: "False", reason: "RolloutRefused" });
    expect(operator.writes.get("PATCH deployment")).toBeUndefined();
  });

  it("policy Disabled builds but touches nothing; the digest stays in status", async () => {
    const namespace = await testNamespace("rollout-disabled");
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    await apply(deployment(namespace, "web", { "niximage.io/from": "web" }));
    await nixImage(namespace, "web", flake.flakeUrl, { rollout: { policy: "Disabled" } });
    await succeed(namespace, "web", 1, "d", flake.rev);
    await operator.idle();
    expect((await readDeployment(namespace, "web")).spec!.template.spec!.containers[0]!.image).toBe("busybox:1");
    expect((await readImage(namespace, "web")).status?.latestImage).toBe(digest("d"));
    expect(operator.writes.get("PATCH deployment")).toBeUndefined();
  });

  it("rolls back after ProgressDeadlineExceeded when asked, and does not roll that digest out again", async () => {
    const namespace = await testNamespace("rollout-rollback");
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    await apply(deployment(namespace, "web", { "niximage.io/from": "web" }));
    await nixImage(namespace, "web", flake.flakeUrl, { rollout: { policy: "Automatic", rollbackOnFailure: true } });
    await succeed(namespace, "web", 1, "e", flake.rev);
    await waitFor("first digest rolled out", async () => (await readDeployment(namespace, "web")).spec!.template.spec!.containers[0]!.image === digest("e"));
    await operator.idle();

    // A second build whose rollout never becomes ready.
    await kubeRequestJson(kubeClients().kc, "PATCH", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`, {
      body: { metadata: { annotations: { "niximage.io/rebuild": "1" } } },
      contentType: "application/merge-patch+json",
    });
    await succeed(namespace, "web", 2, "f", flake.rev);
    const rolled = await waitFor("second digest rolled out", async () => {
      const d = await readDeployment(namespace, "web");
      return d.spec!.template.spec!.containers[0]!.image === digest("f") ? d : undefined;
    });
    await operator.idle();
    // Play the deployment controller's verdict (pods never become ready without a kubelet). The
    // real deployment controller replaces a Progressing condition whenever it sees progress in
    // the replica counts, so the verdict is written only once it has observed the new template
    // and its counts have settled (new ReplicaSet's pod created, old one kept): from then on
    // nothing changes without a kubelet, and the verdict stays until the operator acts on it.
    await waitFor("deployment controller settled on the second template", () => settled(namespace, "web", rolled.metadata!.generation!));
    await kubeRequestJson(kubeClients().kc, "PATCH", `/apis/apps/v1/namespaces/${namespace}/deployments/web/status`, {
      body: {
        status: {
          observedGeneration: rolled.metadata!.generation,
          conditions: [
            {
              type: "Progressing",
              status: "False",
              reason: "ProgressDeadlineExceeded",
              message: 'ReplicaSet "web-x" has timed out progressing.',
              lastUpdateTime: new Date().toISOString(),
              lastTransitionTime: new Date().toISOString(),
            },
          ],
        },
      },
      contentType: "application/merge-patch+json",
    });
    await waitFor(
      "rolled back to the first digest",
      async () => (await readDeployment(namespace, "web")).spec!.template.spec!.containers[0]!.image === digest("e"),
    );
    const status = await waitFor("RolledOut False", async () => {
      const s = (await readImage(namespace, "web")).status!;
      return s.conditions?.find((c) => c.type === "RolledOut")?.reason === "RolloutFailed" ? s : undefined;
    });
    expect(status.rollout?.[0]).toMatchObject({ rolledBackFrom: digest("f") });
    expect(status.latestImage).toBe(digest("f"));
    expect(
      (await warningsFor(namespace, "web", "RolledBack")).length +
        (await kubeClients().core.listNamespacedEvent({ namespace })).items.filter((e) => e.reason === "RolledBack").length,
    ).toBeGreaterThan(0);
    operator.enqueueAll();
    await operator.idle();
    expect((await readDeployment(namespace, "web")).spec!.template.spec!.containers[0]!.image).toBe(digest("e"));
  });

  it("a StatefulSet that is not ready within spec.rollout.progressDeadline (a deadline of our own) is rolled back, and that digest is not rolled out again", async () => {
    const namespace = await testNamespace("rollout-sts-deadline");
    const clock = new OffsetClock();
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace], clock });
    await apply({
      apiVersion: "apps/v1",
      kind: "StatefulSet",
      metadata: { name: "db", namespace, annotations: { "niximage.io/from": "web" } },
      spec: { serviceName: "db", selector: { matchLabels: { app: "web" } }, template: template([{ name: "web", image: "busybox:1" }]) },
    });
    await nixImage(namespace, "web", flake.flakeUrl, { rollout: { rollbackOnFailure: true, progressDeadline: "5m" } });
    await succeed(namespace, "web", 1, "5", flake.rev);
    const sts = () => kubeClients().apps.readNamespacedStatefulSet({ namespace, name: "db" });
    await waitFor("StatefulSet runs the digest", async () => (await sts()).spec!.template.spec!.containers[0]!.image === digest("5"));
    await operator.idle();
    const patched = (await readImage(namespace, "web")).status!.rollout![0]!;
    expect(patched).toMatchObject({ kind: "StatefulSet", image: digest("5"), previousImage: "busybox:1", ready: false });
    expect(patched.patchedAt).toBeDefined();

    // Within the deadline: waiting, nothing else written.
    clock.advance(60_000);
    operator.enqueueAll();
    await operator.idle();
    expect((await sts()).spec!.template.spec!.containers[0]!.image).toBe(digest("5"));

    // Past it (no kubelet here: its pod never becomes ready): rolled back, recorded, said once.
    clock.advance(5 * 60_000);
    operator.enqueueAll();
    await waitFor("rolled back to the previous image", async () => (await sts()).spec!.template.spec!.containers[0]!.image === "busybox:1");
    await operator.idle();
    const status = (await readImage(namespace, "web")).status!;
    expect(status.rollout![0]).toMatchObject({ rolledBackFrom: digest("5"), image: "busybox:1" });
    expect(status.rollout![0]!.message).toMatch(/did not become ready and was rolled back/);
    expect((await warningsFor(namespace, "web", "RolledBack")).map((e) => e.message)).toEqual([expect.stringContaining("restored busybox:1")]);
    expect(status.conditions?.find((c) => c.type === "RolledOut")).toMatchObject({ status: "False", reason: "RolloutFailed" });
    const patches = operator.writes.get("PATCH statefulset");
    expect(patches).toBe(2);
    clock.advance(60 * 60_000);
    operator.enqueueAll();
    await operator.idle();
    expect(operator.writes.get("PATCH statefulset")).toBe(2);
    expect((await sts()).spec!.template.spec!.containers[0]!.image).toBe("busybox:1");
  });

  it("trust: a forged labelled Job and pod with forged push results roll nothing out; each is reported once", async () => {
    const namespace = await testNamespace("rollout-forged");
    const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    await apply(deployment(namespace, "web", { "niximage.io/from": "web" }));
    await nixImage(namespace, "web", flake.flakeUrl);
    await succeed(namespace, "web", 1, "a", flake.rev);
    await waitFor("first digest rolled out", async () => (await readDeployment(namespace, "web")).spec!.template.spec!.containers[0]!.image === digest("a"));
    await operator.idle();
    const { batch, core } = kubeClients();
    const builderLabels = {
      "app.kubernetes.io/managed-by": "nix-image-operator",
      "niximage.io/image": "web",
      "niximage.io/build-kind": "Image",
      "niximage.io/build-number": "9",
    };

    // Someone who may create Jobs in the namespace labels one like a builder Job (no owner: it is not the NixImage's).
    await batch.createNamespacedJob({
      namespace,
      body: {
        metadata: { name: "web-build-9", labels: builderLabels, annotations: { "niximage.io/reasons": "SpecChanged" } },
        spec: {
          backoffLimit: 0,
          template: { metadata: { labels: builderLabels }, spec: { restartPolicy: "Never", containers: [{ name: "push", image: "busybox:1" }] } },
        },
      },
    });
    await finishBuildPod(namespace, "web-build-9", { succeed: { message: pushResult(repository, "e".repeat(64), flake.rev) } });
    await waitFor("the forged Job completed", async () =>
      (await batch.readNamespacedJob({ namespace, name: "web-build-9" })).status?.conditions?.some((c) => c.type === "Complete" && c.status === "True"),
    );
    // ...and a bare pod labelled as the real build's pod, newer than it, with a forged result.
    const forgedPod = await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: "web-build-1-forged", labels: { ...builderLabels, "niximage.io/build-number": "1", "batch.kubernetes.io/job-name": "web-build-1" } },
        spec: { restartPolicy: "Never", containers: [{ name: "push", image: "busybox:1" }] },
      },
    });
    const done = (name: string, exitCode: number, message?: string) => ({
      name,
      ready: false,
      restartCount: 0,
      image: "busybox:1",
      imageID: "",
      state: {
        terminated: {
          exitCode,
          reason: "Completed",
          ...(message ? { message } : {}),
          startedAt: new Date().toISOString(),
          finishedAt: new Date().toISOString(),
        },
      },
    });
    await kubeRequestJson(kubeClients().kc, "PATCH", `/api/v1/namespaces/${namespace}/pods/${forgedPod.metadata!.name}/status`, {
      body: { status: { phase: "Succeeded", containerStatuses: [done("push", 0, pushResult(repository, "f".repeat(64), flake.rev))] } },
      contentType: "application/merge-patch+json",
    });

    const ignored = async () =>
      (await core.listNamespacedEvent({ namespace })).items.filter((e) => e.reason === "ForeignObjectIgnored" && e.involvedObject.kind === "NixImage");
    await waitFor("both forgeries reported", async () => (await ignored()).length === 2);
    for (let i = 0; i < 2; i++) {
      operator.enqueueAll();
      await operator.idle();
    }
    expect((await ignored()).map((e) => (e.message ?? "").split(" ").slice(0, 2).join(" ")).sort()).toEqual(["Job web-build-9", "Pod web-build-1-forged"]);
    const status = (await readImage(namespace, "web")).status!;
    expect(status.latestImage).toBe(digest("a"));
    expect(status.lastBuild).toMatchObject({ job: "web-build-1", result: "Succeeded", digest: `sha256:${"a".repeat(64)}` });
    expect(status.buildCount).toBe(1);
    expect((await readDeployment(namespace, "web")).spec!.template.spec!.containers[0]!.image).toBe(digest("a"));
  });

  it("leaves fields of another manager (a GitOps tool) alone, and keeps the image field ours", async () => {
    const namespace = await testNamespace("rollout-gitops");
    await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace] });
    // The GitOps tool applies its manifest (with an image it does not care about afterwards).
    await apply(deployment(namespace, "web", { "niximage.io/from": "web" }), { fieldManager: "argocd-controller" });
    await nixImage(namespace, "web", flake.flakeUrl);
    await succeed(namespace, "web", 1, "9", flake.rev);
    await waitFor("digest rolled out", async () => (await readDeployment(namespace, "web")).spec!.template.spec!.containers[0]!.image === digest("9"));

    // The tool re-applies a changed manifest without the image field (Argo CD ignoreDifferences
    // with managedFieldsManagers / Flux leaving the field out): its change lands, ours stays.
    const changed = deployment(namespace, "web", { "niximage.io/from": "web" });
    const container = changed.spec.template.spec!.containers[0]! as { image?: string; env?: unknown[] };
    delete container.image;
    container.env = [{ name: "MODE", value: "staging" }];
    (changed.spec as { replicas: number }).replicas = 3;
    await apply(changed, { fieldManager: "argocd-controller", force: false });
    const d = await readDeployment(namespace, "web");
    expect(d.spec!.replicas).toBe(3);
    expect(d.spec!.template.spec!.containers[0]!.env).toEqual([{ name: "MODE", value: "staging" }]);
    expect(d.spec!.template.spec!.containers[0]!.image).toBe(digest("9"));
    const ours = JSON.stringify(d.metadata!.managedFields!.find((m) => m.manager === "nix-image-operator")!.fieldsV1);
    expect(ours).toContain('"f:image"');
  });
});
