// npm run demo: the whole story on this machine.
//
//   1. brings up a real single-node Kubernetes cluster (test/e2e/support/cluster.ts: etcd,
//      kube-apiserver, controller-manager, scheduler, kubelet + containerd, a registry)
//   2. installs the operator from the Helm chart (it runs as a pod)
//   3. serves the bundled example flake (test/e2e/fixtures/web: busybox httpd serving a text file)
//      from a local git server and applies a NixImage + an opted-in Deployment
//   4. streams progress: builder pod steps (prepare, Nix build, push), the pushed digest and
//      layers, the rollout, then prints how to reach the app and the kubeconfig; commits to the
//      demo repository keep being built and rolled out until Ctrl-C, which tears it all down.
//
// Without what the cluster needs (root, containerd, kubelet binaries, ...) it says what is
// missing and falls back to a local demo: the same flake built with the local Nix by
// `nix-image-operator build` and pushed to a registry on 127.0.0.1, printing the digest.
//
// Usage: npm run demo [-- --local]
import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { startGitServer } from "../test/support/git-server.ts";
import { prepareNixEnv } from "../test/support/nix-env.ts";
import { killAllDaemonsSync } from "../test/support/process.ts";
import { startRegistry } from "../test/support/registry.ts";
import { webDeploymentYaml, webNixImageYaml } from "../test/e2e/support/web-example.ts";
import { clusterPrerequisites, leftovers, onInterrupt, startCluster, type Cluster } from "../test/e2e/support/cluster.ts";
import { createFlakeRepo, startPodGitServer } from "../test/e2e/support/git.ts";
import { httpText } from "../test/e2e/support/kube.ts";
import { installOperator } from "../test/e2e/support/operator-install.ts";

const repoRoot = fileURLToPath(new URL("../", import.meta.url));
const exampleFlake = join(repoRoot, "test/e2e/fixtures/web");
const demoNamespace = "demo";
const imageName = "web";

// ---- terminal output ------------------------------------------------------------------------------

