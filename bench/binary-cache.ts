// Cold store with the cluster binary cache vs without (issue 14): the same flake (a chain of
// derivations that each take --seconds to build), Nix phase seconds side by side, same machine,
// same run. "Cold" = the closure is not in the store (deleted between runs; nothing else of the
// store changes). With the cache: the cache step (`nix copy --to file://`, signed) filled it from
// the first build, a static HTTP server serves it, the build step substitutes with its key.
//
// Usage: node bench/binary-cache.ts [--derivations 4] [--seconds 3] [--mib 0]
// Needs nix and git on PATH (see testbed.md); runs as the test bed does.
import { randomBytes } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, normalize } from "node:path";
import { parseArgs } from "node:util";
import { readStepFiles } from "../src/builder/step-files.ts";
import { runCli } from "../test/support/builder-fixtures.ts";
import { createGitRepo } from "../test/support/git-fixtures.ts";
import { startGitServer } from "../test/support/git-server.ts";
import { prepareNixEnv } from "../test/support/nix-env.ts";
import { run } from "../test/support/process.ts";
import type { TestBed } from "../test/support/testbed-types.ts";

const { values } = parseArgs({
  options: { derivations: { type: "string", default: "4" }, seconds: { type: "string", default: "3" }, mib: { type: "string", default: "0" } },
});
const mib = Number(values.mib);
const count = Number(values.derivations);
const seconds = Number(values.seconds);

const dir = await mkdtemp(join(tmpdir(), "nio-bench-cache-"));
const git = await startGitServer({ root: join(dir, "git"), logFile: join(dir, "git.log") });
try {
  const nix = await prepareNixEnv(join(dir, "nix"));
  const bed = { tmpDir: dir, git: { root: git.root, baseUrl: git.baseUrl }, nix } as unknown as TestBed;
  const env = { ...process.env, ...nix.env };
  const marker = randomBytes(8).toString("hex");
  const chain = Array.from({ length: count }, (_, i) => {
    const dep = i === 0 ? "" : ` dep = d${i - 1};`;
    // The last output also carries --mib of incompressible data (the NAR the cache must serve).
    const data = i === count - 1 && mib > 0 ? `; /usr/bin/head -c ${mib}M /dev/urandom > $out/data` : "";
    const script = `/bin/sleep ${seconds}; /bin/mkdir -p $out; /bin/echo ${marker}-${i} > $out/part${data}`;
    return `d${i} = derivation { name = "bench-part-${i}"; inherit system;${dep} builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; };`;
  });
  const flake = `{ outputs = { self }: let system = "x86_64-linux"; ${chain.join(" ")} in { packages.\${system}.default = d${count - 1}; }; }\n`;
  const repo = await createGitRepo(
    { "flake.nix": flake, "flake.lock": JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }) },
    { prefix: "bench-cache", bed },
  );
  const ref = `${repo.flakeUrl}?rev=${repo.rev}`;

  const secret = (await run("nix", ["key", "generate-secret", "--key-name", "bench-cache-1"], { env })).stdout;
  const secretFile = join(dir, "secret-key");
  await writeFile(secretFile, secret, { mode: 0o600 });
  const publicKey = (await run("nix", ["key", "convert-secret-to-public"], { env, input: secret })).stdout.trim();
  const cacheDir = join(dir, "cache");
  await mkdir(cacheDir);
  const server = createServer((req, res) => {
    const path = normalize(join(cacheDir, decodeURIComponent((req.url ?? "/").split("?")[0]!)));
    if (!path.startsWith(cacheDir) || !existsSync(path)) return void res.writeHead(404).end();
    res.writeHead(200);
    createReadStream(path).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const build = async (out: string, cache: boolean) => {
    const args = ["build-step", "--flake", ref, "--attribute", "default", "--out", join(dir, out)];
    if (cache) args.push("--cluster-cache", url, "--trusted-public-key", publicKey);
    const r = await runCli(bed, args, { timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`build-step failed: ${r.stderr}`);
    return readStepFiles(join(dir, out));
  };

  const cold = await build("cold", false);
  const paths = cold.closure.map((p) => p.path);
  const copy = await runCli(bed, ["cache-step", "--from", join(dir, "cold"), "--to", `file://${cacheDir}`, "--secret-key-file", secretFile]);
  const copied = JSON.parse(copy.stdout.trim().split("\n").pop()!) as { copied: boolean; seconds: number };
  if (!copied.copied) throw new Error(`cache-step did not copy: ${copy.stdout}`);
  await run("nix", ["store", "delete", ...paths], { env });
  const cached = await build("cached", true);
  if (cached.result.outPath !== cold.result.outPath) throw new Error("different out paths");
  await run("nix", ["store", "delete", ...paths], { env });
  server.close();

  const a = cold.result.seconds.build!;
  const b = cached.result.seconds.build!;
  console.log(`closure: ${paths.length} store paths (${mib} MiB of data), built by ${count} derivations of ${seconds} s each`);
  console.log(`cache step (nix copy --to file://, signed): ${copied.seconds.toFixed(2)} s`);
  console.log(`Nix phase, cold store without cache: ${a.toFixed(2)} s`);
  console.log(`Nix phase, cold store with cache:    ${b.toFixed(2)} s  (${(a / b).toFixed(1)}x faster)`);
} finally {
  await git.stop();
  await rm(dir, { recursive: true, force: true });
}
