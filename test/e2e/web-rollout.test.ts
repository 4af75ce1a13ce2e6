// End to end on a real single-node cluster (test/e2e/support/cluster.ts), nothing simulated:
// the operator installed from the Helm chart's rendered manifests runs as a pod; a NixImage
// applied with kubectl becomes a builder pod that runs Nix in a container against a flake served
// by a git server; the image lands in the cluster's registry; an opted-in Deployment gets the
// digest and its new pod answers HTTP with the flake's text. Then: a commit changes the text ->
// one new layer -> rollout -> new text; a failing build keeps the old pod serving; deleting the
// NixImage leaves the workload running. Timings of each phase go to <logDir>/timings.json.
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { webDeploymentYaml, webNixImageYaml } from "./support/web-example.ts";
import { createFlakeRepo, type FlakeRepo } from "./support/git.ts";
import { diagnostics, httpText, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";
import { supplyChainTool } from "../support/supply-chain-tools.ts";

const execFileAsync = promisify(execFile);

const { cluster, git, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-web";
const imageName = "web";
const repository = `${cluster.registry.host}/e2e/web`;
const fixture = join(import.meta.dirname, "fixtures/web");

interface BuildRecord {
  job: string;
  number: number;
  result: "Running" | "Succeeded" | "Failed";
  startTime?: string;
  completionTime?: string;
  digest?: string;
  layers?: { pushed: number; skipped: number; mounted?: number };
  bytesPushed?: number;
  attestations?: { sbom?: string; provenance?: string; signature?: string; attestations?: string };
  durations?: Record<string, number>;
  failure?: { step: string; exitCode?: number; reason?: string; message: string };
}

interface NixImageView {
  metadata: { name: string; generation?: number };
  status?: {
    latestImage?: string;
    lastBuild?: BuildRecord;
    conditions?: { type: string; status: string; reason: string; message: string }[];
    rollout?: { kind: string; name: string; image?: string; ready?: boolean }[];
  };
}

interface PodView {
  metadata: { name: string; deletionTimestamp?: string; labels?: Record<string, string> };
  spec: { containers: { name: string; image: string }[] };
  status: { phase?: string; podIP?: string; containerStatuses?: { name: string; ready: boolean; imageID: string; image: string }[] };
}

/** Seconds, per phase, per build: written to timings.json and printed after the run. */
const timings: Record<string, Record<string, number | string>> = {
  cluster: Object.fromEntries(Object.entries(cluster.timings).map(([name, ms]) => [name, ms / 1000])),
};
const seconds = (fromMs: number, toMs = Date.now()) => Math.round(toMs - fromMs) / 1000;

let operator: InstalledOperator | undefined;
let repo: FlakeRepo;
let failed = false;

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
  const file = join(cluster.logDir, "timings.json");
  writeFileSync(file, JSON.stringify(timings, null, 2) + "\n");
  const lines = Object.entries(timings).map(
    ([phase, t]) =>
      `  ${phase.padEnd(22)} ${Object.entries(t)
        .map(([key, v]) => `${key}=${v}`)
        .join("  ")}`,
  );
  process.stderr.write(`\ne2e timings (seconds; also in ${file}):\n${lines.join("\n")}\n`);
});

async function niximage(): Promise<NixImageView | undefined> {
  return k.get<NixImageView>("niximage", imageName, ns);
}

const describeImage = async () => JSON.stringify((await niximage())?.status ?? "no NixImage", null, 2);

async function webPods(): Promise<PodView[]> {
  const list = await k.json<{ items: PodView[] }>(["-n", ns, "get", "pods", "-l", "app=web"]);
  return list.items.filter((p) => !p.metadata.deletionTimestamp);
}

const describePods = async () =>
  (await webPods())
    .map((p) => `${p.metadata.name} ${p.status.phase} ${p.spec.containers[0]?.image} ready=${p.status.containerStatuses?.[0]?.ready} ip=${p.status.podIP}`)
    .join("\n");

