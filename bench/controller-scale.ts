// The controller's footprint at scale, measured as its own process exactly as the pod runs it:
// `node <the chart's NODE_OPTIONS> dist/cli/main.js controller --config <the chart's config.yaml>`
// (leader election on, all namespaces), against the real test bed, with N NixImages in the steady
// state of a finished build, D unrelated Deployments (a few KB of pod template each) and S
// unrelated Secrets. Prints resident memory and its high-water mark (/proc/<pid>/status VmRSS,
// VmHWM) after start (ready), after the first full reconcile and after an idle window; the time to
// all reconciled; reconcile p50/p99 from the controller's own histogram; and, over the idle
// window, the controller's API requests (its rest_client_requests_total when it has one, else
// the API server's request counter, which also counts kube-controller-manager) and writes.
//
// Run by hand (not in CI):
//   node bench/controller-scale.ts [--images 1000] [--deployments 1000] [--secrets 2000] [--idle 60]
//                                  [--root DIR] [--no-build] [--resyncs 10 --resync-period 1s]
// --resyncs R is reliability case 9 (docs/reliability.md) at scale: with `resyncPeriod` set to
// --resync-period, the measured run waits for R x images reconciles instead of an idle window and
// prints the writes in that time (must be 0: by the controller's own counter, and by the API
// server's counter of writes to the kinds the operator writes) and how long the resyncs took.
// --root runs another checkout's dist/cli/main.js (e.g. a worktree of an older commit, for a
// before/after); it is built with `npm run build` there unless --no-build. A priming run first
// brings the NixImages to the status the controller writes; the measured runs then start from that
// steady state (as after a restart). --try="FLAGS" (repeatable) measures other node flags.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { nixImageCrd } from "../src/api/crd.ts";
import { makeNixImageSchema } from "../src/api/niximage.ts";
import { parseOperatorConfig } from "../src/config/operator-config.ts";
import { builderHash, specHash } from "../src/controller/build-inputs.ts";
import { defaultFlakeRefPolicy } from "../src/flake/flake-ref-policy.ts";
import { kubeRequestJson } from "../src/runtime/kube-request.ts";
import { repoRoot, startTestBed } from "../test/support/global-setup.ts";
import { freePort, run } from "../test/support/process.ts";

const { values: args } = parseArgs({
  options: {
    images: { type: "string", default: "1000" },
    deployments: { type: "string", default: "1000" },
    secrets: { type: "string", default: "2000" },
    idle: { type: "string", default: "60" },
    resyncs: { type: "string", default: "0" },
    "resync-period": { type: "string", default: "1s" },
    root: { type: "string", default: repoRoot },
    "no-build": { type: "boolean", default: false },
    /** Instead of the chart's node flags: one measured run per --try (flags, and NAME=value words for the environment). */
    try: { type: "string", multiple: true, default: [] },
  },
});
const N = Number(args.images);
const D = Number(args.deployments);
const S = Number(args.secrets);
const idleMs = Number(args.idle) * 1000;
const resyncs = Number(args.resyncs);
const root = args.root;
const variants = args.try;
const MiB = 2 ** 20;

if (!args["no-build"]) {
  const t = performance.now();
  await run("npm", ["run", "build"], { cwd: root, timeoutMs: 300_000 });
  console.log(`built ${root}/dist in ${((performance.now() - t) / 1000).toFixed(1)}s`);
}

