// Issue 14 on the real single-node cluster: the operator (from the chart, webhook receiver on)
// builds the web example; a commit followed by a signed GitHub push delivery to the receiver
// (the operator pod's webhook port, as a forge reaches it through the Service) rebuilds and rolls
// out without waiting for the poll (interval 1h); a README-only commit ends as Unchanged (nothing
// pushed, no rollout). Commit -> builder Job and commit -> new pod serving per run go to
// <logDir>/push-trigger-timings.json and stderr (figures, no timed assertions); then the same with
// polling only (interval 30s), for comparison. Runs: NIO_E2E_HOOK_RUNS (default 2),
// NIO_E2E_POLL_RUNS (default 1).
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { hmacSha256Hex } from "../../src/webhook/webhook-signature.ts";
import { webDeploymentYaml, webNixImageYaml } from "./support/web-example.ts";
import { createFlakeRepo, type FlakeRepo } from "./support/git.ts";
import { diagnostics, httpText, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";

const { cluster, git, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-hooks";
const imageName = "web";
const repository = `${cluster.registry.host}/e2e/hooks`;
const fixture = join(import.meta.dirname, "fixtures/web");
const secret = randomBytes(32).toString("hex");
const hookRuns = Number(process.env.NIO_E2E_HOOK_RUNS ?? 2);
const pollRuns = Number(process.env.NIO_E2E_POLL_RUNS ?? 1);
const payload = JSON.parse(readFileSync(join(import.meta.dirname, "../fixtures/webhooks/github-push.json"), "utf8")) as Record<string, unknown>;

interface BuildRecord {
  job: string;
  number: number;
  result: string;
  digest?: string;
  layers?: { pushed: number; skipped: number };
  durations?: Record<string, number>;
  failure?: { step: string; message: string };
}
interface NixImageView {
  status?: { latestImage?: string; latestRevision?: { rev?: string }; lastBuild?: BuildRecord };
}
interface PodView {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { containers: { image: string }[] };
  status: { podIP?: string; containerStatuses?: { name: string; ready: boolean; imageID: string }[] };
}

const timings: Record<string, number[]> = { webhookCommitToJob: [], webhookCommitToServing: [], pollingCommitToJob: [], pollingCommitToServing: [] };
let operator: InstalledOperator | undefined;
let repo: FlakeRepo;
let failed = false;
let version = 1;

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});
afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
  // Later files install the operator again; this NixImage must not keep building under them.
  await k
    .kubectl(["-n", ns, "delete", "niximage", imageName, "--ignore-not-found", "--wait=true", "--timeout=120s"], undefined, 150_000)
    .catch(() => undefined);
  const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : undefined);
  const file = join(cluster.logDir, "push-trigger-timings.json");
  writeFileSync(file, JSON.stringify(timings, null, 2) + "\n");
  const lines = Object.entries(timings).map(([name, xs]) => `  ${name.padEnd(24)} median ${median(xs) ?? "-"}  runs ${xs.join(" ")}`);
  process.stderr.write(`\npush-trigger timings (seconds; also in ${file}):\n${lines.join("\n")}\n`);
});

const seconds = (from: number) => Math.round(Date.now() - from) / 1000;
const niximage = () => k.get<NixImageView>("niximage", imageName, ns);
const describeImage = async () => JSON.stringify((await niximage())?.status ?? "no NixImage", null, 2);
const message = (n: number) => `Hello from nix-image-operator, version ${n}\n`;

async function buildFinished(number: number): Promise<BuildRecord> {
  return waitFor(
    `build ${number} to finish`,
    async () => {
      const b = (await niximage())?.status?.lastBuild;
      return b && b.number === number && b.result !== "Running" ? b : undefined;
    },
    { timeoutMs: 12 * 60_000, intervalMs: 500, describe: describeImage },
  );
}

async function serving(image: string, text: string): Promise<PodView> {
  const digest = image.slice(image.indexOf("@") + 1);
  return waitFor(
    `the web pod to run ${image} and serve ${JSON.stringify(text.trim())}`,
    async () => {
      const pods = (await k.json<{ items: PodView[] }>(["-n", ns, "get", "pods", "-l", "app=web"])).items.filter((p) => !p.metadata.deletionTimestamp);
      if (pods.length !== 1) return undefined;
      const pod = pods[0]!;
      const status = pod.status.containerStatuses?.find((c) => c.name === "web");
      if (pod.spec.containers[0]?.image !== image || !status?.ready || !status.imageID.endsWith(digest) || !pod.status.podIP) return undefined;
      return (await httpText(`http://${pod.status.podIP}:8080/message.txt`)) === text ? pod : undefined;
    },
    { timeoutMs: 5 * 60_000, intervalMs: 250 },
  );
}

