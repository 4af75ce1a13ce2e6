// A push Secret opts in to the NixImages that may use it (issue 12, item 7): on the test bed's API
// server, with the controller running as the chart's ServiceAccount, a NixImage naming a Secret
// that has not opted in to it gets no builder Job and is Stalled/PushSecretNotAllowed with the
// fix in the message; once the Secret's owner annotates it, the build starts. The controller asks
// for the Secret's metadata only, so its data never reaches the controller.
import { describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { kubeClients, kubectl, testNamespace, waitFor } from "../support/kube.ts";
import { buildJobs, chartServiceAccount, installTestCrd, startTestOperator, waitForJob } from "../support/operator-harness.ts";

const repository = "127.0.0.1:5000/shop/web";

async function status(namespace: string, name: string): Promise<NixImageStatus | undefined> {
  return (await kubeRequestJson<{ status?: NixImageStatus }>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/${name}`))
    .status;
}

describe("push Secret consent (real API server, chart RBAC)", () => {
  it("a NixImage may not push with a Secret that has not opted in to it; the owner's annotation lets it", async () => {
    await installTestCrd();
    const flake = await createGitRepo(minimalFlake({ marker: "consent" }), { prefix: "consent" });
    const namespace = await testNamespace("consent");
    const access = await chartServiceAccount();
    const operator = await startTestOperator({ access, namespaces: [namespace] });
    const secret = (name: string, annotations?: Record<string, string>) =>
      kubeClients().core.createNamespacedSecret({
        namespace,
        body: {
          metadata: { name, ...(annotations ? { annotations } : {}) },
          type: "kubernetes.io/dockerconfigjson",
          data: { ".dockerconfigjson": Buffer.from('{"auths":{"127.0.0.1:5000":{"auth":"Y2FuYXJ5OmNhbmFyeQ=="}}}').toString("base64") },
        },
      });
    await secret("team-api-push", { "niximage.io/allowed-images": "api" });
    await secret("unmarked-push");
    const create = (name: string, secretName: string) =>
      kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
        body: {
          apiVersion: "niximage.io/v1alpha1",
          kind: "NixImage",
          metadata: { name },
          spec: { flake: flake.flakeUrl, image: { repository, pushSecretRef: { name: secretName } } },
        },
      });
    await create("web", "team-api-push");
    await create("shop", "unmarked-push");
    for (const [name, message] of [
      ["web", /Secret team-api-push .* allows only api .*not web: `kubectl annotate secret team-api-push niximage.io\/allowed-images=api,web --overwrite`/],
      ["shop", /Secret unmarked-push .* has not opted in to NixImages/],
    ] as const) {
      const s = await waitFor(`NixImage ${name}: Stalled/PushSecretNotAllowed`, async () => {
        const st = await status(namespace, name);
        return st?.conditions?.find((c) => c.type === "Stalled" && c.status === "True" && c.reason === "PushSecretNotAllowed") ? st : undefined;
      });
      expect(s.conditions!.find((c) => c.type === "Stalled")!.message).toMatch(message);
    }
    await operator.idle();
    expect(await buildJobs(namespace)).toEqual([]);
    expect(operator.writes.get("POST jobs") ?? 0).toBe(0);

    // The Secret's owner lets "web" in: the next check (30 s later, or any change) starts its build.
    await kubectl(["annotate", "secret", "team-api-push", "-n", namespace, "niximage.io/allowed-images=api,web", "--overwrite"]);
    await kubectl(["annotate", "niximage", "web", "-n", namespace, "niximage.io/rebuild=now"]);
    await waitForJob(namespace, "web-build-1");
    expect((await buildJobs(namespace)).map((j) => j.metadata?.name)).toEqual(["web-build-1"]);
  });
});
