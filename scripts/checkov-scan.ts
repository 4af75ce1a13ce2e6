// checkov (PyPI, installed by scripts/install-checkov.sh) on what the operator makes a cluster run:
//   - builder Jobs as src/controller/builder-job.ts renders them: an image build with a push
//     Secret and build resources, an image build without either, a warm build;
//   - the Helm chart as `helm template` renders it with its defaults.
// Prints, per target, passed/failed counts and each failed check with the resource (and
// container) it names; `--json` prints the same as JSON (the test reads that).
//
//   node scripts/checkov-scan.ts [--json] [--keep DIR]
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { nixImageSchema } from "../src/api/niximage.ts";
import { parseOperatorConfig } from "../src/config/operator-config.ts";
import { builderJob, type BuilderJobInput } from "../src/controller/builder-job.ts";

const exec = promisify(execFile);
const repoRoot = fileURLToPath(new URL("../", import.meta.url));

export interface FailedCheck {
  id: string;
  name: string;
  resource: string;
}

export interface ScanResult {
  target: string;
  passed: number;
  failed: number;
  failures: FailedCheck[];
}

function sampleImage(withSecretAndResources: boolean) {
  return nixImageSchema.parse({
    apiVersion: "niximage.io/v1alpha1",
    kind: "NixImage",
    metadata: { name: "web", namespace: "shop", uid: "0b6a4c52-7f1e-4a57-9a38-000000000001", generation: 1 },
    spec: {
      flake: "github:acme/shop?ref=main",
      image: { repository: "registry.example.com/acme/web", ...(withSecretAndResources ? { pushSecretRef: { name: "regcred" } } : {}) },
      ...(withSecretAndResources ? { build: { resources: { requests: { cpu: "2", memory: "4Gi" }, limits: { cpu: "4", memory: "8Gi" } } } } : {}),
    },
  });
}

/** The builder Jobs that are scanned, by file name. */
export function sampleBuilderJobs(): Record<string, unknown> {
  const config = parseOperatorConfig({ builder: { nixImage: "ghcr.io/niximage/nix-builder:2.28", pushImage: "ghcr.io/niximage/nix-image-operator:0.1.0" } });
  const input = (kind: "Image" | "Warm", full: boolean): BuilderJobInput => ({
    image: sampleImage(full),
    kind,
    number: 1,
    reasons: ["SpecChanged"],
    flake: `github:acme/shop/${"1".repeat(40)}`,
    storeVolume: "niximage-store-0",
    specHash: "0123456789abcdef",
    builderHash: "fedcba9876543210",
    config,
  });
  return {
    "builder-job-image.yaml": builderJob(input("Image", true)),
    "builder-job-image-minimal.yaml": builderJob(input("Image", false)),
    "builder-job-warm.yaml": builderJob(input("Warm", true)),
  };
}

export async function checkovBinary(): Promise<string> {
  const { stdout } = await exec("bash", [join(repoRoot, "scripts/install-checkov.sh")], { maxBuffer: 1 << 20 });
  return stdout.trim();
}

interface CheckovReport {
  check_type?: string;
  results?: { passed_checks?: unknown[]; failed_checks?: Array<{ check_id: string; check_name: string; resource: string; file_path: string }> };
  summary?: { passed: number; failed: number };
}

async function checkov(binary: string, dir: string): Promise<CheckovReport> {
  // checkov exits 1 when a check fails: that is a result, not an error.
  const r = await exec(binary, ["-d", dir, "--framework", "kubernetes", "-o", "json", "--compact", "--skip-download"], {
    maxBuffer: 64 << 20,
    env: { ...process.env, BC_SKIP_MAPPING: "TRUE" },
  }).catch((e: { stdout?: string; code?: number; stderr?: string }) => {
    if (e.code === 1 && e.stdout) return { stdout: e.stdout, stderr: e.stderr ?? "" };
    throw new Error(`checkov failed on ${dir} (exit ${e.code}): ${e.stderr ?? ""}`);
  });
  const parsed = JSON.parse(r.stdout) as CheckovReport | CheckovReport[];
  const reports = Array.isArray(parsed) ? parsed : [parsed];
  return reports.find((x) => x.check_type === "kubernetes") ?? reports[0] ?? {};
}

/** Per scanned file: passed/failed counts and the failures, from one checkov run over the directory. */
function byFile(report: CheckovReport, files: Record<string, string>): ScanResult[] {
  const passed = (report.results?.passed_checks ?? []) as Array<{ file_path: string }>;
  const failed = report.results?.failed_checks ?? [];
  return Object.entries(files).map(([file, target]) => {
    const mine = (path: string) => path.replace(/^\//, "") === file;
    const failures = failed
      .filter((f) => mine(f.file_path))
      .map((f) => ({ id: f.check_id, name: f.check_name, resource: f.resource }))
      .sort((a, b) => a.resource.localeCompare(b.resource) || a.id.localeCompare(b.id));
    return { target, passed: passed.filter((p) => mine(p.file_path)).length, failed: failures.length, failures };
  });
}

/** Scans the sample builder Jobs and the chart's default rendering (one checkov run); `helm` is the helm binary. */
export async function scan(opts: { helm: string; kubeVersion: string; checkov?: string; keepDir?: string }): Promise<ScanResult[]> {
  const binary = opts.checkov ?? (await checkovBinary());
  const dir = opts.keepDir ?? (await mkdtemp(join(tmpdir(), "nio-checkov-")));
  try {
    await mkdir(dir, { recursive: true });
    const files: Record<string, string> = {};
    for (const [file, job] of Object.entries(sampleBuilderJobs())) {
      await writeFile(join(dir, file), stringify(job));
      files[file] = file;
    }
    const { stdout } = await exec(
      opts.helm,
      ["template", "nio", join(repoRoot, "charts/nix-image-operator"), "--namespace", "nix-image-operator", "--kube-version", opts.kubeVersion],
      { maxBuffer: 16 << 20 },
    );
    await writeFile(join(dir, "chart.yaml"), stdout);
    files["chart.yaml"] = "chart (helm template, default values)";
    return byFile(await checkov(binary, dir), files);
  } finally {
    if (!opts.keepDir) await rm(dir, { recursive: true, force: true });
  }
}

export function formatResults(results: ScanResult[]): string {
  return results
    .map((r) => [`${r.target}: passed ${r.passed}, failed ${r.failed}`, ...r.failures.map((f) => `  ${f.id}  ${f.resource}  ${f.name}`)].join("\n"))
    .join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const keep = args.indexOf("--keep");
  const { helmBinary } = await import("../test/support/global-setup.ts");
  const helm = helmBinary();
  if (!existsSync(helm)) throw new Error(`helm not found at ${helm}: run scripts/setup.sh`);
  const { kubernetesVersion } = await import("../test/support/kube-apiserver.ts");
  const results = await scan({ helm, kubeVersion: kubernetesVersion(repoRoot), ...(keep >= 0 && args[keep + 1] ? { keepDir: args[keep + 1]! } : {}) });
  process.stdout.write(args.includes("--json") ? `${JSON.stringify(results, null, 2)}\n` : `${formatResults(results)}\n`);
}