const tty = process.stdout.isTTY === true;
const color = (code: number) => (s: string) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = color(1);
const dim = color(2);
const green = color(32);
const red = color(31);
const cyan = color(36);
const t0 = Date.now();
const clock = () => dim(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s]`);
let statusText = "";
const ansi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");
const spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
let spin = 0;

function clearStatus(): void {
  if (tty && statusText) process.stdout.write("\r\x1b[2K");
}

function drawStatus(): void {
  if (!tty || !statusText) return;
  // One line, never wrapped: cut the plain text to the terminal width (colours dropped).
  const width = process.stdout.columns || 100;
  const plain = statusText.replace(ansi, "");
  const text = plain.length > width - 3 ? `${plain.slice(0, width - 4)}…` : plain;
  process.stdout.write(`\r\x1b[2K${cyan(spinner[spin++ % spinner.length]!)} ${text}`);
}

/** A permanent line (above the live status line). */
function say(message: string): void {
  clearStatus();
  process.stdout.write(`${clock()} ${message}\n`);
  drawStatus();
}

/** The live status line (a terminal only; elsewhere nothing). */
function status(text: string): void {
  statusText = text;
  drawStatus();
}

const ticker = setInterval(drawStatus, 120);
ticker.unref();

async function phase<T>(title: string, work: Promise<T>): Promise<T> {
  const started = Date.now();
  status(`${title} ...`);
  try {
    const v = await work;
    say(`${green("✓")} ${title} ${dim(`(${((Date.now() - started) / 1000).toFixed(1)}s)`)}`);
    return v;
  } catch (e) {
    say(`${red("✗")} ${title}`);
    throw e;
  } finally {
    status("");
  }
}

// ---- the cluster demo ---------------------------------------------------------------------------

interface BuildRecord {
  job: string;
  number: number;
  result: string;
  digest?: string;
  layers?: { pushed: number; skipped: number };
  bytesPushed?: number;
  durations?: Record<string, number>;
  failure?: { step: string; message: string };
}

interface NixImageStatus {
  latestImage?: string;
  lastBuild?: BuildRecord;
  conditions?: { type: string; status: string; reason: string; message: string }[];
}

function stepState(pod: V1Pod, name: string): string {
  const all = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  const s = all.find((c) => c.name === name)?.state;
  if (s?.terminated) return s.terminated.exitCode === 0 ? "done" : `failed (exit ${s.terminated.exitCode})`;
  if (s?.running) return "running";
  if (s?.waiting) return s.waiting.reason === "PodInitializing" ? "waiting" : (s.waiting.reason ?? "waiting");
  return "pending";
}

const stepTitles: Record<string, string> = {
  prepare: "prepare (seed the Nix store volume)",
  build: "build (nix build in the builder pod)",
  push: "push (layers straight from the store)",
};

/** Polls the NixImage, its builder pods and the Deployment; prints each change once. */
function watchProgress(kc: KubeConfig, onServing: (podIp: string, text: string, image: string) => void): () => void {
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const batch = kc.makeApiClient(BatchV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const seen = new Set<string>();
  const once = (key: string, message: string) => {
    if (seen.has(key)) return;
    seen.add(key);
    say(message);
  };
  let stopped = false;
  let servedImage = "";
  const loop = async () => {
    while (!stopped) {
      try {
        const nimg = (await custom.getNamespacedCustomObject({
          group: "niximage.io",
          version: "v1alpha1",
          namespace: demoNamespace,
          plural: "niximages",
          name: imageName,
        })) as {
          status?: NixImageStatus;
        };
        const st = nimg.status ?? {};
        const reconciling = st.conditions?.find((c) => c.type === "Reconciling" && c.status === "True");
        const jobs = await batch.listNamespacedJob({ namespace: demoNamespace, labelSelector: `niximage.io/image=${imageName}` });
        let live = reconciling ? `${reconciling.reason}: ${reconciling.message}` : "";
        for (const job of jobs.items.sort((a, b) => (a.metadata?.name ?? "").localeCompare(b.metadata?.name ?? ""))) {
          const name = job.metadata!.name!;
          once(`job/${name}`, `${bold("build")} ${name} started ${dim(`(reasons: ${job.metadata?.annotations?.["niximage.io/reasons"] ?? "?"})`)}`);
          const pods = await core.listNamespacedPod({ namespace: demoNamespace, labelSelector: `job-name=${name}` });
          for (const pod of pods.items) {
            for (const step of ["prepare", "build", "push"]) {
              const state = stepState(pod, step);
              if (state === "running") {
                live = `${name}: ${stepTitles[step]}`;
                if (step === "build") {
                  const logTail = await core
                    .readNamespacedPodLog({ namespace: demoNamespace, name: pod.metadata!.name!, container: step, tailLines: 1 })
                    .catch(() => "");
                  const last = String(logTail).trim().split("\n").pop() ?? "";
                  if (last) live += dim(` | ${summariseLogLine(last)}`);
                }
              }
              if (state === "running") once(`${name}/${step}/running`, `  ${step.padEnd(8)} running   ${dim(stepTitles[step] ?? "")}`);
              if (state === "done" || state.startsWith("failed"))
                once(`${name}/${step}/end`, `  ${step.padEnd(8)} ${state === "done" ? green("done") : red(state)}`);
              if (state === "ErrImagePull" || state === "ImagePullBackOff") once(`${name}/${step}/pull`, `  ${step.padEnd(8)} ${red(state)}`);
            }
          }
        }
        const b = st.lastBuild;
        if (b && b.result !== "Running") {
          if (b.result === "Succeeded") {
            const d = b.durations ?? {};
            once(
              `result/${b.number}`,
              `${green("✓")} build ${b.number} pushed ${bold(st.latestImage ?? b.digest ?? "")}\n` +
                `           layers: ${b.layers?.pushed ?? "?"} pushed, ${b.layers?.skipped ?? "?"} already in the registry; ${((b.bytesPushed ?? 0) / 1e6).toFixed(2)} MB sent; ` +
                `nix lock ${d.lock ?? "?"}s, nix build ${d.build ?? "?"}s, push ${d.push ?? "?"}s`,
            );
          } else {
            once(
              `result/${b.number}`,
              `${red("✗")} build ${b.number} failed in step ${b.failure?.step ?? "?"}: ${(b.failure?.message ?? "").trim().split("\n").slice(-3).join(" | ")}\n           the workload keeps its current image`,
            );
          }
        }
        const dep = await apps.readNamespacedDeployment({ namespace: demoNamespace, name: "web" });
        const image = dep.spec?.template.spec?.containers[0]?.image ?? "";
        if (image.includes("@sha256:")) {
          once(`rollout/${image}`, `${bold("rollout")} Deployment ${demoNamespace}/web -> ${image.slice(image.indexOf("@") + 1, image.indexOf("@") + 20)}...`);
          if (servedImage !== image) {
            live ||= `rolling out: ${dep.status?.updatedReplicas ?? 0} updated, ${dep.status?.readyReplicas ?? 0} ready`;
            const pods = await core.listNamespacedPod({ namespace: demoNamespace, labelSelector: "app=web" });
            const pod = pods.items.find(
              (p) => !p.metadata?.deletionTimestamp && p.spec?.containers[0]?.image === image && p.status?.containerStatuses?.[0]?.ready && p.status.podIP,
            );
            const text = pod ? await httpText(`http://${pod.status!.podIP}:8080/message.txt`) : undefined;
            if (pod && text !== undefined) {
              servedImage = image;
              say(`${green("✓")} ${bold("serving")} pod ${pod.metadata!.name} (${pod.status!.podIP}) answers: ${bold(JSON.stringify(text.trim()))}`);
              onServing(pod.status!.podIP!, text, image);
            }
          }
        }
        status(live || (servedImage ? `watching ${demoNamespace}/${imageName} for new commits (polls every 30s)` : "waiting"));
      } catch (e) {
        status(dim(`(watch: ${(e as Error).message.split("\n")[0]})`));
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  void loop();
  return () => {
    stopped = true;
  };
}

