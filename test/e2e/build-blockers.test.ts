// A builder image that cannot be pulled, on the real kubelet (issue 13 item 4): the operator is
// installed with config.builder.nixImage naming an image the cluster's registry does not have.
// The kubelet's ErrImagePull/ImagePullBackOff reaches the NixImage's status as
// BuilderImagePullFailed (one Warning Event) while the build stays Running. Prints the time from
// the Job's creation to the condition. A CA bundle ConfigMap that does not exist shows as
// BuilderConfigError from the kubelet's FailedMount Event. The operator is installed as the other e2e files expect
// it afterwards.
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { diagnostics, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";

const { cluster } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-blockers";
let operator: InstalledOperator | undefined;
let failed = false;

interface NixImageView {
  status?: {
    lastBuild?: { job: string; result: string };
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
  await k.kubectl(["delete", "namespace", ns, "--wait=false"]).catch(() => undefined);
  // Back to the builder image the other files build with.
  await installOperator(cluster);
});

describe("a builder image that cannot be pulled", () => {
  it("shows BuilderImagePullFailed in status with the kubelet's message while the build stays Running", async () => {
    const missing = `${cluster.registry.host}/e2e/no-such-builder:1`;
    operator = await installOperator(cluster, { builderImage: missing });
    await k.kubectl(["create", "namespace", ns]);
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: app, namespace: ${ns} }
spec:
  flake: git+${inject("e2e").git.baseUrl}/does-not-matter.git
  image: { repository: ${cluster.registry.host}/e2e/blocked-app }
`);
    const status = await waitFor(
      "BuilderImagePullFailed in the NixImage's status",
      async () => {
        const s = (await k.get<NixImageView>("niximage", "app", ns))?.status;
        return s?.conditions?.find((c) => c.type === "Reconciling")?.reason === "BuilderImagePullFailed" ? s : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 250, describe: async () => JSON.stringify((await k.get<NixImageView>("niximage", "app", ns))?.status ?? {}, null, 2) },
    );
    const seen = Date.now();
    const job = await k.get<{ metadata: { creationTimestamp: string } }>("job", status.lastBuild!.job, ns);
    const reconciling = status.conditions!.find((c) => c.type === "Reconciling")!;
    process.stderr.write(
      `\nbuild-blockers e2e: Job created -> BuilderImagePullFailed in status: ${((seen - Date.parse(job!.metadata.creationTimestamp)) / 1000).toFixed(1)} s\n${reconciling.message}\n`,
    );
    expect(reconciling.status).toBe("True");
    expect(reconciling.message).toContain(`step prepare cannot pull its image ${missing}`);
    expect(reconciling.message).toMatch(/ErrImagePull|ImagePullBackOff/);
    expect(status.conditions!.find((c) => c.type === "Ready")?.status).toBe("Unknown");
    expect(status.lastBuild!.result).toBe("Running");
    // The Event is recorded after the status write.
    const warnings = await waitFor(
      "the BuilderImagePullFailed Warning Event",
      async () => {
        const events = await k.json<{ items: { reason: string; type: string; involvedObject: { kind: string } }[] }>(["-n", ns, "get", "events"]);
        const found = events.items.filter((e) => e.reason === "BuilderImagePullFailed" && e.type === "Warning" && e.involvedObject.kind === "NixImage");
        return found.length > 0 ? found : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    expect(warnings).toHaveLength(1);
  });

  it("a CA bundle ConfigMap that does not exist: the kubelet's FailedMount becomes BuilderConfigError", async () => {
    // The kubelet mounts only a scheduled pod, and a pod is scheduled only once its store volume
    // is bound: give this build the namespace's bound volume by ending the stuck build above
    // (a second, new volume may wait on the provisioner on a busy machine).
    await k.kubectl(["-n", ns, "delete", "niximage", "app", "--wait=true"]);
    await waitFor(
      "the unpullable build's pod to be gone",
      async () => (await k.json<{ items: unknown[] }>(["-n", ns, "get", "pods", "-l", "niximage.io/image=app"])).items.length === 0,
      { timeoutMs: 120_000, intervalMs: 500 },
    );
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: ca, namespace: ${ns} }
spec:
  flake: git+${inject("e2e").git.baseUrl}/does-not-matter.git
  image: { repository: ${cluster.registry.host}/e2e/blocked-ca }
  build: { caBundleRef: { name: corp-ca } }
`);
    const status = await waitFor(
      "BuilderConfigError in the NixImage's status",
      async () => {
        const s = (await k.get<NixImageView>("niximage", "ca", ns))?.status;
        return s?.conditions?.find((c) => c.type === "Reconciling")?.reason === "BuilderConfigError" ? s : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 250, describe: async () => JSON.stringify((await k.get<NixImageView>("niximage", "ca", ns))?.status ?? {}, null, 2) },
    );
    const seen = Date.now();
    const job = await k.get<{ metadata: { creationTimestamp: string } }>("job", status.lastBuild!.job, ns);
    const reconciling = status.conditions!.find((c) => c.type === "Reconciling")!;
    process.stderr.write(
      `\nbuild-blockers e2e: Job created -> BuilderConfigError (FailedMount) in status: ${((seen - Date.parse(job!.metadata.creationTimestamp)) / 1000).toFixed(1)} s\n${reconciling.message}\n`,
    );
    expect(reconciling.message).toContain('configmap "corp-ca" not found');
    expect(status.lastBuild!.result).toBe("Running");
  });
});
