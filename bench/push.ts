// Push benchmark (design.md section 9): the `big` fixture (many store paths, a few hundred MB)
// pushed three ways, side by side in the same run, against a fresh local docker-registry per run:
//
//   ours      `nix-image-operator push-step` (a process, as in the builder Job) from the build
//             step's directory: layers straight from the store, tar -> sha256 -> upload in one pass
//   baseline  what people do today: `nix build .#image` writes a docker-archive tarball of the
//             closure (emulated here like nixpkgs' streamLayeredImage does it: each layer tarred
//             twice, once to hash it and once into the archive; the same layers as ours), then
//             `skopeo copy docker-archive:image.tar docker://...`
//   floor     `tar -cf - <closure paths> | sha256sum`: reading and hashing the bytes once
//
// Scenarios: cold (empty repository and cache), warm no-op (the same image again), one path
// changed (a commit that changes only the app's store path; the baseline must write its tarball
// again, skopeo then skips the unchanged layers it knows).
//
// The rows above push without attestations (--no-sbom --no-provenance). Then the cost of the
// proof: cold and warm no-op again into a second repository (fresh layer cache) with the SBOM,
// the provenance and cosign signatures of all three (--sign-key), beside the same pushes without.
//
// Usage: node bench/push.ts [--runs 3] [--paths 60] [--mib 300] [--cli dist/cli/main.js]
// (--cli: the CLI the steps run; default src/cli/main.ts; the images run dist/ after `npm run build`)
// Needs nix, docker-registry, skopeo, git, tar on PATH (see testbed.md); runs as the test bed does.
import { spawn } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readStepFiles, type StepFiles } from "../src/builder/step-files.ts";
import { mapBounded } from "../src/image/bounded-parallel.ts";
import { hashLayer } from "../src/image/layer-blob.ts";
import { planLayers } from "../src/image/layer-plan.ts";
import { encodeEntryHeader, endOfArchive, paddingFor } from "../src/image/tar-header.ts";
import { tarStorePaths } from "../src/image/tar-writer.ts";
import { prepareNixEnv } from "../test/support/nix-env.ts";
import { startRegistry } from "../test/support/registry.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    paths: { type: "string", default: "60" },
    mib: { type: "string", default: "300" },
    keep: { type: "boolean" },
    cli: { type: "string", default: "src/cli/main.ts" },
  },
});
const runs = Number(values.runs);
const repoRoot = new URL("../", import.meta.url).pathname;
const cli = join(repoRoot, values.cli);

interface Proc {
  code: number | null;
  stdout: string;
  stderr: string;
}

function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

async function must(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<string> {
  const r = await exec(cmd, args, env, cwd);
  if (r.code !== 0) throw new Error(`${cmd} ${args.slice(0, 4).join(" ")} … exited ${r.code}: ${r.stderr.slice(-1500)}`);
  return r.stdout;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { seconds: (performance.now() - t) / 1000, value };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) total += (await stat(p)).size;
    }
  };
  await walk(dir);
  return total;
}

function write(out: WriteStream, buf: Buffer): Promise<void> {
  return out.write(buf) ? Promise.resolve() : new Promise((r) => out.once("drain", () => r()));
}

/**
 * A docker-archive of the closure the way streamLayeredImage writes one: per layer, one pass to
 * learn its size and digest, one pass into the archive; then the config and manifest.json.
 */