function summariseLogLine(line: string): string {
  try {
    const j = JSON.parse(line) as { msg?: string; phase?: string; done?: number; expected?: number };
    return [j.msg, j.phase, j.expected ? `${j.done ?? 0}/${j.expected}` : ""].filter(Boolean).join(" ").slice(0, 80);
  } catch {
    return line.slice(0, 80);
  }
}

async function clusterDemo(): Promise<void> {
  say(bold("nix-image-operator demo: a NixImage on a real single-node cluster on this machine"));
  const cluster: Cluster = await phase(
    "start the cluster (etcd, kube-apiserver, controller-manager, scheduler, kubelet + containerd, registry; images are built on the first run)",
    startCluster({ log: (m) => status(m) }),
  );
  await mkdir(join(cluster.runDir, "demo"), { recursive: true });
  const git = await startPodGitServer({ address: cluster.net.nodeIp, root: join(cluster.runDir, "git"), logFile: join(cluster.logDir, "git.log") });
  let stopWatch = () => {};
  onInterrupt(async () => {
    stopWatch();
    clearStatus();
    statusText = "";
    say("Ctrl-C: tearing the cluster down (again to kill everything at once)");
    await git.stop();
    await cluster.stop();
    const left = leftovers(cluster);
    say(left.length ? red(`left behind:\n  - ${left.join("\n  - ")}`) : green("stopped; nothing left behind"));
  });
  try {
    await runClusterExample(cluster, git, (fn) => (stopWatch = fn));
  } catch (e) {
    stopWatch();
    clearStatus();
    process.stderr.write(`\n${red("demo failed:")} ${e instanceof Error ? e.message : String(e)}\n`);
    say("tearing the cluster down");
    await git.stop().catch(() => undefined);
    await cluster.stop().catch((err: unknown) => say(red(String(err))));
    process.exit(1);
  }
}

