// Every file under examples/ is checked three ways:
//   1. `nix-image-operator validate` (the real CLI, as a GitOps repo's CI would run it) passes;
//   2. every Kubernetes object in it is accepted by the test bed's API server (server-side dry
//      run, the NixImage CRD installed first), in a fresh namespace;
//   3. objects of kinds the test bed has no CRD for (Argo CD Application, Flux GitRepository and
//      Kustomization, kustomize's kustomization.yaml) are checked against a zod schema of the
//      fields the examples rely on, since no API server here can check them.
// Plus what ties an example together: each opted-in workload names a NixImage of its example and
// runs an image of its repository, Secrets are where the NixImage and the pods look for them, the
// GitOps manifests point at directories that exist and leave the operator's field alone.
// Last, why the GitOps recipe is what it is, on the real API server: a workload without an image
// is rejected; after the operator's server-side apply, re-applying the Git manifest conflicts on
// exactly the image field (what Flux would force back without `spec.ignore`); the manifest
// without that field (what Flux sends with `spec.ignore`) applies Git changes and keeps the
// digest. (test/integration/gitops-flux.test.ts runs Flux's own controllers.)
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { fieldManager } from "../../src/controller/names.ts";
import { pushSecretConsent } from "../../src/controller/push-secret-consent.ts";
import { applyBody, rolloutAnnotations, type Workload } from "../../src/rollout/rollout-plan.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { kubeClients, testbed, testNamespace } from "../support/kube.ts";
import { installTestCrd } from "../support/operator-harness.ts";
import { run } from "../support/process.ts";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const examplesDir = join(repo, "examples");

interface Doc {
  file: string;
  index: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  object: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; annotations?: Record<string, string> }; [key: string]: any };
}

async function yamlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await yamlFiles(path)));
    else if (/\.ya?ml$/.test(entry.name)) out.push(path);
  }
  return out.sort();
}

async function loadDocs(): Promise<Doc[]> {
  const docs: Doc[] = [];
  for (const file of await yamlFiles(examplesDir)) {
    parseAllDocuments(await readFile(file, "utf8")).forEach((d, index) => {
      expect(d.errors, `${file}#${index}`).toEqual([]);
      const object = d.toJS() as Doc["object"] | null;
      if (object) docs.push({ file: relative(examplesDir, file), index, object });
    });
  }
  return docs;
}

/** Kinds the test bed's API server knows (built-in, or the NixImage CRD). */
const served = new Set(["niximage.io/v1alpha1 NixImage", "apps/v1 Deployment", "v1 Service", "v1 Secret", "v1 Namespace"]);
const key = (d: Doc) => `${d.object.apiVersion} ${d.object.kind}`;

// ---- shapes of the objects no API server here can check ----------------------------------------

const name = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
const gitUrl = z.string().regex(/^(https:\/\/|ssh:\/\/|git@)/);

/** Argo CD Application (argoproj.io/v1alpha1): the fields these examples use. */
const argoApplication = z.strictObject({
  apiVersion: z.literal("argoproj.io/v1alpha1"),
  kind: z.literal("Application"),
  metadata: z.strictObject({ name, namespace: name, finalizers: z.array(z.literal("resources-finalizer.argocd.argoproj.io")).optional() }),
  spec: z.strictObject({
    project: name,
    source: z.strictObject({ repoURL: gitUrl, targetRevision: z.string().min(1), path: z.string().min(1) }),
    destination: z.strictObject({ server: z.string().url(), namespace: name }),
    ignoreDifferences: z.array(z.strictObject({ group: z.string(), kind: z.string().min(1), managedFieldsManagers: z.array(z.string().min(1)).min(1) })).min(1),
    syncPolicy: z.strictObject({
      automated: z.strictObject({ prune: z.boolean(), selfHeal: z.boolean() }).optional(),
      syncOptions: z.array(z.string().regex(/^[A-Za-z]+=(true|false)$/)),
    }),
  }),
});

/** Flux GitRepository (source.toolkit.fluxcd.io/v1). */
const fluxGitRepository = z.strictObject({
  apiVersion: z.literal("source.toolkit.fluxcd.io/v1"),
  kind: z.literal("GitRepository"),
  metadata: z.strictObject({ name, namespace: name }),
  spec: z.strictObject({
    interval: z.string().regex(/^(\d+(ms|s|m|h))+$/),
    url: gitUrl,
    ref: z.strictObject({ branch: z.string().min(1) }),
  }),
});