/** POSTs a signed GitHub push delivery for the repository's master branch to the operator pod's webhook port. */
async function deliver(before: string, after: string): Promise<{ outcome: string; niximages?: number }> {
  const pods = await k.json<{ items: { status: { podIP?: string } }[] }>([
    "-n",
    operator!.namespace,
    "get",
    "pods",
    "-l",
    "app.kubernetes.io/name=nix-image-operator",
  ]);
  const ip = pods.items[0]!.status.podIP!;
  const httpUrl = repo.flakeUrl.replace(/^git\+/, "");
  const body = Buffer.from(
    JSON.stringify({
      ...payload,
      ref: "refs/heads/master",
      before,
      after,
      repository: { ...(payload.repository as object), full_name: `e2e/${repo.name}`, clone_url: httpUrl, html_url: httpUrl, default_branch: "master" },
    }),
  );
  const res = await fetch(`http://${ip}:8081/webhook`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-github-event": "push",
      "x-github-delivery": randomBytes(8).toString("hex"),
      "x-hub-signature-256": `sha256=${hmacSha256Hex(secret, body)}`,
    },
    body,
  });
  expect(res.status).toBe(202);
  return (await res.json()) as { outcome: string; niximages?: number };
}

/** A commit changing the served text (with the webhook: then its push delivery). Returns when the new pod serves it. */
async function changeAndServe(kind: "webhook" | "polling"): Promise<void> {
  const before = repo.rev;
  const number = ((await niximage())!.status!.lastBuild!.number ?? 0) + 1;
  version++;
  const committed = Date.now();
  const rev = await repo.commit({ "message.txt": message(version) }, `version ${version}`);
  if (kind === "webhook") expect(await deliver(before, rev)).toMatchObject({ outcome: "triggered", niximages: 1 });
  await waitFor(`builder Job ${number}`, () => k.get("job", `${imageName}-build-${number}`, ns), {
    timeoutMs: 3 * 60_000,
    intervalMs: 100,
    describe: describeImage,
  });
  timings[`${kind}CommitToJob`]!.push(seconds(committed));
  const build = await buildFinished(number);
  expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");
  await serving(`${repository}@${build.digest}`, message(version));
  timings[`${kind}CommitToServing`]!.push(seconds(committed));
}

describe.sequential("push-triggered builds and the exact no-op on a real cluster", () => {
  it("installs the operator with the webhook receiver; the first build serves", async () => {
    await k.kubectl(["create", "namespace", "nix-image-operator"]).catch(() => undefined);
    await k.kubectl(["-n", "nix-image-operator", "delete", "secret", "nio-nix-image-operator-webhook", "--ignore-not-found"]);
    await k.kubectl(["-n", "nix-image-operator", "create", "secret", "generic", "nio-nix-image-operator-webhook", `--from-literal=secret=${secret}`]);
    operator = await installOperator(cluster, { webhook: true });
    repo = await createFlakeRepo({ baseUrl: git.baseUrl, root: git.root, stop: async () => {} }, "hooked", fixture, workDir);
    await k.kubectl(["create", "namespace", ns]);
    const example = { namespace: ns, imageName, flakeUrl: repo.flakeUrl, repository, placeholderImage: cluster.images.pause.reference, interval: "1h" };
    await k.apply(webDeploymentYaml(example));
    await k.apply(webNixImageYaml(example));
    const build = await buildFinished(1);
    expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");
    await serving(`${repository}@${build.digest}`, message(1));
  });

  it("with the webhook: each commit is built and served without waiting for the hourly poll", async () => {
    for (let i = 0; i < hookRuns; i++) await changeAndServe("webhook");
  });

  it("a README-only commit: Unchanged, nothing pushed, the Deployment not touched, no BuildSucceeded", async () => {
    const before = (await niximage())!.status!;
    const deployment = await k.get<{ metadata: { generation: number } }>("deployment", "web", ns);
    const succeeded = async () =>
      (await k.json<{ items: { reason: string }[] }>(["-n", ns, "get", "events"])).items.filter((e) => e.reason === "BuildSucceeded").length;
    const succeededBefore = await succeeded();
    const prev = repo.rev;
    const rev = await repo.commit({ "README.md": "# web\n\nOnly words changed.\n" }, "README only");
    expect(await deliver(prev, rev)).toMatchObject({ outcome: "triggered" });
    const build = await buildFinished(before.lastBuild!.number + 1);
    expect(build.result).toBe("Unchanged");
    expect(build.layers).toMatchObject({ pushed: 0, skipped: 0 });
    const after = (await niximage())!.status!;
    expect(after.latestImage).toBe(before.latestImage);
    expect(after.latestRevision?.rev).toBe(rev);
    expect((await k.get<{ metadata: { generation: number } }>("deployment", "web", ns))!.metadata.generation).toBe(deployment!.metadata.generation);
    expect(await succeeded()).toBe(succeededBefore);
    const events = (await k.json<{ items: { reason: string }[] }>(["-n", ns, "get", "events"])).items.filter((e) => e.reason === "BuildUnchanged");
    expect(events).toHaveLength(1);
    process.stderr.write(`README-only commit: build ${build.job} Unchanged, layers pushed 0, Nix phase ${build.durations?.build ?? "?"} s\n`);
  });

  it("with polling only (interval 30s), for comparison", async () => {
    await k.kubectl(["-n", ns, "patch", "niximage", imageName, "--type=merge", "-p", '{"spec":{"triggers":{"interval":"30s"}}}']);
    for (let i = 0; i < pollRuns; i++) await changeAndServe("polling");
  });
});