async function runClusterExample(cluster: Cluster, git: Awaited<ReturnType<typeof startPodGitServer>>, setStopWatch: (fn: () => void) => void): Promise<void> {
  const workDir = join(cluster.runDir, "demo");
  const repo = await phase(`serve the example flake from a git server pods reach (${git.baseUrl})`, createFlakeRepo(git, "demo-web", exampleFlake, workDir));
  await phase("install the operator from the Helm chart (helm template + kubectl apply; it runs as a pod)", installOperator(cluster, { logLevel: "info" }));
  const example = {
    namespace: demoNamespace,
    imageName,
    flakeUrl: repo.flakeUrl,
    repository: `${cluster.registry.host}/demo/web`,
    placeholderImage: cluster.images.pause.reference,
  };
  // The workload opts in; its image is a placeholder until the first build.
  const manifests = `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${demoNamespace} }\n---\n${webDeploymentYaml(example)}---\n${webNixImageYaml(example)}`;
  const manifestFile = join(cluster.runDir, "demo-example.yaml");
  await writeFile(manifestFile, manifests);
  await phase(`kubectl apply -f ${manifestFile} (a NixImage + an opted-in Deployment)`, cluster.kubectl_(["apply", "-f", manifestFile]));
  // Commits in the demo repository: a normal git identity for the user's own commits.
  for (const [k, v] of [
    ["user.name", "demo"],
    ["user.email", "demo@niximage.io"],
  ] as const) {
    await runGit(repo.workDir, ["config", k, v]);
  }
  let shownHelp = false;
  setStopWatch(
    watchProgress(cluster.kc, (podIp) => {
      if (shownHelp) return;
      shownHelp = true;
      clearStatus();
      process.stdout.write(
        `\n${bold("The app is running.")}\n` +
          `  curl http://${podIp}:8080/             ${dim("# from this machine (pod IPs are routed to the node bridge)")}\n` +
          `  ${cluster.kubectl} --kubeconfig ${cluster.kubeconfig} -n ${demoNamespace} port-forward deploy/web 8080:8080\n\n` +
          `${bold("Explore with kubectl:")}\n` +
          `  export KUBECONFIG=${cluster.kubeconfig}\n` +
          `  alias kubectl=${cluster.kubectl}\n` +
          `  kubectl -n ${demoNamespace} get niximages,jobs,pods,pvc\n` +
          `  kubectl -n ${demoNamespace} get niximage ${imageName} -o yaml     ${dim("# status.lastBuild: digest, layers, seconds per phase")}\n\n` +
          `${bold("Change the app and watch it roll out:")}\n` +
          `  cd ${repo.workDir}\n` +
          `  echo "Hello again" > message.txt && git commit -qam "new text" && git push -q origin HEAD:master\n\n` +
          `${dim(`Logs: ${cluster.logDir}.`)} ${bold("Ctrl-C")} tears everything down.\n\n`,
      );
    }),
  );
  await new Promise(() => {});
}

function runGit(cwd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", args, { cwd, stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`git ${args.join(" ")} exited ${code}`))));
  });
}

// ---- the local fallback -------------------------------------------------------------------------

