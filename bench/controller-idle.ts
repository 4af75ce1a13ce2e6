// An idle controller watching N built NixImages on the real test bed: resident memory, time to a
// full resync, and HTTP requests per minute it sends to the API server (counted in-process with
// node:diagnostics_channel, so watches, lists and writes are all seen).
//
// Usage: node bench/controller-idle.ts [images=100] [windowSeconds=60]
import { subscribe } from "node:diagnostics_channel";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import { nixImageCrd } from "../src/api/crd.ts";
import { makeNixImageSchema } from "../src/api/niximage.ts";
import { parseOperatorConfig } from "../src/config/operator-config.ts";
import { builderHash, specHash } from "../src/controller/build-inputs.ts";
import { startOperator } from "../src/controller/operator.ts";
import { defaultFlakeRefPolicy } from "../src/flake/flake-ref-policy.ts";
import { kubeRequestJson } from "../src/runtime/kube-request.ts";
import { startTestBed } from "../test/support/global-setup.ts";
import { run } from "../test/support/process.ts";

const count = Number(process.argv[2] ?? 100);
const windowMs = Number(process.argv[3] ?? 60) * 1000;
const bed = await startTestBed();
try {
  const kc = new KubeConfig();
  kc.loadFromFile(bed.bed.kube.kubeconfig);
  const kubectl = (args: string[], input?: string) => run(bed.bed.kube.kubectl, ["--kubeconfig", bed.bed.kube.kubeconfig, ...args], { input });
  await kubectl(["apply", "--server-side", "-f", "-"], JSON.stringify(nixImageCrd({ flakeRefPolicy: defaultFlakeRefPolicy })));
  await kubectl(["wait", "--for=condition=Established", "crd/niximages.niximage.io"]);
  const namespace = "bench";
  await kubectl(["create", "namespace", namespace]);

  // N NixImages in the steady state of a finished build (status as the controller writes it).
  const config = parseOperatorConfig({ namespaces: [namespace], leaderElection: { enabled: false }, resyncPeriod: "30s", logLevel: "warn" });
  const schema = makeNixImageSchema(defaultFlakeRefPolicy);
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const body = {
      apiVersion: "niximage.io/v1alpha1",
      kind: "NixImage",
      metadata: { name: `app-${i}`, namespace },
      spec: { flake: `github:acme/app-${i}`, image: { repository: `registry.example.com/acme/app-${i}` } },
    };
    const created = await kubeRequestJson<{ metadata: { generation: number } }>(kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
      body,
    });
    const parsed = schema.parse({ ...body, metadata: { ...body.metadata, generation: created.metadata.generation } });
    const digest = `sha256:${i.toString(16).padStart(64, "0")}`;
    await kubeRequestJson(kc, "PATCH", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/app-${i}/status`, {
      contentType: "application/merge-patch+json",
      body: {
        status: {
          buildCount: 1,
          latestImage: `${body.spec.image.repository}@${digest}`,
          lastBuild: {
            job: `app-${i}-build-1`,
            number: 1,
            kind: "Image",
            reasons: ["SpecChanged"],
            result: "Succeeded",
            digest,
            specHash: specHash(parsed),
            builderHash: builderHash(config),
          },
        },
      },
    });
  }
  console.log(`created ${count} built NixImages in ${((performance.now() - t0) / 1000).toFixed(1)}s`);

  let requests = 0;
  const byKind = new Map<string, number>();
  subscribe("http.client.request.start", (message) => {
    const { request } = message as { request: { method: string; path: string } };
    requests++;
    const kind = `${request.method} ${request.path
      .split("?")[0]!
      .replace(/\/namespaces\/[^/]+/, "/namespaces/*")
      .replace(/niximages\/[^/]+/, "niximages/*")}${request.path.includes("watch=") ? " (watch)" : ""}`;
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
  });

  const started = performance.now();
  const operator = await startOperator({ kc, config, logger: pino({ level: "warn" }), metricsPort: 0, metricsHost: "127.0.0.1" });
  await operator.idle();
  const firstSync = performance.now() - started;
  const writesAfterStart = [...operator.writes.values()].reduce((a, b) => a + b, 0);
  console.log(`start + full reconcile of ${count}: ${(firstSync / 1000).toFixed(2)}s, writes: ${writesAfterStart}`);

  // A full resync by hand, timed.
  const r0 = performance.now();
  operator.enqueueAll();
  await operator.idle();
  console.log(`full resync of ${count}: ${((performance.now() - r0) / 1000).toFixed(2)}s`);

  requests = 0;
  byKind.clear();
  global.gc?.();
  const rssBefore = process.memoryUsage().rss;
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  const rss = process.memoryUsage().rss;
  const writes = [...operator.writes.values()].reduce((a, b) => a + b, 0) - writesAfterStart;
  const metrics = operator.metrics.render();
  const reconciles = [...metrics.matchAll(/^controller_reconcile_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
  console.log(
    `idle window ${windowMs / 1000}s (resync every 30s): ${requests} HTTP requests (${((requests * 60_000) / windowMs).toFixed(1)}/min), ${writes} writes, ${reconciles} reconciles in total`,
  );
  for (const [kind, n] of [...byKind].sort((a, b) => b[1] - a[1])) console.log(`  ${n}  ${kind}`);
  console.log(
    `rss ${(rssBefore / 2 ** 20).toFixed(0)} MiB at start of window, ${(rss / 2 ** 20).toFixed(0)} MiB at end; heap used ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`,
  );
  await operator.stop();
} finally {
  await bed.stop();
}
