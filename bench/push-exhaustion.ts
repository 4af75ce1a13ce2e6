// Peak RSS of the push step under hostile inputs (issue 12, item 8), next to a normal push of the
// same size class. Each case runs `nix-image-operator push-step` as a process under
// `/usr/bin/time -v` and prints its exit code, wall time, peak RSS (Maximum resident set size)
// and the first line of its termination message. The inputs are those of
// test/integration/resource-exhaustion.test.ts (test/support/exhaustion-fixtures.ts).
//
// Usage: node bench/push-exhaustion.ts [--keep]
// Needs nix, docker-registry, git, /usr/bin/time (Debian `time`), as root like the test bed.
import { spawn, spawnSync } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { prepareNixEnv } from "../test/support/nix-env.ts";
import { startRegistry } from "../test/support/registry.ts";
import { addToStore, archiveStepDir, gzipBombArchive, hugeJsonArchive, hugeStepFileDir, startEndlessRegistry } from "../test/support/exhaustion-fixtures.ts";

const { values } = parseArgs({ options: { keep: { type: "boolean", default: false } } });
const repoRoot = join(import.meta.dirname, "..");
const cli = join(repoRoot, "src/cli/main.ts");

interface Measured {
  code: number | null;
  seconds: number;
  maxRssMiB: number;
  message: string;
}

function timedPushStep(args: string[], env: NodeJS.ProcessEnv, tm: string): Promise<Measured> {
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/time", ["-v", process.execPath, cli, "push-step", ...args, "--termination-message", tm], {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => {
      const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/.exec(stderr);
      if (!rss || !wall) return reject(new Error(`no /usr/bin/time -v figures in: ${stderr.slice(-2000)}`));
      const seconds = Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]);
      void readFile(tm, "utf8")
        .catch(() => "")
        .then((message) => resolve({ code, seconds, maxRssMiB: Number(rss[1]) / 1024, message: message.split("\n")[0]!.slice(0, 160) }));
    });
  });
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "nio-bench-exhaustion-"));
  try {
    const nix = await prepareNixEnv(join(work, "nix"));
    const env = { ...process.env, ...nix.env, PATH: process.env.PATH ?? "/usr/bin:/bin" };
    const regDir = join(work, "registry");
    await mkdir(regDir, { recursive: true });
    const registry = await startRegistry({ name: "bench-exhaustion", dir: regDir, logFile: join(regDir, "registry.log") });

    // Baseline: the hello fixture, built and pushed normally.
    const flake = join(work, "hello");
    await cp(join(repoRoot, "test/fixtures/flakes/hello"), flake, { recursive: true });
    const git = (args: string[]) =>
      spawnSync("git", args, {
        cwd: flake,
        env: { ...env, GIT_AUTHOR_NAME: "b", GIT_AUTHOR_EMAIL: "b@b", GIT_COMMITTER_NAME: "b", GIT_COMMITTER_EMAIL: "b@b", GIT_CONFIG_GLOBAL: "/dev/null" },
      });
    git(["init", "-q", "--initial-branch=master"]);
    git(["add", "-A"]);
    git(["commit", "-qm", "v1"]);
    const config = join(work, "config.yaml");
    await writeFile(config, "flakeRefPolicy:\n  allowedSchemes: [git+file]\n");
    const helloDir = join(work, "hello-step");
    const b = spawnSync(
      process.execPath,
      [cli, "build-step", "--flake", `git+file://${flake}`, "--attribute", "default", "--out", helloDir, "--config", config],
      {
        env,
        encoding: "utf8",
      },
    );
    if (b.status !== 0) throw new Error(`build-step failed: ${b.stderr}`);

    const cases: [string, () => Promise<{ dir: string; image: string; cleanup?: () => Promise<void> }>][] = [
      ["baseline: hello pushed normally", async () => ({ dir: helloDir, image: `${registry.host}/bench/hello` })],
      [
        "gzip bomb docker-archive (2 GiB zeros, 2 MB gz)",
        async () => {
          const f = join(work, "bomb.tar.gz");
          await gzipBombArchive(f);
          const dir = join(work, "bomb");
          await archiveStepDir(dir, addToStore(f, env));
          return { dir, image: `${registry.host}/bench/bomb` };
        },
      ],
      [
        "docker-archive with 6 JSON-looking entries of 15 MiB",
        async () => {
          const f = join(work, "json.tar");
          await hugeJsonArchive(f);
          const dir = join(work, "json");
          await archiveStepDir(dir, addToStore(f, env));
          return { dir, image: `${registry.host}/bench/json` };
        },
      ],
      [
        "result.json of 4 GiB (sparse)",
        async () => {
          const dir = join(work, "huge-result");
          await hugeStepFileDir(dir, "result.json");
          return { dir, image: `${registry.host}/bench/x` };
        },
      ],
      [
        "closure.json of 4 GiB (sparse)",
        async () => {
          const dir = join(work, "huge-closure");
          await hugeStepFileDir(dir, "closure.json");
          await copyFile(join(helloDir, "result.json"), join(dir, "result.json"));
          return { dir, image: `${registry.host}/bench/x` };
        },
      ],
      ...([500, 401] as const).map((status): [string, () => Promise<{ dir: string; image: string; cleanup: () => Promise<void> }>] => [
        `registry answering HTTP ${status} with an endless body`,
        async () => {
          const endless = await startEndlessRegistry(status);
          return { dir: helloDir, image: `${endless.host}/bench/endless`, cleanup: () => endless.close() };
        },
      ]),
    ];

    console.log("| case | exit | wall s | peak RSS MiB | termination message |");
    console.log("|---|---|---|---|---|");
    for (const [name, make] of cases) {
      const c = await make();
      try {
        const m = await timedPushStep(["--from", c.dir, "--image", c.image, "--plain-http"], env, join(work, `${name.replace(/\W+/g, "-")}.tm`));
        console.log(`| ${name} | ${m.code} | ${m.seconds.toFixed(1)} | ${m.maxRssMiB.toFixed(0)} | ${m.message.replace(/\|/g, "/")} |`);
      } finally {
        await c.cleanup?.();
      }
    }
    await registry.daemon.stop();
  } finally {
    if (!values.keep) await rm(work, { recursive: true, force: true });
  }
}

await main();