async function writeDockerArchive(files: StepFiles, file: string): Promise<number> {
  const plan = planLayers(files.closure, [files.result.outPath]);
  const out = createWriteStream(file);
  const diffIds: string[] = [];
  const mtime = 1;
  for (const layer of plan.layers) {
    const info = await hashLayer(layer.paths);
    const hex = info.diffId.slice("sha256:".length);
    diffIds.push(info.diffId);
    await write(out, encodeEntryHeader({ name: Buffer.from(`${hex}/layer.tar`), type: "file", mode: 0o644, size: info.tarSize, mtime }));
    for await (const chunk of tarStorePaths(layer.paths)) await write(out, chunk as Buffer);
    await write(out, Buffer.alloc(paddingFor(info.tarSize)));
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Entrypoint: [`${files.result.outPath}/bin/big`] },
      rootfs: { type: "layers", diff_ids: diffIds },
    }),
  );
  const { createHash } = await import("node:crypto");
  const configName = `${createHash("sha256").update(config).digest("hex")}.json`;
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: ["big:latest"], Layers: diffIds.map((d) => `${d.slice(7)}/layer.tar`) }]));
  for (const [name, bytes] of [
    [configName, config],
    ["manifest.json", manifest],
  ] as const) {
    await write(out, encodeEntryHeader({ name: Buffer.from(name), type: "file", mode: 0o644, size: bytes.length, mtime }));
    await write(out, Buffer.concat([bytes, Buffer.alloc(paddingFor(bytes.length))]));
  }
  await write(out, endOfArchive());
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return (await stat(file)).size;
}

/** `tar -cf - <paths> | sha256sum`: read and hash the closure's bytes once. */
async function floor(paths: string[]): Promise<number> {
  const list = paths.map((p) => p.slice(1)).join(" ");
  const { seconds } = await timed(() => must("sh", ["-c", `tar -C / -cf - ${list} | sha256sum > /dev/null`], process.env));
  return seconds;
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "nio-bench-push-"));
  console.error(`work dir ${work}`);
  try {
    await bench(work);
  } finally {
    if (!values.keep) await rm(work, { recursive: true, force: true });
  }
}