const bed = await startTestBed();
const work = await mkdtemp(join(tmpdir(), "nio-scale-"));
let child: ReturnType<typeof spawn> | undefined;
let logFile: string | undefined;
let configFile = "";
/** The controller container's literal env values from the chart (NODE_OPTIONS, NIO_NODE_FLAGS, ...). */
let chartEnv: Record<string, string> = {};
const logs: Buffer[] = [];
try {
  const kc = new KubeConfig();
  kc.loadFromFile(bed.bed.kube.kubeconfig);
  const kubectl = (argv: string[], input?: string) => run(bed.bed.kube.kubectl, ["--kubeconfig", bed.bed.kube.kubeconfig, ...argv], { input });
  await kubectl(["apply", "--server-side", "-f", "-"], JSON.stringify(nixImageCrd({ flakeRefPolicy: defaultFlakeRefPolicy })));
  // `kubectl wait` fails when it looks before the CRD has any status: poll instead.
  for (let i = 0; ; i++) {
    const { stdout } = await kubectl(["get", "crd", "niximages.niximage.io", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"]);
    if (stdout.trim() === "True") break;
    if (i > 300) throw new Error("the NixImage CRD was not established within 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  const release = "nio";
  const system = "nio-system";
  for (const ns of [system, "bench", "unrelated"]) await kubectl(["create", "namespace", ns]);

  // The chart as users install it: its config.yaml and the controller container's NODE_OPTIONS.
  const { stdout: rendered } = await run(bed.bed.kube.helm, [
    "template",
    release,
    join(root, "charts/nix-image-operator"),
    "--namespace",
    system,
    "--kube-version",
    bed.bed.kube.version,
  ]);
  const docs = parseAllDocuments(rendered).map((d) => d.toJS() as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any
  const configYaml = docs.find((d) => d?.kind === "ConfigMap" && d.data?.["config.yaml"])!.data["config.yaml"] as string;
  const container = docs.find((d) => d?.kind === "Deployment")!.spec.template.spec.containers[0];
  chartEnv = Object.fromEntries(
    ((container.env ?? []) as { name: string; value?: string }[]).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]),
  );
  const resources = JSON.stringify(container.resources ?? {});
  configFile = join(work, "config.yaml");
  const configObject = parseAllDocuments(configYaml)[0]!.toJS() as Record<string, unknown>;
  if (resyncs > 0) configObject.resyncPeriod = args["resync-period"];
  await writeFile(configFile, JSON.stringify(configObject));
  const config = parseOperatorConfig(configObject);
  console.log(`chart: env ${JSON.stringify(chartEnv)}, resources ${resources}`);

  // The objects, created in parallel (16 at a time).
  const t0 = performance.now();
  const schema = makeNixImageSchema(defaultFlakeRefPolicy);
  const pool = async (count: number, make: (i: number) => Promise<unknown>) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < count) await make(next++);
      }),
    );
  };
  await pool(N, async (i) => {
    const body = {
      apiVersion: "niximage.io/v1alpha1",
      kind: "NixImage",
      metadata: { name: `app-${i}`, namespace: "bench" },
      spec: { flake: `github:acme/app-${i}`, image: { repository: `registry.example.com/acme/app-${i}` } },
    };
    const created = await kubeRequestJson<{ metadata: { generation: number } }>(kc, "POST", "/apis/niximage.io/v1alpha1/namespaces/bench/niximages", { body });
    const parsed = schema.parse({ ...body, metadata: { ...body.metadata, generation: created.metadata.generation } });
    const digest = `sha256:${i.toString(16).padStart(64, "0")}`;
    await kubeRequestJson(kc, "PATCH", `/apis/niximage.io/v1alpha1/namespaces/bench/niximages/app-${i}/status`, {
      contentType: "application/merge-patch+json",
      body: {
        status: {
          observedGeneration: created.metadata.generation,
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
  });
  // A realistic pod template of a few KB: env, probes, resources, annotations.
  const template = (i: number) => ({
    metadata: { labels: { app: `svc-${i}` }, annotations: { "example.com/notes": "x".repeat(1500) } },
    spec: {
      containers: [
        {
          name: "main",
          image: `registry.example.com/team/svc-${i}:1.0.${i}`,
          env: Array.from({ length: 25 }, (_, k) => ({ name: `SETTING_${k}`, value: `value-${k}-${"v".repeat(20)}` })),
          ports: [{ containerPort: 8080, name: "http" }],
          resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "256Mi" } },
          readinessProbe: { httpGet: { path: "/ready", port: "http" }, periodSeconds: 10 },
          livenessProbe: { httpGet: { path: "/live", port: "http" }, periodSeconds: 20 },
        },
      ],
    },
  });
  await pool(D, (i) =>
    kubeRequestJson(kc, "POST", "/apis/apps/v1/namespaces/unrelated/deployments", {
      body: {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: `svc-${i}`, labels: { app: `svc-${i}` } },
        spec: { replicas: 0, selector: { matchLabels: { app: `svc-${i}` } }, template: template(i) },
      },
    }),
  );
  await pool(S, (i) =>
    kubeRequestJson(kc, "POST", "/api/v1/namespaces/unrelated/secrets", {
      body: { apiVersion: "v1", kind: "Secret", metadata: { name: `secret-${i}` }, stringData: { token: "t".repeat(512) } },
    }),
  );
  console.log(`created ${N} NixImages, ${D} Deployments, ${S} Secrets in ${((performance.now() - t0) / 1000).toFixed(1)}s`);

  // First a priming run, so the measured runs start from the steady state the controller itself
  // wrote (conditions, observedGeneration): a restart, as after a rollout or a failover.
  await runController("priming", { flags: [], env: chartEnv }, false);
  if (variants.length === 0) await runController("measured", { flags: [], env: chartEnv }, true);
  for (const variant of variants) {
    const words = variant.split(/\s+/).filter(Boolean);
    const env = Object.fromEntries(words.filter((w) => /^[A-Z_]+=/.test(w)).map((w) => [w.slice(0, w.indexOf("=")), w.slice(w.indexOf("=") + 1)]));
    await runController("measured", { flags: words.filter((w) => !/^[A-Z_]+=/.test(w)), env }, true);
  }
} finally {
  if (child && child.exitCode === null) {
    child.kill("SIGTERM");
    await new Promise((r) => child!.once("exit", r));
  }
  if (logFile) await writeFile(logFile, Buffer.concat(logs)).then(() => console.log(`controller log: ${logFile}`));
  await bed.stop();
}