/** Waits for build `number` to finish; returns its record. */
async function buildFinished(number: number, timeoutMs = 12 * 60_000): Promise<BuildRecord> {
  return waitFor(
    `build ${number} of NixImage ${ns}/${imageName} to finish`,
    async () => {
      const b = (await niximage())?.status?.lastBuild;
      return b && b.number === number && b.result !== "Running" ? b : undefined;
    },
    { timeoutMs, intervalMs: 1000, describe: describeImage },
  );
}

/** Waits until the only web pod runs `image` (repo@digest), is ready and serves `text`. */
async function serving(image: string, text: string, timeoutMs = 5 * 60_000): Promise<PodView> {
  const digest = image.slice(image.indexOf("@") + 1);
  return waitFor(
    `the Deployment's pod to run ${image} and serve ${JSON.stringify(text.trim())}`,
    async () => {
      const pods = await webPods();
      if (pods.length !== 1) return undefined;
      const pod = pods[0]!;
      const status = pod.status.containerStatuses?.find((c) => c.name === "web");
      if (pod.spec.containers[0]?.image !== image || !status?.ready || !status.imageID.endsWith(digest) || !pod.status.podIP) return undefined;
      const body = await httpText(`http://${pod.status.podIP}:8080/message.txt`);
      return body === text ? pod : undefined;
    },
    { timeoutMs, intervalMs: 1000, describe: describePods },
  );
}

function message(version: number): string {
  return `Hello from nix-image-operator, version ${version}\n`;
}