async function localDemo(): Promise<void> {
  say(bold("nix-image-operator local demo: the bundled example flake -> local Nix -> an OCI image in a registry on 127.0.0.1"));
  const dir = await mkdtemp(join(tmpdir(), "nio-demo-"));
  // Ctrl-C: the daemons (registry) are killed, the git server's sockets die with this process,
  // and the scratch directory goes; all synchronous, so nothing is left whatever is pending.
  const takeSignals = () => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      for (const l of process.listeners(sig)) process.off(sig, l);
      process.once(sig, () => {
        clearStatus();
        say("stopping");
        killAllDaemonsSync();
        rmSync(dir, { recursive: true, force: true });
        process.exit(0);
      });
    }
  };
  const cleanup = async () => {
    killAllDaemonsSync();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const nix = await phase("check the local Nix (offline settings: no sandbox, no substituters)", prepareNixEnv(join(dir, "nix")));
    const registry = await phase(
      "start a registry on 127.0.0.1 (Debian docker-registry)",
      startRegistry({ name: "demo-registry", dir: join(dir, "registry"), logFile: join(dir, "registry.log") }),
    );
    takeSignals(); // after the first daemon: the test bed's own handlers are installed by then
    const gitServer = await startGitServer({ root: join(dir, "git"), logFile: join(dir, "git.log") });
    const repo = await phase(
      "serve the example flake from a local git server",
      createFlakeRepo({ baseUrl: gitServer.baseUrl, root: gitServer.root, stop: async () => {} }, "demo-web", exampleFlake, join(dir, "work")),
    );
    const config = join(dir, "operator.yaml");
    await writeFile(config, "flakeRefPolicy:\n  allowedSchemes: [github, git+https, git+http]\n  allowedAddressRanges: [127.0.0.0/8]\n");
    const image = `${registry.host}/demo/web`;
    const argv = [
      join(repoRoot, "src/cli/main.ts"),
      "build",
      `${repo.flakeUrl}#default`,
      "--image",
      image,
      "--plain-http",
      "--config",
      config,
      "--expose",
      "8080",
      "--json",
    ];
    say(`${bold("$")} nix-image-operator build ${argv.slice(2).join(" ")}`);
    const started = Date.now();
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, argv, { env: { ...process.env, ...nix.env }, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
      child.stderr.on("data", (c: Buffer) => {
        for (const line of c
          .toString()
          .split(/\r|\n/)
          .filter((l) => l.trim()))
          status(summariseLogLine(line));
      });
      child.once("error", reject);
      child.once("exit", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`nix-image-operator build exited ${code}`))));
    });
    status("");
    const result = JSON.parse(out) as {
      image: string;
      digest: string;
      layers: { pushed: number; skipped: number };
      bytesPushed: number;
      seconds: Record<string, number>;
      tags: string[];
    };
    say(`${green("✓")} built and pushed in ${((Date.now() - started) / 1000).toFixed(1)}s: ${bold(result.image)}`);
    say(
      `  digest ${result.digest}; layers ${result.layers.pushed} pushed, ${result.layers.skipped} skipped; ${(result.bytesPushed / 1e6).toFixed(2)} MB; tags ${result.tags.join(", ")}`,
    );
    say(
      `  seconds: ${Object.entries(result.seconds)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}`,
    );
    process.stdout.write(
      `\nInspect it while this runs:\n  skopeo inspect --tls-verify=false docker://${image}@${result.digest}\n` +
        `  curl -s http://${registry.host}/v2/demo/web/manifests/${result.digest} -H 'Accept: application/vnd.oci.image.manifest.v1+json'\n` +
        `The registry stays up until ${bold("Ctrl-C")}.\n`,
    );
    await new Promise(() => {});
  } catch (e) {
    status("");
    await cleanup();
    throw e;
  }
}

// ---- main -------------------------------------------------------------------------------------------

const args = process.argv.slice(2);
if (args.includes("-h") || args.includes("--help")) {
  process.stdout.write(
    "Usage: npm run demo [-- --local]\n  (no flag) the cluster demo when this machine can run the e2e cluster, else the local demo\n  --local    only the local demo (local Nix + a registry on 127.0.0.1)\n",
  );
  process.exit(0);
}
try {
  let missing: string[] = [];
  if (!args.includes("--local")) {
    missing = await clusterPrerequisites();
    if (missing.length === 0) {
      await clusterDemo();
    } else {
      say(
        `${bold("The cluster demo cannot run here")}; missing:\n  - ${missing.join("\n  - ")}\n  (scripts/setup.sh --with-e2e installs what the cluster needs)\n`,
      );
    }
  }
  if (args.includes("--local") || missing.length > 0) {
    if (!existsSync(exampleFlake)) throw new Error(`example flake not found at ${exampleFlake}`);
    await localDemo();
  }
} catch (e) {
  clearStatus();
  process.stderr.write(`\n${red("demo failed:")} ${e instanceof Error ? e.message : String(e)}\n`);
  killAllDaemonsSync();
  process.exit(1);
}
