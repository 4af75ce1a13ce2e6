// Push-triggered builds with the real controller: a signed push delivery to the webhook receiver
// makes a NixImage that polls only once an hour build the pushed commit at once. Only the webhook
// can explain the second build: the clock is real and the next poll is an hour away.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { KubernetesObject } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { hmacSha256Hex } from "../../src/webhook/webhook-signature.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { kubeClients, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { buildJobs, chartServiceAccount, finishBuildPod, installTestCrd, pushResult, startTestOperator, waitForJob } from "../support/operator-harness.ts";

type NixImageObject = KubernetesObject & { status?: NixImageStatus };
const repository = "127.0.0.1:5000/shop/web";
const hex = (seed: string) => (seed.repeat(64) + "0".repeat(64)).slice(0, 64);
const secret = randomBytes(32).toString("hex");

/** GitHub's documented push payload (test/fixtures/webhooks/github-push.json) for a test bed repository. */
async function githubPush(httpUrl: string, fullName: string, ref: string, before: string, after: string): Promise<Buffer> {
  const payload = JSON.parse(await readFile(new URL("../fixtures/webhooks/github-push.json", import.meta.url), "utf8")) as Record<string, unknown> & {
    repository: Record<string, unknown>;
  };
  payload.ref = ref;
  payload.before = before;
  payload.after = after;
  payload.repository = { ...payload.repository, full_name: fullName, clone_url: httpUrl, html_url: httpUrl.replace(/\.git$/, ""), default_branch: "master" };
  delete payload.repository.ssh_url;
  delete payload.repository.git_url;
  return Buffer.from(JSON.stringify(payload));
}

async function deliver(
  port: number,
  body: Buffer,
  delivery: string,
  sign = secret,
): Promise<{ status: number; body: { outcome: string; niximages?: number } }> {
  const res = await fetch(`http://127.0.0.1:${port}/webhook`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-github-event": "push",
      "x-github-delivery": delivery,
      "x-hub-signature-256": `sha256=${hmacSha256Hex(sign, body)}`,
    },
    body,
  });
  return { status: res.status, body: (await res.json()) as { outcome: string; niximages?: number } };
}

describe("push-triggered builds", () => {
  beforeAll(installTestCrd);

  it("a signed push builds the pushed commit at once; bad signatures, other repositories and replays trigger nothing", async () => {
    const namespace = await testNamespace("webhook");
    const repo = await createGitRepo(minimalFlake({ marker: "one" }), { prefix: "hooked" });
    const other = await createGitRepo(minimalFlake({ marker: "other" }), { prefix: "unhooked" });
    const secretDir = await mkdtemp(join(testbed().tmpDir, "webhook-secret-"));
    await writeFile(join(secretDir, "secret"), `${secret}\n`, { mode: 0o600 });
    const access = await chartServiceAccount({ set: ["webhook.enabled=true"] });
    const operator = await startTestOperator({
      access,
      namespaces: [namespace],
      config: { webhook: { enabled: true, address: "127.0.0.1:0", secretFile: join(secretDir, "secret") } },
    });
    const port = operator.webhook!.port;
    await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
      body: {
        apiVersion: "niximage.io/v1alpha1",
        kind: "NixImage",
        metadata: { name: "web" },
        spec: { flake: repo.flakeUrl, triggers: { interval: "1h" }, image: { repository } },
      },
    });
    const first = await waitForJob(namespace, "web-build-1");
    expect(first.metadata?.annotations?.["niximage.io/revision"]).toContain(repo.rev);
    await finishBuildPod(namespace, "web-build-1", { succeed: { message: pushResult(repository, hex("1"), repo.rev) } });
    await waitFor("first image in status", async () => {
      const image = await kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`);
      return image.status?.latestImage?.endsWith(hex("1")) ? image : undefined;
    });
    await operator.idle();

    const before = repo.rev;
    const second = await repo.commit({ "message.txt": "two" });
    const push = await githubPush(repo.httpUrl, `testbed/${repo.name}`, "refs/heads/master", before, second);

    // Refused or irrelevant deliveries first: none of them may start a build.
    expect((await deliver(port, push, "d-bad", "not the secret")).status).toBe(401);
    const elsewhere = await githubPush(other.httpUrl, `testbed/${other.name}`, "refs/heads/master", other.rev, other.rev);
    expect(await deliver(port, elsewhere, "d-other")).toEqual({ status: 202, body: expect.objectContaining({ outcome: "unmatched", niximages: 0 }) });
    const branch = await githubPush(repo.httpUrl, `testbed/${repo.name}`, "refs/heads/feature", before, second);
    expect((await deliver(port, branch, "d-branch")).body.outcome).toBe("unmatched");
    await operator.idle();
    expect((await buildJobs(namespace)).map((j) => j.metadata?.name)).toEqual(["web-build-1"]);

    // The push itself: the controller checks the branch now and builds exactly the pushed commit.
    expect(await deliver(port, push, "d-push")).toEqual({ status: 202, body: expect.objectContaining({ outcome: "triggered", niximages: 1 }) });
    const job2 = await waitForJob(namespace, "web-build-2");
    expect(job2.metadata?.annotations?.["niximage.io/reasons"]).toBe("RevisionChanged");
    expect(job2.metadata?.annotations?.["niximage.io/revision"]).toContain(second);

    // The forge re-sends the same delivery: 409, nothing more.
    expect((await deliver(port, push, "d-push")).status).toBe(409);
    await operator.idle();
    expect((await buildJobs(namespace)).length).toBe(2);

    const metrics = operator.metrics.render();
    for (const [outcome, n] of Object.entries({ bad_signature: 1, unmatched: 2, triggered: 1, duplicate: 1 })) {
      expect(metrics).toMatch(new RegExp(`^niximage_webhook_deliveries_total\\{forge="github",outcome="${outcome}"\\} ${n}$`, "m"));
    }
  });
});