describe.sequential("a NixImage on a real cluster: builder pod -> registry -> Deployment serving", () => {
  it("installs the operator from the chart's rendered manifests; it runs as a pod and leads", async () => {
    const t = Date.now();
    operator = await installOperator(cluster);
    timings.operator = { install: seconds(t) };
    const pods = await k.json<{ items: PodView[] }>(["-n", operator.namespace, "get", "pods", "-l", "app.kubernetes.io/name=nix-image-operator"]);
    expect(pods.items).toHaveLength(1);
    expect(pods.items[0]!.status.containerStatuses?.[0]?.ready).toBe(true);
    expect(pods.items[0]!.spec.containers[0]!.image).toBe(cluster.images.operator.reference);
    await waitFor(
      "the operator to hold its leader lease",
      async () => {
        const lease = await k.get<{ spec?: { holderIdentity?: string } }>("lease", "nio-nix-image-operator", operator!.namespace);
        return lease?.spec?.holderIdentity ? lease : undefined;
      },
      { timeoutMs: 60_000 },
    );
  });

  it("first build: the opted-in Deployment's new pod runs the pushed digest and serves the flake's text", async () => {
    repo = await createFlakeRepo({ baseUrl: git.baseUrl, root: git.root, stop: async () => {} }, "web", fixture, workDir);
    expect(await repo.read("message.txt")).toBe(message(1));
    await k.kubectl(["create", "namespace", ns]);
    // The workload asks for the image (consent lives on the workload); until the first build it
    // runs a placeholder that never becomes ready.
    // A signing key Secret: the push step (only it mounts the Secret) signs the image and attestations.
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const keyFile = join(workDir, "cosign.key");
    writeFileSync(keyFile, key.privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });
    writeFileSync(join(workDir, "cosign.pub"), key.publicKey.export({ format: "pem", type: "spki" }));
    await k.kubectl(["-n", ns, "create", "secret", "generic", "cosign", `--from-file=cosign.key=${keyFile}`]);
    const example = {
      namespace: ns,
      imageName,
      flakeUrl: repo.flakeUrl,
      repository,
      placeholderImage: cluster.images.pause.reference,
      signingKeySecret: "cosign",
    };
    await k.apply(webDeploymentYaml(example));
    const applied = Date.now();
    await k.apply(webNixImageYaml(example));
    const job = await waitFor("builder Job 1", () => k.get("job", `${imageName}-build-1`, ns), { timeoutMs: 60_000, describe: describeImage });
    expect(job).toBeDefined();
    const jobSeen = Date.now();
    const build = await buildFinished(1);
    const finished = Date.now();
    expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");
    const image = (await niximage())!.status!.latestImage!;
    expect(image).toBe(`${repository}@${build.digest}`);
    // Three store paths, three layers, all new.
    expect(build.layers).toMatchObject({ pushed: 3, skipped: 0 });
    expect(build.durations?.build, "status.lastBuild.durations has the Nix phase").toBeTypeOf("number");
    const pod = await serving(image, message(1));
    timings.build1 = {
      appliedToJob: seconds(applied, jobSeen),
      job: seconds(Date.parse(build.startTime!), Date.parse(build.completionTime!)),
      ...(await podPhases(build.job)),
      ...prefixed(build.durations),
      appliedToSucceeded: seconds(applied, finished),
    };
    timings.rollout1 = { succeededToServing: seconds(finished), appliedToServing: seconds(applied) };
    expect(await httpText(`http://${pod.status.podIP}:8080/about.txt`)).toContain("built by nix-image-operator");

    // Its proof, checked by the real cosign and oras: signature, signed SBOM + provenance, referrers.
    const sha = expect.stringMatching(/^sha256:[0-9a-f]{64}$/);
    expect(build.attestations).toEqual({ sbom: sha, provenance: sha, signature: sha, attestations: sha });
    const env = { ...process.env, HOME: workDir };
    const offline = ["--insecure-ignore-tlog=true", "--allow-http-registry=true", "--allow-insecure-registry=true"];
    const pub = join(workDir, "cosign.pub");
    await execFileAsync(supplyChainTool("cosign"), ["verify", "--key", pub, ...offline, image], { env });
    for (const type of ["slsaprovenance1", "cyclonedx"]) {
      await execFileAsync(supplyChainTool("cosign"), ["verify-attestation", "--key", pub, "--type", type, ...offline, image], { env, maxBuffer: 64 << 20 });
    }
    const discovered = JSON.parse((await execFileAsync(supplyChainTool("oras"), ["discover", "--plain-http", "--format", "json", image], { env })).stdout) as {
      referrers?: { artifactType: string; digest: string }[];
    };
    expect((discovered.referrers ?? []).map((r) => r.digest).sort()).toEqual([build.attestations!.sbom, build.attestations!.provenance].sort());
  });

  it("a commit changing the text: the operator rebuilds on the warm store (one new layer), rolls out, the new text is served", async () => {
    const first = (await niximage())!.status!.lastBuild!;
    const committed = Date.now();
    await repo.commit({ "message.txt": message(2) }, "change the text");
    const job = await waitFor("builder Job 2 (revision polling, interval 30s)", () => k.get("job", `${imageName}-build-2`, ns), {
      timeoutMs: 3 * 60_000,
      describe: describeImage,
    });
    expect(job).toBeDefined();
    const jobSeen = Date.now();
    const build = await buildFinished(2);
    const finished = Date.now();
    expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");
    // Only web-1.0 changed: one new layer (plus config and manifest); busybox and assets are skipped.
    expect(build.layers).toMatchObject({ pushed: 1, skipped: 2 });
    // The warm store: web-assets (~10 s to build) is not built again.
    expect(first.durations!.build!).toBeGreaterThan(10);
    expect(build.durations!.build!).toBeLessThan(first.durations!.build! / 2);
    const image = (await niximage())!.status!.latestImage!;
    expect(image).toBe(`${repository}@${build.digest}`);
    await serving(image, message(2));
    timings.build2 = {
      commitToJob: seconds(committed, jobSeen),
      job: seconds(Date.parse(build.startTime!), Date.parse(build.completionTime!)),
      ...(await podPhases(build.job)),
      ...prefixed(build.durations),
      commitToSucceeded: seconds(committed, finished),
    };
    timings.rollout2 = { succeededToServing: seconds(finished), commitToServing: seconds(committed) };
  });

  it("a failing build keeps the old pod serving", async () => {
    const before = await webPods();
    expect(before).toHaveLength(1);
    const image = (await niximage())!.status!.latestImage!;
    const flake = await repo.read("flake.nix");
    const broken = flake.replace("# @build-step@", 'echo "web: error: intentional e2e build failure" >&2; exit 3');
    expect(broken).not.toBe(flake);
    const committed = Date.now();
    await repo.commit({ "flake.nix": broken, "message.txt": message(3) }, "break the build");
    const build = await buildFinished(3);
    expect(build.result).toBe("Failed");
    expect(build.failure?.step).toBe("build");
    expect(build.failure?.message).toContain("intentional e2e build failure");
    timings.failedBuild = {
      commitToFailed: seconds(committed),
      job: seconds(Date.parse(build.startTime!), Date.parse(build.completionTime ?? new Date().toISOString())),
    };
    const status = (await niximage())!.status!;
    expect(status.latestImage).toBe(image);
    // Same pod, same image, still serving version 2.
    const after = await serving(image, message(2), 30_000);
    expect(after.metadata.name).toBe(before[0]!.metadata.name);
    const deployment = await k.get<{ spec: { template: { spec: { containers: { image: string }[] } } } }>("deployment", "web", ns);
    expect(deployment!.spec.template.spec.containers[0]!.image).toBe(image);
  });

  it("deleting the NixImage leaves the workload running", async () => {
    const before = await webPods();
    const image = (await niximage())!.status!.latestImage!;
    await k.kubectl(["-n", ns, "delete", "niximage", imageName, "--wait=true", "--timeout=120s"], undefined, 150_000);
    expect(await niximage()).toBeUndefined();
    // Give the operator and the garbage collector time to act on the deletion.
    await waitFor(
      "the builder Jobs to be garbage-collected",
      async () => {
        const jobs = await k.json<{ items: unknown[] }>(["-n", ns, "get", "jobs"]);
        return jobs.items.length === 0 ? true : undefined;
      },
      { timeoutMs: 60_000 },
    );
    // For a while after the deletion: the same Deployment, image and pod, still serving.
    const watchUntil = Date.now() + 15_000;
    while (Date.now() < watchUntil) {
      const deployment = await k.get<{ spec: { template: { spec: { containers: { image: string }[] } } } }>("deployment", "web", ns);
      expect(deployment, "the Deployment still exists").toBeDefined();
      expect(deployment!.spec.template.spec.containers[0]!.image).toBe(image);
      const after = await serving(image, message(2), 30_000);
      expect(after.metadata.name).toBe(before[0]!.metadata.name);
      await new Promise((r) => setTimeout(r, 2000));
    }
  });
});

