// Issue 12, item 4, on the real cluster: a NixImage whose attribute is a streamLayeredImage-style
// script, pushed WITH a push Secret. The builder pod runs the script in its `stream` container
// (uid 65534, no Secret, no token, no layer cache) and streams it into the `push` container, which
// holds the Secret. The image the script prints reports what the script could see; it must see
// none of the push credentials, the layer cache key or a service account token.
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { createFlakeRepo } from "./support/git.ts";
import { diagnostics, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";
import { streamProbeFlake } from "../support/stream-probe-flake.ts";

const execFileAsync = promisify(execFile);
const { cluster, git, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-stream";
const repository = `${cluster.registry.host}/e2e/stream`;
const canary = `canary-${Date.now().toString(36)}-stream`;
const probes = ["/var/run/niximage/push/config.json", "/var/cache/niximage/entry-key", "/var/run/secrets/kubernetes.io/serviceaccount/token"];

interface NixImageView {
  status?: {
    latestImage?: string;
    lastBuild?: { number: number; job: string; result: string; digest?: string; failure?: { step: string; message: string } };
  };
}

interface PodView {
  spec: { containers: { name: string; volumeMounts?: { name: string; mountPath: string }[] }[] };
  status: { containerStatuses?: { name: string; state?: { terminated?: { exitCode: number; message?: string } } }[] };
}

let operator: InstalledOperator | undefined;
let failed = false;
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});
afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
});

describe("a streamLayeredImage pushed with a Secret (issue 12 item 4)", () => {
  it("the script runs in the stream container and cannot see the push Secret, the cache key or a token", async () => {
    operator = await installOperator(cluster);
    const fixture = join(workDir, "stream-fixture");
    await rm(fixture, { recursive: true, force: true });
    await mkdir(fixture, { recursive: true });
    for (const [name, text] of Object.entries(streamProbeFlake(probes))) await writeFile(join(fixture, name), text);
    const repo = await createFlakeRepo({ baseUrl: git.baseUrl, root: git.root, stop: async () => {} }, "stream", fixture, workDir);

    await k.kubectl(["create", "namespace", ns]);
    // The registry does not ask for credentials; the Secret is there to be (not) seen.
    await k.kubectl([
      "-n",
      ns,
      "create",
      "secret",
      "docker-registry",
      "regcred",
      `--docker-server=${cluster.registry.host}`,
      "--docker-username=e2e",
      `--docker-password=${canary}`,
    ]);
    // The Secret's owner lets this NixImage push with it (item 7: Secrets opt in).
    await k.kubectl(["-n", ns, "annotate", "secret", "regcred", "niximage.io/allowed-images=stream", "--overwrite"]);
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: stream, namespace: ${ns} }
spec:
  flake: ${repo.flakeUrl}
  attribute: default
  format: stream-layered
  image:
    repository: ${repository}
    pushSecretRef: { name: regcred }
  build: { timeout: 15m }
`);
    const describeImage = async () => JSON.stringify((await k.get<NixImageView>("niximage", "stream", ns))?.status ?? "no NixImage", null, 2);
    const build = await waitFor(
      "build 1 of NixImage e2e-stream/stream to finish",
      async () => {
        const b = (await k.get<NixImageView>("niximage", "stream", ns))?.status?.lastBuild;
        return b && b.number === 1 && b.result !== "Running" ? b : undefined;
      },
      { timeoutMs: 12 * 60_000, intervalMs: 1000, describe: describeImage },
    );
    expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");

    // The pod: the push container mounted the Secret, the stream container did not, and streamed.
    const pods = await k.json<{ items: PodView[] }>(["-n", ns, "get", "pods", "-l", `job-name=${build.job}`]);
    const pod = pods.items[0]!;
    const mounts = (name: string) => pod.spec.containers.find((c) => c.name === name)?.volumeMounts?.map((m) => m.name) ?? [];
    expect(mounts("push")).toContain("push-secret");
    expect(mounts("stream")).not.toContain("push-secret");
    const streamStatus = pod.status.containerStatuses?.find((c) => c.name === "stream")?.state?.terminated;
    expect(streamStatus?.exitCode).toBe(0);
    expect(streamStatus?.message).toMatch(/^streamed \d+ bytes to the push step$/);

    // What the script saw, from the image it printed (skopeo, the independent client).
    const dir = join(workDir, "stream-image");
    await rm(dir, { recursive: true, force: true });
    await execFileAsync("skopeo", ["copy", "--src-tls-verify=false", `docker://${repository}@${build.digest}`, `dir:${dir}`], { timeout: 120_000 });
    const manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as { layers: { digest: string }[] };
    const layer = join(dir, manifest.layers[0]!.digest.replace(/^sha256:/, ""));
    const { stdout: report } = await execFileAsync("tar", ["-xOf", layer, "./report"]);
    const lines = report.trim().split("\n");
    expect(lines[0]).toBe("uid=65534 gid=65534");
    expect(lines.slice(1, 1 + probes.length)).toEqual(probes.map((p) => `${p}=unreadable`));
    expect(report).not.toContain(canary);
  });
});