/** Flux Kustomization (kustomize.toolkit.fluxcd.io/v1). */
const fluxKustomization = z.strictObject({
  apiVersion: z.literal("kustomize.toolkit.fluxcd.io/v1"),
  kind: z.literal("Kustomization"),
  metadata: z.strictObject({ name, namespace: name }),
  spec: z.strictObject({
    interval: z.string().regex(/^(\d+(ms|s|m|h))+$/),
    sourceRef: z.strictObject({ kind: z.literal("GitRepository"), name }),
    path: z.string().startsWith("./"),
    targetNamespace: name.optional(),
    prune: z.boolean(),
    ignore: z
      .array(
        z.strictObject({
          paths: z.array(z.string().startsWith("/")).min(1),
          target: z.strictObject({ kind: z.string().min(1), annotationSelector: z.string().min(1) }).optional(),
        }),
      )
      .optional(),
    healthChecks: z.array(z.strictObject({ apiVersion: z.string().min(1), kind: z.string().min(1), name, namespace: name })).optional(),
    wait: z.boolean().optional(),
    timeout: z
      .string()
      .regex(/^(\d+(ms|s|m|h))+$/)
      .optional(),
  }),
});

/** kustomize's own kustomization.yaml (kustomize.config.k8s.io/v1beta1). */
const kustomizeFile = z.strictObject({
  apiVersion: z.literal("kustomize.config.k8s.io/v1beta1"),
  kind: z.literal("Kustomization"),
  resources: z.array(z.string().min(1)).min(1),
});

const shapes: Record<string, z.ZodType> = {
  "argoproj.io/v1alpha1 Application": argoApplication,
  "source.toolkit.fluxcd.io/v1 GitRepository": fluxGitRepository,
  "kustomize.toolkit.fluxcd.io/v1 Kustomization": fluxKustomization,
  "kustomize.config.k8s.io/v1beta1 Kustomization": kustomizeFile,
};

// ---- tests -------------------------------------------------------------------------------------------