interface ContainerState {
  name: string;
  state?: { terminated?: { startedAt?: string; finishedAt?: string; exitCode?: number } };
}

/** Where the time of a build went, from its pod: image pulls + scheduling, then each step. */
async function podPhases(job: string): Promise<Record<string, number>> {
  const pods = await k.json<{
    items: { metadata: { creationTimestamp: string }; status: { initContainerStatuses?: ContainerState[]; containerStatuses?: ContainerState[] } }[];
  }>(["-n", ns, "get", "pods", "-l", `job-name=${job}`]);
  const pod = pods.items[0];
  if (!pod) return {};
  const out: Record<string, number> = {};
  const steps = [...(pod.status.initContainerStatuses ?? []), ...(pod.status.containerStatuses ?? [])];
  const first = steps[0]?.state?.terminated?.startedAt;
  if (first) out["pod.createdToFirstStep"] = seconds(Date.parse(pod.metadata.creationTimestamp), Date.parse(first));
  for (const step of steps) {
    const t = step.state?.terminated;
    if (t?.startedAt && t.finishedAt) out[`pod.${step.name}`] = seconds(Date.parse(t.startedAt), Date.parse(t.finishedAt));
  }
  return out;
}

function prefixed(durations: Record<string, number> | undefined): Record<string, number> {
  return Object.fromEntries(Object.entries(durations ?? {}).map(([key, v]) => [`status.${key}`, v]));
}
