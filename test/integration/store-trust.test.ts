// Issue 12, item 2: store poisoning across NixImages. Store volumes are shared by the NixImages of
// a namespace, so (a) a store path changed after Nix registered it must never reach an image: the
// build step verifies the closure with real Nix and refuses; (b) a NixImage may only add binary
// caches and keys from the operator's allowlist (the real controller against the real API server).
// Builds as Nix build users are covered by test/integration/build-users.test.ts.
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { KubernetesObject } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { runCli } from "../support/builder-fixtures.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { kubeClients, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { buildJobs, chartServiceAccount, installTestCrd, startTestOperator, waitForJob } from "../support/operator-harness.ts";

const bed = testbed();
let work = "";

beforeAll(async () => {
  work = join(bed.tmpDir, "store-trust");
  await mkdir(work, { recursive: true });
});

describe("a tampered store is refused (issue 12 item 2)", () => {
  it("build-step refuses a closure with a path changed after registration, and builds again once it is restored", async () => {
    const marker = `trust-${randomBytes(4).toString("hex")}`;
    const repo = await createGitRepo(minimalFlake({ marker, script: `/bin/mkdir $out && echo ${marker} > $out/data` }), { prefix: "store-trust" });
    const build = (out: string) => {
      const tm = `${out}.tm`;
      return runCli(bed, ["build-step", "--flake", repo.flakeUrl, "--attribute", "default", "--out", out, "--termination-message", tm]).then(async (r) => ({
        ...r,
        message: await readFile(tm, "utf8").catch(() => ""),
      }));
    };
    const first = await build(join(work, "first"));
    expect(first.code, first.stderr).toBe(0);
    const outPath = (JSON.parse(await readFile(join(work, "first", "result.json"), "utf8")) as { outPath: string }).outPath;

    // What a build running as root on a shared volume could do: change a registered path.
    const planted = join(outPath, "planted");
    await chmod(outPath, 0o755);
    await writeFile(planted, "not what Nix built\n");
    await chmod(outPath, 0o555);
    try {
      const second = await build(join(work, "second"));
      expect(second.code).toBe(1);
      expect(second.message).toMatch(/verify the closure .* failed \(store-corrupted\): .*changed after Nix registered it.*Delete the store volume/);
      expect(second.message).toContain(outPath);
    } finally {
      await chmod(outPath, 0o755);
      await rm(planted, { force: true });
      await chmod(outPath, 0o555);
    }
    const third = await build(join(work, "third"));
    expect(third.code, third.stderr).toBe(0);
  });
});

describe("binary caches only from the operator's allowlist (issue 12 item 2)", () => {
  beforeAll(async () => {
    await installTestCrd();
  });

  const key = (name: string) => `${name}:${Buffer.alloc(32, name).toString("base64")}`;

  it("a NixImage that adds a cache or key the operator does not allow is Stalled with the reason; an allowed one builds", async () => {
    const access = await chartServiceAccount();
    const namespace = await testNamespace("nixconfig");
    const repo = await createGitRepo(minimalFlake({ marker: "nixconfig" }), { prefix: "nixconfig" });
    await startTestOperator({
      access,
      namespaces: [namespace],
      config: { nixConfigAllowlist: { substituters: ["https://cache.example.org"], trustedPublicKeys: [key("cache.example.org-1")] } },
    });
    const create = (name: string, nixConfig: object) =>
      kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
        body: {
          apiVersion: "niximage.io/v1alpha1",
          kind: "NixImage",
          metadata: { name },
          spec: { flake: repo.flakeUrl, image: { repository: "127.0.0.1:5000/shop/web" }, build: { nixConfig } },
        },
      });
    await create("allowed", { substituters: ["https://cache.example.org/"], trustedPublicKeys: [key("cache.example.org-1")] });
    await create("denied", { substituters: ["https://cache.example.org", "https://evil.example.net"], trustedPublicKeys: [key("evil-1")] });

    const job = await waitForJob(namespace, "allowed-build-1");
    const args =
      job.spec?.template.spec?.containers?.find((c) => c.name === "build")?.args ??
      job.spec?.template.spec?.initContainers?.find((c) => c.name === "build")?.args;
    expect(args).toEqual(expect.arrayContaining(["--substituter", "https://cache.example.org/", "--trusted-public-key", key("cache.example.org-1")]));

    const denied = await waitFor(
      "NixImage denied: Stalled",
      async () => {
        const image = await kubeRequestJson<KubernetesObject & { status?: NixImageStatus }>(
          kubeClients().kc,
          "GET",
          `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/denied`,
        );
        return image.status?.conditions?.find((c) => c.type === "Stalled" && c.status === "True");
      },
      { timeoutMs: 30_000 },
    );
    expect(denied.reason).toBe("InvalidSpec");
    expect(denied.message).toMatch(/spec\.build\.nixConfig\.substituters\[1\]: https:\/\/evil\.example\.net is not a binary cache this operator allows/);
    expect(denied.message).toMatch(/spec\.build\.nixConfig\.trustedPublicKeys\[0\]: evil-1 is not a signing key this operator allows/);
    expect(denied.message).not.toMatch(/substituters\[0\]/);
    expect((await buildJobs(namespace)).map((j) => j.metadata?.name)).toEqual(["allowed-build-1"]);
  });
});