describe("examples/", () => {
  let docs: Doc[] = [];
  beforeAll(async () => {
    docs = await loadDocs();
  });

  it("has the documented examples", async () => {
    const dirs = new Set(docs.map((d) => d.file.split("/")[0]));
    expect([...dirs].sort()).toEqual(["gitops", "hello-world", "nightly-warm", "private-registry", "self-hosting.yaml"]);
    // Every document is either served by the test bed or has a shape check below.
    for (const d of docs) expect(served.has(key(d)) || key(d) in shapes, `${d.file}#${d.index}: ${key(d)}`).toBe(true);
  });

  it("passes `nix-image-operator validate` (the CLI, as CI of a GitOps repository runs it)", async () => {
    const { stdout, stderr } = await run(process.execPath, [join(repo, "src/cli/main.ts"), "validate", "--json", "examples/**/*.yaml"], { cwd: repo });
    const report = JSON.parse(stdout) as { files: number; nixImages: number; invalid: number; results: Array<{ file: string; problems: unknown[] }> };
    expect(report.invalid, stdout).toBe(0);
    expect(report.files).toBe(new Set(docs.map((d) => d.file)).size);
    expect(report.nixImages).toBe(docs.filter((d) => d.object.kind === "NixImage").length);
    expect(report.results.flatMap((r) => r.problems)).toEqual([]);
    expect(stderr).toBe("");
    // And without --json, the way a person runs it: exit code 0 and the summary.
    const plain = await run(process.execPath, [join(repo, "src/cli/main.ts"), "validate", "examples/**/*.yaml"], { cwd: repo });
    expect(plain.stdout).toBe("");
    expect(plain.stderr).toMatch(/^\d+ file\(s\), 6 NixImage\(s\), 0 invalid\n$/);
  });

  it("every Kubernetes object is accepted by the API server (server-side dry run)", async () => {
    await installTestCrd();
    const namespace = await testNamespace("examples-dry-run");
    const bed = testbed();
    for (const d of docs.filter((x) => served.has(key(x)))) {
      // Namespaced example objects carry no namespace: `kubectl apply -n <yours> -f <dir>`.
      if (d.object.kind !== "Namespace") expect(d.object.metadata.namespace, `${d.file}#${d.index}`).toBeUndefined();
      const { stdout } = await run(
        bed.kube.kubectl,
        [
          "--kubeconfig",
          bed.kube.kubeconfig,
          "apply",
          "--server-side",
          "--dry-run=server",
          "--field-manager",
          "examples-test",
          "--namespace",
          namespace,
          "-o",
          "json",
          "-f",
          "-",
        ],
        { input: JSON.stringify(d.object) },
      );
      const accepted = JSON.parse(stdout) as { kind: string; metadata: { name: string } };
      expect([accepted.kind, accepted.metadata.name], `${d.file}#${d.index}`).toEqual([d.object.kind, d.object.metadata.name]);
    }
  });

  it("Argo CD and Flux objects match the shapes of the fields they rely on (no such CRDs on the test bed)", () => {
    const checked = docs.filter((d) => key(d) in shapes);
    expect(checked.map((d) => key(d)).sort()).toEqual(
      [
        "argoproj.io/v1alpha1 Application",
        "kustomize.config.k8s.io/v1beta1 Kustomization",
        "kustomize.toolkit.fluxcd.io/v1 Kustomization",
        "source.toolkit.fluxcd.io/v1 GitRepository",
      ].sort(),
    );
    for (const d of checked) {
      const result = shapes[key(d)]!.safeParse(d.object);
      expect(result.success ? [] : result.error.issues, `${d.file}#${d.index}`).toEqual([]);
    }
  });

  it("opted-in workloads name a NixImage of their example and start from an image of its repository", () => {
    const workloads = docs.filter((d) => d.object.metadata?.annotations?.[rolloutAnnotations.from]);
    expect(workloads.map((w) => w.file).sort()).toEqual([
      "gitops/apps/shop/deployment.yaml",
      "hello-world/deployment.yaml",
      "private-registry/deployment.yaml",
    ]);
    for (const w of workloads) {
      const from = w.object.metadata.annotations![rolloutAnnotations.from]!;
      const image = docs.find((d) => d.object.kind === "NixImage" && d.object.metadata.name === from && dirname(d.file) === dirname(w.file));
      expect(image, `${w.file}: NixImage ${from} in ${dirname(w.file)}`).toBeDefined();
      const containers = w.object.spec.template.spec.containers as Array<{ name: string; image: string }>;
      const wanted = w.object.metadata.annotations![rolloutAnnotations.container];
      if (containers.length > 1) expect(wanted, `${w.file}: several containers need ${rolloutAnnotations.container}`).toBeDefined();
      const container = wanted ? containers.find((c) => c.name === wanted) : containers[0];
      expect(container, `${w.file}: container ${wanted}`).toBeDefined();
      expect(container!.image.startsWith(`${image!.object.spec.image.repository}:`), `${w.file}: ${container!.image}`).toBe(true);
    }
  });

  it("hello-world: a Deployment and a Service that selects its pods", () => {
    const here = docs.filter((d) => d.file.startsWith("hello-world/"));
    expect(here.map((d) => d.object.kind).sort()).toEqual(["Deployment", "NixImage", "Service"]);
    const deployment = here.find((d) => d.object.kind === "Deployment")!.object;
    const service = here.find((d) => d.object.kind === "Service")!.object;
    expect(deployment.spec.template.metadata.labels).toMatchObject(service.spec.selector);
    const ports = (deployment.spec.template.spec.containers[0].ports as Array<{ name: string }>).map((p) => p.name);
    expect(ports).toContain(service.spec.ports[0].targetPort);
  });

  it("nightly-warm: a warm schedule with a time zone and extra attributes", () => {
    const image = docs.find((d) => d.file === "nightly-warm/niximage.yaml")!.object;
    expect(image.spec.warm).toMatchObject({ schedule: "0 3 * * *", timeZone: "Europe/Berlin" });
    expect(image.spec.warm.attributes.length).toBeGreaterThanOrEqual(2);
  });

  it("private-registry: the push Secret goes to the NixImage, the pull Secret to the pods, both for the image's registry", () => {
    const here = docs.filter((d) => d.file.startsWith("private-registry/"));
    const secrets = new Map(here.filter((d) => d.object.kind === "Secret").map((d) => [d.object.metadata.name, d.object]));
    const image = here.find((d) => d.object.kind === "NixImage")!.object;
    const deployment = here.find((d) => d.object.kind === "Deployment")!.object;
    const host = (image.spec.image.repository as string).split("/")[0]!;
    const push = secrets.get(image.spec.image.pushSecretRef.name);
    const pullName = deployment.spec.template.spec.imagePullSecrets[0].name as string;
    const pull = secrets.get(pullName);
    expect(push, "push Secret").toBeDefined();
    expect(pull, "pull Secret").toBeDefined();
    expect(pullName).not.toBe(image.spec.image.pushSecretRef.name);
    // The push Secret opts in to this NixImage (src/controller/push-secret-consent.ts).
    expect(pushSecretConsent(push!.metadata.name, push!.metadata.annotations, image.metadata.name).allowed).toBe(true);
    for (const secret of [push!, pull!]) {
      expect(secret.type).toBe("kubernetes.io/dockerconfigjson");
      const config = JSON.parse(secret.stringData[".dockerconfigjson"]) as { auths: Record<string, { auth: string }> };
      expect(Object.keys(config.auths)).toEqual([host]);
      expect(Buffer.from(config.auths[host]!.auth, "base64").toString()).toMatch(/^[^:]+:CHANGE-ME$/);
    }
  });

  it("gitops: Argo CD and Flux both point at the app directory and leave the operator's field alone", () => {
    const gitopsRoot = join(examplesDir, "gitops");
    const application = docs.find((d) => d.object.kind === "Application")!.object;
    const flux = docs.find((d) => key(d) === "kustomize.toolkit.fluxcd.io/v1 Kustomization")!.object;
    const repoSource = docs.find((d) => d.object.kind === "GitRepository")!.object;
    // Paths are relative to the GitOps repository's root (examples/gitops here).
    expect(existsSync(join(gitopsRoot, application.spec.source.path, "kustomization.yaml"))).toBe(true);
    expect(existsSync(join(gitopsRoot, flux.spec.path, "kustomization.yaml"))).toBe(true);
    expect(join(application.spec.source.path)).toBe(join(flux.spec.path));
    expect(flux.spec.sourceRef.name).toBe(repoSource.metadata.name);
    expect(repoSource.spec.url).toBe(application.spec.source.repoURL);
    expect(application.spec.destination.namespace).toBe(flux.spec.targetNamespace);
    const namespaces = docs.filter((d) => d.object.kind === "Namespace").map((d) => d.object.metadata.name);
    expect(namespaces).toContain(flux.spec.targetNamespace);

    // Argo CD: every workload kind the operator patches is ignored for its field manager, and
    // syncs respect that (server-side apply, so managers are tracked).
    const ignored = (application.spec.ignoreDifferences as Array<{ group: string; kind: string; managedFieldsManagers: string[] }>).map(
      (i) => `${i.group}/${i.kind}`,
    );
    expect(ignored.sort()).toEqual(["apps/DaemonSet", "apps/Deployment", "apps/StatefulSet", "batch/CronJob"]);
    for (const rule of application.spec.ignoreDifferences) expect(rule.managedFieldsManagers).toEqual([fieldManager]);
    expect(application.spec.syncPolicy.syncOptions).toEqual(expect.arrayContaining(["ServerSideApply=true", "RespectIgnoreDifferences=true"]));

    // The app directory: kustomization.yaml lists exactly its other files.
    const appDir = join("gitops", flux.spec.path);
    const kustomization = docs.find((d) => d.file === join(appDir, "kustomization.yaml"))!.object;
    const others = [
      ...new Set(docs.filter((d) => dirname(d.file) === appDir && !d.file.endsWith("kustomization.yaml")).map((d) => d.file.slice(appDir.length + 1))),
    ];
    expect([...kustomization.resources].sort()).toEqual(others.sort());

    // Flux: every Git change is applied (no `ssa: IfNotPresent`/`Ignore`), except the image of each
    // opted-in workload's container, which `spec.ignore` leaves to the operator; the NixImage is
    // health-checked.
    const workloads = docs.filter((d) => dirname(d.file) === appDir && ["Deployment", "StatefulSet", "DaemonSet", "CronJob"].includes(d.object.kind));
    expect(workloads.map((w) => w.object.kind)).toEqual(["Deployment"]);
    for (const w of workloads) {
      expect(w.object.metadata.annotations?.["kustomize.toolkit.fluxcd.io/ssa"]).toBeUndefined();
      expect(w.object.metadata.annotations?.[rolloutAnnotations.from]).toBeDefined();
      expect(w.object.spec.template.spec.containers).toHaveLength(1);
    }
    expect(flux.spec.ignore).toEqual([
      { paths: ["/spec/template/spec/containers/0/image"], target: { kind: "Deployment", annotationSelector: rolloutAnnotations.from } },
    ]);
    const nixImages = docs.filter((d) => dirname(d.file) === appDir && d.object.kind === "NixImage").map((d) => d.object.metadata.name);
    expect(flux.spec.healthChecks).toEqual(
      nixImages.map((name) => ({ apiVersion: "niximage.io/v1alpha1", kind: "NixImage", name, namespace: flux.spec.targetNamespace })),
    );
  });

  it("self-hosting: builds the flake's own image attribute and never rolls the operator out by itself", async () => {
    const images = docs.filter((d) => d.file === "self-hosting.yaml").map((d) => d.object);
    expect(images.map((i) => i.spec.attribute)).toEqual(["packages.x86_64-linux.image", "packages.x86_64-linux.nix-image-operator"]);
    const flake = await readFile(join(repo, "flake.nix"), "utf8");
    expect(flake).toMatch(/^\s*image = pkgs\.dockerTools\.streamLayeredImage \{/m);
    expect(flake).toMatch(/^\s*nix-image-operator = operator;/m);
    expect(images[0]!.spec.format).toBe("stream-layered");
    for (const image of images) expect(image.spec.rollout.policy).toBe("Disabled");
  });

  it("gitops on the API server: no workload without an image; Git re-applied over the operator's digest conflicts on the image only; without that field it applies and keeps the digest", async () => {
    const namespace = await testNamespace("examples-gitops");
    const deployment = docs.find((d) => d.file === "gitops/apps/shop/deployment.yaml" && d.object.kind === "Deployment")!.object;
    const { kc } = kubeClients();
    const path = `/apis/apps/v1/namespaces/${namespace}/deployments/${deployment.metadata.name}`;
    const gitApply = (object: Doc["object"], manager = "kustomize-controller") =>
      kubeRequestJson<Workload>(kc, "PATCH", path, {
        body: { ...object, metadata: { ...object.metadata, namespace } },
        contentType: "application/apply-patch+yaml",
        // Not forced: a conflict shows that Git and the operator claim the same field.
        query: { fieldManager: manager, force: "false" },
      });
    const withSpec = (change: (spec: Doc["object"]["spec"]) => void): Doc["object"] => {
      const spec = structuredClone(deployment.spec);
      change(spec);
      return { ...deployment, spec };
    };
    const failure = (p: Promise<unknown>) =>
      p.then(
        () => "",
        (e: Error) => e.message,
      );

    // The image cannot be left out of Git: the API server requires it in a pod template.
    const noImage = withSpec((spec) => delete spec.template.spec.containers[0].image);
    expect(await failure(gitApply(noImage))).toMatch(/422 .*containers\[0\]\.image: Required value/);

    // The GitOps tool creates the Deployment from Git; the operator sets the digest exactly as
    // the reconciler does (src/rollout/rollout-plan.ts).
    const created = await gitApply(deployment);
    const digest = `registry.example.com/acme/shop-web@sha256:${"a".repeat(64)}`;
    const revision = "github:acme/shop/0123456789abcdef";
    await kubeRequestJson(kc, "PATCH", path, {
      body: applyBody({ workload: created, container: "web", init: false, image: digest, revision, previous: undefined, rollback: false }),
      contentType: "application/apply-patch+yaml",
      query: { fieldManager, force: "true" },
    });
    const live = await kubeRequestJson<Workload>(kc, "GET", path);
    expect(live.spec!.template!.spec!.containers[0]!.image).toBe(digest);
    const managers = (live.metadata!.managedFields ?? []).map((m) => m.manager);
    expect(managers).toEqual(expect.arrayContaining(["kustomize-controller", fieldManager]));

    // Re-applying the Git manifest conflicts on the image, owned by nix-image-operator now; Flux
    // forces, which would put the placeholder back: hence its `spec.ignore` for that path.
    const conflict = await failure(gitApply(deployment));
    expect(conflict).toMatch(/conflict/i);
    expect(conflict).toContain('"nix-image-operator"');
    expect(conflict).toMatch(/\.image/);
    expect(conflict).not.toMatch(/replicas|ports|securityContext/);

    // With `spec.ignore`, Flux strips a drifted ignored field that another apply manager owns
    // from what it sends: a Git change (replicas) then lands and the digest stays, owned by the
    // operator alone.
    const changed = withSpec((spec) => {
      spec.replicas = 2;
      delete spec.template.spec.containers[0].image;
    });
    const after = await gitApply(changed);
    expect(after.spec).toMatchObject({ replicas: 2, template: { spec: { containers: [{ name: "web", image: digest }] } } });
    const imageOwners = (after.metadata!.managedFields ?? []).filter((m) => JSON.stringify(m.fieldsV1).includes('"f:image"')).map((m) => m.manager);
    expect(imageOwners).toEqual([fieldManager]);

    // Argo CD with RespectIgnoreDifferences sends the live image as desired: no conflict, no
    // change (the generation stays), and the operator's value stays.
    const respectful = withSpec((spec) => {
      spec.replicas = 2;
      spec.template.spec.containers[0].image = digest;
      spec.template.metadata.annotations = { [rolloutAnnotations.revision]: revision };
    });
    const synced = await gitApply(respectful, "argocd-controller");
    expect(synced.metadata!.generation).toBe(after.metadata!.generation);
    expect(synced.spec!.template!.spec!.containers[0]!.image).toBe(digest);
  });
});
