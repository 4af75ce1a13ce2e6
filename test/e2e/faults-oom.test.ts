// Issue 10, case 12, on the real kubelet: a build that needs more memory than the build step's
// limit (spec.build.resources.limits.memory) is OOM-killed by the kernel's memory cgroup. The
// NixImage's status says OOMKilled with the limit, the build is not retried with the same
// inputs, the opted-in Deployment stays on the image of the last good build, and Nix finds the
// store volume clean afterwards (`nix-store --verify --check-contents` in a pod on that volume).
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { appDeploymentYaml, deploymentServes, jobStoreVolume, verifyStore, webAppFlake } from "./support/fault-fixtures.ts";
import { createFlakeRepo } from "./support/git.ts";
import { diagnostics, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";

const { cluster, git, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-fault-oom";
const repository = `${cluster.registry.host}/e2e/fault-oom`;
const limit = "192Mi";

interface NixImageView {
  status?: {
    latestImage?: string;
    lastBuild?: {
      number: number;
      job: string;
      result: string;
      attempt?: number;
      failure?: { step: string; reason?: string; exitCode?: number; message: string };
    };
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

let operator: InstalledOperator | undefined;
let failed = false;
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});
afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
  await k.kubectl(["delete", "namespace", ns, "--wait=false"]).catch(() => undefined);
});

describe("case 12: an OOM-killed build (issue 10)", () => {
  it("says OOMKilled with the limit, is not retried, keeps the old image serving, and leaves a clean store", async () => {
    operator = await installOperator(cluster);
    // A namespace of this file's own: an earlier run's may still be terminating.
    await waitFor("namespace " + ns + " from an earlier run to be gone", async () => ((await k.get("namespace", ns)) ? undefined : true), {
      timeoutMs: 180_000,
      intervalMs: 1000,
    });
    const fixture = join(workDir, "fault-oom-fixture");
    await rm(fixture, { recursive: true, force: true });
    await mkdir(fixture, { recursive: true });
    // `hog` needs 512 MiB in its builder (dd's buffer), above the limit; `default` needs next to nothing.
    const files = webAppFlake({
      default: { message: "v1\n" },
      hog: { message: "v2\n", extra: "echo 'fault-oom: allocating 512 MiB'; /bin/busybox dd if=/dev/zero of=/dev/null bs=512M count=1" },
    });
    for (const [name, text] of Object.entries(files)) await writeFile(join(fixture, name), text);
    const repo = await createFlakeRepo(
      { baseUrl: git.baseUrl, root: git.root, stop: async () => {} },
      `fault-oom-${Date.now().toString(36)}`,
      fixture,
      workDir,
    );

    await k.kubectl(["create", "namespace", ns]);
    await k.apply(appDeploymentYaml({ namespace: ns, name: "app", imageName: "app", placeholderImage: cluster.images.pause.reference }));
    const nixImage = (attribute: string) => `apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: app, namespace: ${ns} }
spec:
  flake: ${repo.flakeUrl}
  attribute: ${attribute}
  image: { repository: ${repository} }
  build:
    timeout: 10m
    resources: { limits: { memory: ${limit} } }
`;
    const status = async () => (await k.get<NixImageView>("niximage", "app", ns))?.status;
    const describeImage = async () => JSON.stringify((await status()) ?? "no NixImage", null, 2);
    const finished = (n: number) =>
      waitFor(
        `build ${n} of ${ns}/app to finish`,
        async () => {
          const s = await status();
          return s?.lastBuild?.number === n && s.lastBuild.result !== "Running" ? s : undefined;
        },
        { timeoutMs: 10 * 60_000, intervalMs: 500, describe: describeImage },
      );

    await k.apply(nixImage("default"));
    const first = await finished(1);
    expect(first.lastBuild!.result, JSON.stringify(first.lastBuild!.failure)).toBe("Succeeded");
    const good = first.latestImage!;
    await deploymentServes(k, ns, "app", good);

    // The same NixImage now builds the attribute that needs more memory than its limit.
    const t0 = Date.now();
    await k.apply(nixImage("hog"));
    const second = await finished(2);
    const failedAfter = (Date.now() - t0) / 1000;
    const failure = second.lastBuild!.failure!;
    expect(second.lastBuild!.result).toBe("Failed");
    expect(failure).toMatchObject({ step: "build", reason: "OOMKilled" });
    expect(failure.message).toContain(`than its limit (${limit})`);
    expect(failure.message).toContain("raise spec.build.resources.limits.memory");
    // Deterministic: Stalled with BuildFailed, no retry scheduled, the old image named as kept.
    const ready = second.conditions!.find((c) => c.type === "Ready")!;
    expect(ready).toMatchObject({ status: "False", reason: "BuildFailed" });
    expect(ready.message).toContain(`${good} stays in use`);
    expect(ready.message).not.toMatch(/attempt \d+ of/);
    expect(second.conditions!.find((c) => c.type === "Stalled")?.status).toBe("True");
    expect(second.latestImage).toBe(good);
    const jobs = await k.json<{ items: { metadata: { name: string } }[] }>(["-n", ns, "get", "jobs", "-l", "niximage.io/image=app"]);
    expect(jobs.items.map((j) => j.metadata.name).sort()).toEqual(["app-build-1", "app-build-2"]);
    // The Deployment still runs the first build's digest, ready.
    await deploymentServes(k, ns, "app", good, 30_000);

    // The build pod is gone from the volume once its Job failed (Never restarts); Nix checks the store.
    await waitFor(
      "build 2's pod to stop",
      async () => {
        const pods = await k.json<{ items: { status: { phase?: string } }[] }>(["-n", ns, "get", "pods", "-l", `job-name=${second.lastBuild!.job}`]);
        return pods.items.every((p) => p.status.phase === "Failed" || p.status.phase === "Succeeded") ? true : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 500 },
    );
    const claim = await jobStoreVolume(k, ns, second.lastBuild!.job);
    const verify = await verifyStore(k, { namespace: ns, claim, image: cluster.images.builder.reference });
    process.stderr.write(
      `\nfaults-oom e2e: spec change -> OOMKilled in status ${failedAfter.toFixed(1)} s; ${failure.message}\nnix-store --verify --check-contents on ${claim}: exit ${verify.exitCode}\n${verify.log}\n`,
    );
    expect(verify.exitCode, verify.log).toBe(0);
    expect(verify.log).not.toMatch(/error|corrupt|disappeared|was modified/i);
  });
});