/**
 * One run of the controller as the pod runs it: `node <flags> dist/cli/main.js controller ...` with `env`
 * (the chart's env, or a --try variant's).
 */
async function runController(label: string, launch: { flags: string[]; env: Record<string, string> }, idle: boolean): Promise<void> {
  const { flags, env: envWords } = launch;
  const options = [...flags, ...Object.entries(envWords).map(([k, v]) => `${k}=${v}`)].join(" ");
  console.log(`--- ${label} run: ${options || "(no flags)"}`);
  const port = await freePort();
  logFile = join(work, `controller-${label}.log`);
  logs.length = 0;
  const started = performance.now();
  child = spawn(
    process.execPath,
    [
      ...flags,
      join(root, "dist/cli/main.js"),
      "controller",
      "--config",
      configFile,
      "--kubeconfig",
      bed.bed.kube.kubeconfig,
      "--metrics-address",
      `127.0.0.1:${port}`,
    ],
    { env: { PATH: process.env.PATH, HOME: work, NODE_ENV: "production", POD_NAME: "bench", ...envWords }, stdio: ["ignore", "pipe", "pipe"] },
  );
  const running = child;
  running.stdout!.on("data", (b: Buffer) => logs.push(b));
  running.stderr!.on("data", (b: Buffer) => logs.push(b));
  const pid = running.pid!;
  const memory = async () => {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  };
  const show = (m: { rss: number; hwm: number }) => `RSS ${(m.rss / MiB).toFixed(1)} MiB, high-water ${(m.hwm / MiB).toFixed(1)} MiB`;
  const get = async (path: string) => {
    try {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: res.status, text: await res.text() };
    } catch {
      return { status: 0, text: "" };
    }
  };
  const waitUntil = async (what: string, ok: () => Promise<boolean>, timeoutMs = 600_000) => {
    const t = performance.now();
    while (!(await ok())) {
      if (running.exitCode !== null)
        throw new Error(`controller exited (${running.exitCode}) while waiting for ${what}:\n${Buffer.concat(logs).toString().slice(-3000)}`);
      if (performance.now() - t > timeoutMs) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  await waitUntil("/readyz", async () => (await get("/readyz")).status === 200);
  const ready = performance.now() - started;
  const afterStart = await memory();
  console.log(`after start (ready in ${(ready / 1000).toFixed(2)}s): ${show(afterStart)}`);

  let metrics = "";
  await waitUntil(`${N} reconciles and an empty queue`, async () => {
    metrics = (await get("/metrics")).text;
    return sample(metrics, "controller_reconcile_total") >= N && sample(metrics, "workqueue_depth") === 0 && sample(metrics, "controller_active_workers") === 0;
  });
  const allReconciled = performance.now() - started;
  const afterFirst = await memory();
  console.log(`after the first full reconcile (all ${N} reconciled ${(allReconciled / 1000).toFixed(2)}s after start): ${show(afterFirst)}`);
  // Let follow-ups of the first pass (status writes come back as events) settle.
  let last = -1;
  await waitUntil("a quiet queue", async () => {
    metrics = (await get("/metrics")).text;
    const total = sample(metrics, "controller_reconcile_total");
    const quiet = total === last && sample(metrics, "workqueue_depth") === 0 && sample(metrics, "controller_active_workers") === 0;
    last = total;
    if (!quiet) await new Promise((r) => setTimeout(r, 1000));
    return quiet;
  });
  const firstPassWrites = sample(metrics, "niximage_api_writes_total");
  const reconciles = sample(metrics, "controller_reconcile_total");
  const p50 = quantile(metrics, 0.5) * 1000;
  const p99 = quantile(metrics, 0.99) * 1000;
  console.log(
    `reconcile latency over ${reconciles} reconciles: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms; writes in the first pass: ${firstPassWrites}`,
  );

  if (idle && resyncs > 0) {
    // Case 9: R resyncs of N unchanged NixImages, 0 writes.
    const before = { metrics, api: await apiserverRequests() };
    const t = performance.now();
    await waitUntil(`${resyncs} resyncs (${resyncs * N} reconciles)`, async () => {
      metrics = (await get("/metrics")).text;
      return sample(metrics, "controller_reconcile_total") - reconciles >= resyncs * N;
    });
    const resyncSeconds = (performance.now() - t) / 1000;
    const after = { metrics: (await get("/metrics")).text, api: await apiserverRequests() };
    const own = sample(after.metrics, "niximage_api_writes_total") - sample(before.metrics, "niximage_api_writes_total");
    const done = sample(after.metrics, "controller_reconcile_total") - reconciles;
    const writeVerbs = new Set(["POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE", "DELETECOLLECTION"]);
    const operatorKinds =
      /^(niximage\.io\/niximages|batch\/jobs|apps\/(deployments|statefulsets|daemonsets)|batch\/cronjobs|persistentvolumeclaims|events|pods|networkpolicies|networking\.k8s\.io\/networkpolicies|events\.k8s\.io\/events)(\/|$)/;
    // Workload and Job status is kube-controller-manager's to write, never the operator's.
    const seen = [...after.api.by]
      .map(([key, n]) => [key, n - (before.api.by.get(key) ?? 0)] as const)
      .filter(
        ([key, n]) =>
          n > 0 && writeVerbs.has(key.split(" ")[0]!) && operatorKinds.test(key.split(" ")[1]!) && !/^(apps|batch)\/[a-z]+\/status$/.test(key.split(" ")[1]!),
      );
    const seenWrites = seen.reduce((a, [, n]) => a + n, 0);
    console.log(
      `case 9: ${resyncs} resyncs of ${N} unchanged NixImages (resyncPeriod ${args["resync-period"]}): ${done} reconciles in ${resyncSeconds.toFixed(1)}s; ` +
        `writes by the controller (niximage_api_writes_total): ${own}; writes to the operator's kinds seen by the API server: ${seenWrites}`,
    );
    for (const [key, n] of seen) console.log(`  ${n}  ${key}`);
    const resyncMemory = await memory();
    console.log(
      `SUMMARY case9 images=${N} resyncs=${resyncs} resync_period=${args["resync-period"]} reconciles=${done} seconds=${resyncSeconds.toFixed(1)} ` +
        `controller_writes=${own} apiserver_writes=${seenWrites} first_pass_writes=${firstPassWrites} rss_mib=${(resyncMemory.rss / MiB).toFixed(1)} hwm_mib=${(resyncMemory.hwm / MiB).toFixed(1)}`,
    );
  } else if (idle) {
    const before = { metrics, api: await apiserverRequests() };
    await new Promise((r) => setTimeout(r, idleMs));
    const after = { metrics: (await get("/metrics")).text, api: await apiserverRequests() };
    const perMinute = (n: number) => ((n * 60_000) / idleMs).toFixed(1);
    const writes = sample(after.metrics, "niximage_api_writes_total") - sample(before.metrics, "niximage_api_writes_total");
    const idleMemory = await memory();
    const heap = sample(after.metrics, "nodejs_heap_used_bytes");
    console.log(`after an idle window of ${idleMs / 1000}s: ${show(idleMemory)}${heap > 0 ? `; V8 heap in use ${(heap / MiB).toFixed(1)} MiB` : ""}`);
    const own = sample(after.metrics, "rest_client_requests_total") - sample(before.metrics, "rest_client_requests_total");
    const ownText = /^rest_client_requests_total/m.test(after.metrics) ? `by the controller ${perMinute(own)}/min; ` : "";
    console.log(
      `idle: ${writes} writes (${perMinute(writes)}/min); API requests ${ownText}seen by the API server (all clients) ${perMinute(after.api.total - before.api.total)}/min`,
    );
    const deltas = [...after.api.by].map(([key, n]) => [key, n - (before.api.by.get(key) ?? 0)] as const).filter(([, n]) => n > 0);
    for (const [key, n] of deltas.sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`  ${perMinute(n)}/min  ${key}`);
    console.log(
      `SUMMARY images=${N} deployments=${D} secrets=${S} options="${options}" ready_s=${(ready / 1000).toFixed(2)} all_reconciled_s=${(allReconciled / 1000).toFixed(2)} ` +
        `rss_start_mib=${(afterStart.rss / MiB).toFixed(1)} rss_first_mib=${(afterFirst.rss / MiB).toFixed(1)} rss_idle_mib=${(idleMemory.rss / MiB).toFixed(1)} ` +
        `hwm_mib=${(idleMemory.hwm / MiB).toFixed(1)} p50_ms=${p50.toFixed(1)} p99_ms=${p99.toFixed(1)} idle_writes=${writes} idle_requests_per_min=${ownText ? perMinute(own) : "n/a"}`,
    );
  }
  running.kill("SIGTERM");
  await new Promise((r) => running.once("exit", r));
  await writeFile(logFile, Buffer.concat(logs));
}

function sample(text: string, name: string): number {
  return [...text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, "gm"))].reduce((a, m) => a + Number(m[2]), 0);
}

