// Issue 12, item 2, on the real cluster: the builder pod (trixie builder image, Nix 2.26, runc)
// runs a flake's builders as the nixbld build users, never as root on the shared store. The build
// step gets the chart's default capabilities (builder.buildCapabilities) and --require-build-users.
// The flake's `attack` derivation records its uid and tries, from inside its builder, to change
// another derivation's registered store path (`victim`, a dependency: built and registered first),
// to remove it, and to write the Nix database; the pushed image carries both paths, so the report
// and the untouched victim are read back from the registry.
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { createFlakeRepo } from "./support/git.ts";
import { diagnostics, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";

const execFileAsync = promisify(execFile);
const { cluster, git, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-build-users";
const repository = `${cluster.registry.host}/e2e/build-users`;
const marker = `victim-${Date.now().toString(36)}`;

const attackScript = [
  "bb=/bin/busybox",
  "$bb mkdir $out",
  'echo "uid=$($bb id -u) gid=$($bb id -g)" > $out/report',
  // A reference keeps the victim in the closure, so the pushed image carries it too.
  "echo $victim > $out/victim",
  "if (echo poisoned >> $victim/data) 2>/dev/null; then echo victim-append=written; else echo victim-append=denied; fi >> $out/report",
  "if $bb rm -rf $victim 2>/dev/null && [ ! -e $victim ]; then echo victim-remove=done; else echo victim-remove=denied; fi >> $out/report",
  "if (echo x >> /nix/var/nix/db/db.sqlite) 2>/dev/null; then echo db=written; else echo db=denied; fi >> $out/report",
].join("\n");

const flake = `{
  outputs = { self }: let
    system = "x86_64-linux";
    victim = derivation {
      name = "victim"; inherit system; builder = "/bin/sh";
      args = [ "-c" "/bin/busybox mkdir $out && echo ${marker} > $out/data" ];
    };
    attack = derivation {
      name = "attack"; inherit system victim; builder = "/bin/sh";
      body = ${JSON.stringify(attackScript)};
      passAsFile = [ "body" ];
      args = [ "-c" ". $bodyPath" ];
    };
  in { packages.\${system}.default = attack; };
}
`;

interface NixImageView {
  status?: { lastBuild?: { number: number; job: string; result: string; digest?: string; failure?: { step: string; message: string } } };
}

interface PodView {
  spec: { initContainers: { name: string; args?: string[]; securityContext?: { capabilities?: { add?: string[] }; runAsUser?: number } }[] };
}

let operator: InstalledOperator | undefined;
let failed = false;
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});
afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
  await k.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]).catch(() => undefined);
});

/** The file `suffix` (e.g. `-attack/report`) of the one store path in the image's layers that has it. */
async function fileInImage(dir: string, suffix: string): Promise<string> {
  const manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as { layers: { digest: string }[] };
  for (const layer of manifest.layers) {
    const file = join(dir, layer.digest.replace(/^sha256:/, ""));
    const { stdout: names } = await execFileAsync("tar", ["-tf", file], { maxBuffer: 64 << 20 });
    const name = names.split("\n").find((n) => n.endsWith(suffix));
    if (name) return (await execFileAsync("tar", ["-xOf", file, name])).stdout;
  }
  throw new Error(`no layer of the image has a file ending in ${suffix}`);
}

describe("builds run as Nix build users in the builder pod (issue 12 item 2)", () => {
  it("a builder runs as a nixbld user and cannot change another store path or the Nix database", async () => {
    operator = await installOperator(cluster);
    const fixture = join(workDir, "build-users-fixture");
    await rm(fixture, { recursive: true, force: true });
    await mkdir(fixture, { recursive: true });
    await writeFile(join(fixture, "flake.nix"), flake);
    await writeFile(join(fixture, "flake.lock"), JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }));
    const repo = await createFlakeRepo({ baseUrl: git.baseUrl, root: git.root, stop: async () => {} }, "build-users", fixture, workDir);

    await k.kubectl(["create", "namespace", ns]);
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: attack, namespace: ${ns} }
spec:
  flake: ${repo.flakeUrl}
  attribute: default
  format: package
  image: { repository: ${repository} }
  build: { timeout: 15m }
`);
    const describeImage = async () => JSON.stringify((await k.get<NixImageView>("niximage", "attack", ns))?.status ?? "no NixImage", null, 2);
    const build = await waitFor(
      "build 1 of NixImage e2e-build-users/attack to finish",
      async () => {
        const b = (await k.get<NixImageView>("niximage", "attack", ns))?.status?.lastBuild;
        return b && b.number === 1 && b.result !== "Running" ? b : undefined;
      },
      { timeoutMs: 12 * 60_000, intervalMs: 1000, describe: describeImage },
    );
    expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");

    // The build step ran as root with the chart's default capabilities and refused to build as root.
    const pods = await k.json<{ items: PodView[] }>(["-n", ns, "get", "pods", "-l", `job-name=${build.job}`]);
    const step = pods.items[0]!.spec.initContainers.find((c) => c.name === "build")!;
    expect(step.securityContext?.capabilities?.add).toEqual(["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"]);
    expect(step.args).toContain("--require-build-users");

    // What the builder could do, from the image pushed (skopeo, the independent client).
    const dir = join(workDir, "build-users-image");
    await rm(dir, { recursive: true, force: true });
    await execFileAsync("skopeo", ["copy", "--src-tls-verify=false", `docker://${repository}@${build.digest}`, `dir:${dir}`], { timeout: 120_000 });
    const report = (await fileInImage(dir, "-attack/report")).trim().split("\n");
    const [uid, gid] = /^uid=(\d+) gid=(\d+)$/.exec(report[0]!)!.slice(1).map(Number);
    expect(uid).toBeGreaterThanOrEqual(30001);
    expect(uid).toBeLessThanOrEqual(30008);
    expect(gid).toBe(30000);
    expect(report.slice(1)).toEqual(["victim-append=denied", "victim-remove=denied", "db=denied"]);
    expect((await fileInImage(dir, "-victim/data")).trim()).toBe(marker);
  });
});
