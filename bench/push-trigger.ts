// Commit -> builder Job created, with the forge webhook vs with polling only (issue 14), on the
// test bed (kube-apiserver, kube-controller-manager, git server) with the controller in-process.
// Each run: a commit is pushed to the git server; in webhook mode a signed GitHub push delivery
// (the documented payload shape) is POSTed right after, as a forge does; the clock stops when the
// builder Job for that commit exists. Builder pods do not run here: the bench finishes each pod
// like the integration harness does, so the next commit can build.
//
// Usage: node bench/push-trigger.ts [--runs 5] [--interval 30s] [--modes webhook,polling]
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { KubeConfig, type V1Job, type V1Pod } from "@kubernetes/client-node";
import { pino } from "pino";
import { nixImageCrd } from "../src/api/crd.ts";
import { parseOperatorConfig } from "../src/config/operator-config.ts";
import { startOperator } from "../src/controller/operator.ts";
import { defaultFlakeRefPolicy } from "../src/flake/flake-ref-policy.ts";
import { kubeRequestJson } from "../src/runtime/kube-request.ts";
import { hmacSha256Hex } from "../src/webhook/webhook-signature.ts";
import { createGitRepo, minimalFlake } from "../test/support/git-fixtures.ts";
import { startTestBed } from "../test/support/global-setup.ts";
import { run } from "../test/support/process.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "5" }, interval: { type: "string", default: "30s" }, modes: { type: "string", default: "webhook,polling" } },
});
const runs = Number(values.runs);
const secret = randomBytes(32).toString("hex");
const running = await startTestBed();
const bed = running.bed;
try {
  const kc = new KubeConfig();
  kc.loadFromFile(bed.kube.kubeconfig);
  const kubectl = (args: string[], input?: string) => run(bed.kube.kubectl, ["--kubeconfig", bed.kube.kubeconfig, ...args], { input });
  const flakeRefPolicy = {
    ...defaultFlakeRefPolicy,
    allowedSchemes: [...defaultFlakeRefPolicy.allowedSchemes, "git+http"],
    allowedAddressRanges: ["127.0.0.0/8"],
  };
  await kubectl(["apply", "--server-side", "-f", "-"], JSON.stringify(nixImageCrd({ flakeRefPolicy })));
  // Polled: right after apply the CRD has no conditions yet, and `kubectl wait` fails on that.
  const established = () =>
    kubectl(["get", "crd", "niximages.niximage.io", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"]).then(
      (r) => r.stdout.trim() === "True",
      () => false,
    );
  while (!(await established())) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const secretFile = join(await mkdtemp(join(bed.tmpDir, "hook-")), "secret");
  await writeFile(secretFile, secret);
  const payload = JSON.parse(await readFile(new URL("../test/fixtures/webhooks/github-push.json", import.meta.url), "utf8")) as Record<string, unknown>;

  const results: Record<string, number[]> = {};
  for (const mode of values.modes!.split(",") as ("webhook" | "polling")[]) {
    const namespace = `bench-${mode}`;
    await kubectl(["create", "namespace", namespace]);
    // Builder pods need the namespace's default ServiceAccount (kube-controller-manager makes it);
    // a Job created before it exists backs off for a long time.
    while (!(await kubeRequestJson(kc, "GET", `/api/v1/namespaces/${namespace}/serviceaccounts/default`).catch(() => undefined))) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const repo = await createGitRepo(minimalFlake({ marker: mode }), { prefix: `trigger-${mode}`, bed });
    const config = parseOperatorConfig({
      namespaces: [namespace],
      leaderElection: { enabled: false },
      flakeRefPolicy,
      logLevel: "warn",
      builder: { nixImage: "nix.test/nix:1", pushImage: "operator.test/nio:1" },
      webhook: { enabled: mode === "webhook", address: "127.0.0.1:0", secretFile },
    });
    const operator = await startOperator({ kc, config, logger: pino({ level: process.env.LOG_LEVEL ?? "warn" }) });
    const interval = mode === "webhook" ? "1h" : values.interval!;
    await kubeRequestJson(kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
      body: {
        apiVersion: "niximage.io/v1alpha1",
        kind: "NixImage",
        metadata: { name: "web" },
        spec: { flake: repo.flakeUrl, triggers: { interval }, image: { repository: "127.0.0.1:5000/bench/web" } },
      },
    });
    console.log(`${mode}: waiting for the first build`);
    await finishBuild(namespace, "web-build-1", repo.rev);
    results[mode] = [];
    for (let i = 0; i < runs; i++) {
      const before = repo.rev;
      const rev = await repo.commit({ "message.txt": `${mode} ${i}` });
      const t0 = performance.now();
      if (mode === "webhook") {
        const body = Buffer.from(
          JSON.stringify({
            ...payload,
            ref: `refs/heads/${repo.branch}`,
            before,
            after: rev,
            repository: { ...(payload.repository as object), full_name: `bench/${repo.name}`, clone_url: repo.httpUrl, default_branch: repo.branch },
          }),
        );
        const res = await fetch(`http://127.0.0.1:${operator.webhook!.port}/webhook`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "x-github-event": "push",
            "x-github-delivery": randomBytes(8).toString("hex"),
            "x-hub-signature-256": `sha256=${hmacSha256Hex(secret, body)}`,
          },
          body,
        });
        const answer = await res.text();
        if (res.status !== 202 || !answer.includes('"triggered"')) throw new Error(`webhook answered ${res.status}: ${answer}`);
      }
      const job = `web-build-${i + 2}`;
      await waitForJob(namespace, job);
      const seconds = (performance.now() - t0) / 1000;
      results[mode].push(seconds);
      console.log(`${mode} run ${i + 1}: commit -> builder Job ${job} in ${seconds.toFixed(3)} s`);
      await finishBuild(namespace, job, rev);
    }
    await operator.stop();
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  for (const [mode, xs] of Object.entries(results)) {
    console.log(
      `${mode}${mode === "polling" ? ` (interval ${values.interval})` : ""}: median ${median(xs).toFixed(3)} s, min ${Math.min(...xs).toFixed(3)} s, max ${Math.max(...xs).toFixed(3)} s over ${xs.length} commits`,
    );
  }

  async function waitForJob(namespace: string, name: string): Promise<V1Job> {
    for (;;) {
      const job = await kubeRequestJson<V1Job>(kc, "GET", `/apis/batch/v1/namespaces/${namespace}/jobs/${name}`).catch(() => undefined);
      if (job) return job;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Plays the kubelet: the Job's pod succeeds with a push result; the Job controller completes the Job. */
  async function finishBuild(namespace: string, job: string, rev: string): Promise<void> {
    await waitForJob(namespace, job);
    let pod: V1Pod | undefined;
    while (!pod) {
      pod = (await kubeRequestJson<{ items: V1Pod[] }>(kc, "GET", `/api/v1/namespaces/${namespace}/pods?labelSelector=batch.kubernetes.io/job-name%3D${job}`))
        .items[0];
      if (!pod) await new Promise((r) => setTimeout(r, 50));
    }
    const now = new Date().toISOString();
    const done = (name: string, message?: string) => ({
      name,
      ready: false,
      restartCount: 0,
      image: "x",
      imageID: "",
      state: { terminated: { exitCode: 0, reason: "Completed", startedAt: now, finishedAt: now, ...(message ? { message } : {}) } },
    });
    const digest = `sha256:${createDigest(rev)}`;
    const result = JSON.stringify({
      image: `127.0.0.1:5000/bench/web@${digest}`,
      digest,
      tags: [],
      revision: { url: "u", rev },
      layers: { pushed: 1, skipped: 0 },
      bytesPushed: 1,
    });
    await kubeRequestJson(kc, "PATCH", `/api/v1/namespaces/${namespace}/pods/${pod.metadata!.name}/status`, {
      contentType: "application/merge-patch+json",
      body: { status: { phase: "Succeeded", initContainerStatuses: [done("prepare"), done("build")], containerStatuses: [done("push", result)] } },
    });
    for (;;) {
      const j = await kubeRequestJson<V1Job>(kc, "GET", `/apis/batch/v1/namespaces/${namespace}/jobs/${job}`);
      if (j.status?.conditions?.some((c) => c.type === "Complete" && c.status === "True")) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
} finally {
  await running.stop();
}

function createDigest(rev: string): string {
  return (rev + rev).slice(0, 64).padEnd(64, "0");
}