/** Reconcile latency from the controller's histogram (linear inside a bucket). */
function quantile(metrics: string, q: number): number {
  const buckets = [...metrics.matchAll(/^controller_reconcile_time_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$/gm)].map((m) => ({
    le: m[1] === "+Inf" ? Number.POSITIVE_INFINITY : Number(m[1]),
    count: Number(m[2]),
  }));
  const total = buckets.at(-1)?.count ?? 0;
  let previous = { le: 0, count: 0 };
  for (const b of buckets) {
    if (b.count >= q * total) {
      if (!Number.isFinite(b.le)) return previous.le;
      return previous.le + ((q * total - previous.count) / Math.max(1, b.count - previous.count)) * (b.le - previous.le);
    }
    previous = b;
  }
  return Number.NaN;
}

/** The API server's request counter: the total, and per verb/resource (to see who asks). */
async function apiserverRequests(): Promise<{ total: number; by: Map<string, number> }> {
  const res = await run(bed.bed.kube.kubectl, ["--kubeconfig", bed.bed.kube.kubeconfig, "get", "--raw", "/metrics"]);
  const by = new Map<string, number>();
  for (const m of res.stdout.matchAll(/^apiserver_request_total\{([^}]*)\} (\S+)$/gm)) {
    const label = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(m[1]!)?.[1] ?? "";
    const key = `${label("verb")} ${label("group") ? `${label("group")}/` : ""}${label("resource")}${label("subresource") ? `/${label("subresource")}` : ""}`;
    by.set(key, (by.get(key) ?? 0) + Number(m[2]));
  }
  return { total: sample(res.stdout, "apiserver_request_total"), by };
}