async function bench(work: string): Promise<void> {
  const nix = await prepareNixEnv(join(work, "nix"));
  const env = { ...process.env, ...nix.env };

  // The fixture as a git repository (git+file; the bench's own operator config allows it).
  const flakeDir = join(work, "big");
  await cp(join(repoRoot, "test/fixtures/flakes/big"), flakeDir, { recursive: true });
  const conf = (appVersion: number) =>
    JSON.stringify({ paths: Number(values.paths), totalMiB: Number(values.mib), seed: "niximage-bench-1", appVersion }, null, 2) + "\n";
  const gitEnv = {
    ...env,
    GIT_AUTHOR_NAME: "bench",
    GIT_AUTHOR_EMAIL: "b@b",
    GIT_COMMITTER_NAME: "bench",
    GIT_COMMITTER_EMAIL: "b@b",
    GIT_CONFIG_GLOBAL: "/dev/null",
  };
  await writeFile(join(flakeDir, "big.json"), conf(1));
  await must("git", ["init", "-q", "--initial-branch=master"], gitEnv, flakeDir);
  await must("git", ["add", "-A"], gitEnv, flakeDir);
  await must("git", ["commit", "-qm", "v1"], gitEnv, flakeDir);
  const config = join(work, "config.yaml");
  await writeFile(config, "flakeRefPolicy:\n  allowedSchemes: [git+file]\n");

  const buildStep = async (out: string) => {
    const r = await timed(() =>
      must(process.execPath, [cli, "build-step", "--flake", `git+file://${flakeDir}`, "--attribute", "default", "--out", out, "--config", config], env),
    );
    return r.seconds;
  };
  const dir1 = join(work, "step-v1");
  const dir2 = join(work, "step-v2");
  const build1 = await buildStep(dir1);
  await writeFile(join(flakeDir, "big.json"), conf(2));
  await must("git", ["commit", "-qam", "v2: app only"], gitEnv, flakeDir);
  const build2 = await buildStep(dir2);
  const v1 = await readStepFiles(dir1);
  const v2 = await readStepFiles(dir2);
  const narTotal = v1.result.closure.narSize;
  console.error(
    `closure: ${v1.result.closure.paths} store paths, ${(narTotal / 2 ** 20).toFixed(1)} MiB (NAR); nix build ${build1.toFixed(1)} s, rebuild after the app-only commit ${build2.toFixed(1)} s`,
  );

  const signKey = join(work, "sign.key");
  const { generateKeyPairSync } = await import("node:crypto");
  await writeFile(signKey, generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600 });

  type Row = Record<string, number[]>;
  const t: Row = {};
  const bytes: Row = {};
  const add = (row: Row, key: string, v: number) => (row[key] ??= []).push(v);

  for (let run = 1; run <= runs; run++) {
    const regDir = join(work, `registry-${run}`);
    await mkdir(regDir, { recursive: true });
    const reg = await startRegistry({ name: `bench-${run}`, dir: regDir, logFile: join(regDir, "registry.log") });
    const cache = join(work, `layer-cache-${run}`);
    try {
      const push = async (from: string, key: string, attest: string[] = ["--no-sbom", "--no-provenance"], repo = "ours", layerCache = cache) => {
        const before = await dirBytes(reg.rootDir);
        const r = await timed(() =>
          must(
            process.execPath,
            [cli, "push-step", "--from", from, "--image", `${reg.host}/${repo}`, "--plain-http", "--layer-cache", layerCache, "--json", ...attest],
            {
              ...process.env,
              LOG_LEVEL: "warn",
            },
          ),
        );
        const result = JSON.parse(r.value) as {
          bytesPushed: number;
          layers: { pushed: number; total: number };
          seconds: { push: number; attest?: number };
        };
        add(t, key, r.seconds);
        add(t, `${key}: push phases`, result.seconds.push);
        if (result.seconds.attest !== undefined) add(t, `${key}: attest phase`, result.seconds.attest);
        add(bytes, key, result.bytesPushed);
        add(bytes, `${key} (registry storage growth)`, (await dirBytes(reg.rootDir)) - before);
        console.error(
          `run ${run}: ours ${key}: ${r.seconds.toFixed(2)} s, ${result.layers.pushed}/${result.layers.total} layers pushed, ${(result.bytesPushed / 2 ** 20).toFixed(1)} MiB`,
        );
      };
      await push(dir1, "cold");
      await push(dir1, "warm no-op");
      await push(dir2, "one path changed");
      // The same pushes with SBOM + provenance + signatures, into a repository of their own.
      const attestCache = join(work, `layer-cache-attest-${run}`);
      const plainCache = join(work, `layer-cache-plain-${run}`);
      const attest = ["--sign-key", signKey];
      await push(dir1, "cold, no attestations (repo 2)", undefined, "ours-plain", plainCache);
      await push(dir1, "cold, SBOM + provenance + signatures", attest, "ours-attested", attestCache);
      await push(dir1, "warm no-op, no attestations (repo 2)", undefined, "ours-plain", plainCache);
      await push(dir1, "warm no-op, SBOM + provenance + signatures", attest, "ours-attested", attestCache);
      await rm(attestCache, { recursive: true, force: true });
      await rm(plainCache, { recursive: true, force: true });

      const skopeo = async (archive: string) =>
        timed(() =>
          must("skopeo", ["copy", "-q", "--dest-tls-verify=false", `docker-archive:${archive}`, `docker://${reg.host}/baseline:latest`], process.env),
        );
      const baseline = async (files: StepFiles | undefined, archive: string, key: string) => {
        const before = await dirBytes(reg.rootDir);
        const w = files ? await timed(() => writeDockerArchive(files, archive)) : { seconds: 0, value: 0 };
        const c = await skopeo(archive);
        add(t, `baseline ${key}: write tarball`, w.seconds);
        add(t, `baseline ${key}: skopeo copy`, c.seconds);
        add(t, `baseline ${key}`, w.seconds + c.seconds);
        add(bytes, `baseline ${key} (registry storage growth)`, (await dirBytes(reg.rootDir)) - before);
        console.error(`run ${run}: baseline ${key}: tarball ${w.seconds.toFixed(2)} s + skopeo ${c.seconds.toFixed(2)} s`);
      };
      const a1 = join(work, "image-v1.tar");
      const a2 = join(work, "image-v2.tar");
      await baseline(v1, a1, "cold");
      await baseline(undefined, a1, "warm no-op"); // nix build of the same revision: nothing to write
      await baseline(v2, a2, "one path changed");
      await rm(a1, { force: true });
      await rm(a2, { force: true });

      const plan = planLayers(v1.closure, [v1.result.outPath]);
      add(t, "ours: tar + sha256 of every layer, no upload", (await timed(() => mapBounded(plan.layers, 3, (l) => hashLayer(l.paths)))).seconds);
      add(t, "ours: process start-up (push-step --help)", (await timed(() => must(process.execPath, [cli, "push-step", "--help"], process.env))).seconds);
      const allPaths = v1.closure.map((p) => p.path);
      add(t, "floor: tar | sha256sum (whole closure)", await floor(allPaths));
      const changed = v2.closure.filter((p) => !v1.closure.some((q) => q.path === p.path)).map((p) => p.path);
      add(t, "floor: tar | sha256sum (changed paths)", await floor(changed));
    } finally {
      await reg.daemon.stop();
      await rm(regDir, { recursive: true, force: true });
      await rm(cache, { recursive: true, force: true });
    }
  }

  const f = (xs: number[] | undefined) => (xs && xs.length > 0 ? median(xs).toFixed(2) : "-");
  const mib = (xs: number[] | undefined) => (xs ? (median(xs) / 2 ** 20).toFixed(1) : "-");
  const kib = (a: number[] | undefined, b: number[] | undefined) => (a && b ? ((median(a) - median(b)) / 1024).toFixed(1) : "-");
  const ratio = (a: number[] | undefined, b: number[] | undefined) => (a && b && median(b) > 0 ? `${(median(a) / median(b)).toFixed(1)}x` : "-");
  console.log(`\nbig fixture: ${v1.result.closure.paths} store paths, ${(narTotal / 2 ** 20).toFixed(1)} MiB; median of ${runs} run(s); seconds`);
  console.log(
    `floor (tar | sha256sum of the whole closure): ${f(t["floor: tar | sha256sum (whole closure)"])} s; of the changed path(s): ${f(t["floor: tar | sha256sum (changed paths)"])} s`,
  );
  console.log(
    `ours without the registry (tar + sha256 of every layer, 3 at once): ${f(t["ours: tar + sha256 of every layer, no upload"])} s; push-step process start-up (--help): ${f(t["ours: process start-up (push-step --help)"])} s\n`,
  );
  const header = ["scenario", "ours s (push phases)", "ours MiB sent", "baseline s (tarball + skopeo)", "baseline MiB stored", "baseline/ours", "ours/floor"];
  const rows: string[][] = [];
  for (const key of ["cold", "warm no-op", "one path changed"]) {
    const floorKey = key === "one path changed" ? "floor: tar | sha256sum (changed paths)" : "floor: tar | sha256sum (whole closure)";
    rows.push([
      key,
      `${f(t[key])} (${f(t[`${key}: push phases`])})`,
      mib(bytes[key]),
      `${f(t[`baseline ${key}`])} (${f(t[`baseline ${key}: write tarball`])} + ${f(t[`baseline ${key}: skopeo copy`])})`,
      mib(bytes[`baseline ${key} (registry storage growth)`]),
      ratio(t[`baseline ${key}`], t[key]),
      key === "warm no-op" ? "-" : ratio(t[key], t[floorKey]),
    ]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log(line(header));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of rows) console.log(line(r));
  console.log("\nours s: the push-step process (node start-up included); push phases: what it reports for plan + layers + config + manifest + tags.");
  console.log(
    `\nattestations (closure of ${v1.result.closure.paths} paths): push-step seconds without -> with SBOM + provenance + cosign signatures (attest phase)`,
  );
  for (const key of ["cold", "warm no-op"]) {
    const without = t[`${key}, no attestations (repo 2)`];
    const withA = t[`${key}, SBOM + provenance + signatures`];
    const added = without && withA ? (median(withA) - median(without)).toFixed(2) : "-";
    console.log(
      `  ${key}: ${f(without)} -> ${f(withA)} s (attest phase ${f(t[`${key}, SBOM + provenance + signatures: attest phase`])} s; difference ${added} s); registry storage growth ${kib(bytes[`${key}, no attestations (repo 2) (registry storage growth)`], [0])} -> ${kib(bytes[`${key}, SBOM + provenance + signatures (registry storage growth)`], [0])} KiB`,
    );
  }
  console.log(`\nraw (all runs): ${JSON.stringify({ seconds: t, bytes })}`);
}

await main();
