// Issue 10, case 16, on the real kubelet: a store volume whose Nix database was written by
// another Nix (schema version 11, as a Nix newer than the builder image's would leave it) is
// refused by the prepare step before Nix touches it. The NixImage says StoreIncompatible, names
// the PVC and says what to do; the build is not retried on the same volume; the image of the last
// good build stays, and the volume is left as the other Nix wrote it.
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { jobStoreVolume, runOnStore, webAppFlake } from "./support/fault-fixtures.ts";
import { createFlakeRepo } from "./support/git.ts";
import { diagnostics, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";

const { cluster, git, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-fault-store-version";
const repository = `${cluster.registry.host}/e2e/fault-store-version`;

interface NixImageView {
  status?: {
    latestImage?: string;
    lastBuild?: { number: number; job: string; result: string; failure?: { step: string; reason?: string; exitCode?: number; message: string } };
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

describe("case 16: a store written by another Nix version (issue 10)", () => {
  it("is refused with StoreIncompatible, the PVC and what to do; and leaves the volume untouched", async () => {
    operator = await installOperator(cluster);
    await waitFor(`namespace ${ns} from an earlier run to be gone`, async () => ((await k.get("namespace", ns)) ? undefined : true), {
      timeoutMs: 180_000,
      intervalMs: 1000,
    });
    const fixture = join(workDir, "fault-store-version-fixture");
    await rm(fixture, { recursive: true, force: true });
    await mkdir(fixture, { recursive: true });
    for (const [name, text] of Object.entries(webAppFlake({ default: { message: "v1\n" } }))) await writeFile(join(fixture, name), text);
    const repo = await createFlakeRepo(
      { baseUrl: git.baseUrl, root: git.root, stop: async () => {} },
      `fault-store-version-${Date.now().toString(36)}`,
      fixture,
      workDir,
    );
    await k.kubectl(["create", "namespace", ns]);
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: app, namespace: ${ns} }
spec:
  flake: ${repo.flakeUrl}
  image: { repository: ${repository} }
  build: { timeout: 10m }
`);
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
    const podsDone = (job: string) =>
      waitFor(
        `the pods of ${job} to stop`,
        async () => {
          const pods = await k.json<{ items: { status: { phase?: string } }[] }>(["-n", ns, "get", "pods", "-l", `job-name=${job}`]);
          return pods.items.every((p) => p.status.phase === "Failed" || p.status.phase === "Succeeded") ? true : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 500 },
      );

    const first = await finished(1);
    expect(first.lastBuild!.result, JSON.stringify(first.lastBuild!.failure)).toBe("Succeeded");
    const good = first.latestImage!;
    await podsDone(first.lastBuild!.job);
    const claim = await jobStoreVolume(k, ns, first.lastBuild!.job);

    // What the builder image's Nix wrote, and the same schema file as a newer Nix leaves it.
    const image = cluster.images.builder.reference;
    const seeded = await runOnStore(k, {
      namespace: ns,
      claim,
      image,
      name: "newer-nix",
      script: "nix --version; cat /nix/var/nix/db/schema; echo 11 > /nix/var/nix/db/schema",
    });
    expect(seeded.exitCode, seeded.log).toBe(0);
    const [nixVersion, builderSchema] = seeded.log.trim().split("\n");
    const hostSchema = (await readFile("/nix/var/nix/db/schema", "utf8").catch(() => "(no host Nix store)")).trim();

    const t0 = Date.now();
    await k.kubectl(["-n", ns, "annotate", "niximage", "app", "niximage.io/rebuild=1", "--overwrite"]);
    const second = await finished(2);
    const refusedAfter = (Date.now() - t0) / 1000;
    const failure = second.lastBuild!.failure!;
    expect(failure).toMatchObject({ step: "prepare", reason: "StoreIncompatible", exitCode: 78 });
    expect(failure.message).toContain(`refused store volume ${claim} (PVC ${ns}/${claim})`);
    expect(failure.message).toContain(`schema version "11", written by a newer Nix`);
    expect(failure.message).toContain(`this builder image's Nix uses schema "${builderSchema}"`);
    const ready = second.conditions!.find((c) => c.type === "Ready")!;
    expect(ready).toMatchObject({ status: "False", reason: "StoreIncompatible" });
    expect(ready.message).toContain("Delete that PVC");
    expect(ready.message).toContain(`${good} stays in use`);
    expect(second.conditions!.find((c) => c.type === "Stalled")?.status).toBe("True");
    expect(second.latestImage).toBe(good);
    const jobs = await k.json<{ items: { metadata: { name: string } }[] }>(["-n", ns, "get", "jobs", "-l", "niximage.io/image=app"]);
    expect(jobs.items.map((j) => j.metadata.name).sort()).toEqual(["app-build-1", "app-build-2"]);
    // The volume is as the other Nix left it: nothing was seeded over it or migrated.
    await podsDone(second.lastBuild!.job);
    const after = await runOnStore(k, { namespace: ns, claim, image, name: "schema-after", script: "cat /nix/var/nix/db/schema" });
    expect(after.log.trim()).toBe("11");

    process.stderr.write(
      `\nfaults-store-version e2e: builder ${nixVersion} (schema ${builderSchema}); host/integration Nix schema ${hostSchema}\n` +
        `rebuild request -> StoreIncompatible in status ${refusedAfter.toFixed(1)} s: ${ready.message}\n`,
    );
  });
});
