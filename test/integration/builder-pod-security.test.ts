// The builder pod's posture judged by the real API server's Pod Security admission (issue 12,
// item 5): each step of a builder Job, as a pod of its own in a namespace that enforces
// `restricted`, is created with dryRun (admission runs, nothing is stored). push, stream and report
// pass; prepare, fetch, build and cache are refused for exactly what docs/security.md says they
// need (root, and the capabilities prepare and build add back), also when the whole pod is judged
// in a `restricted` namespace; the whole builder pod passes `baseline`.
import type { V1Container, V1Job, V1Pod } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { nixImageSchema } from "../../src/api/niximage.ts";
import { parseOperatorConfig } from "../../src/config/operator-config.ts";
import { builderJob } from "../../src/controller/builder-job.ts";
import { kubeClients, kubectl, testNamespace } from "../support/kube.ts";

const config = parseOperatorConfig({
  builder: { nixImage: "nix.test/nix:2.28", pushImage: "operator.test/nio:0.1.0" },
  // A cluster binary cache: the Job gets its cache step too.
  binaryCache: {
    url: "https://cache.example.com",
    publicKeys: ["cache.example.com-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
    signingKeySecret: { name: "cache-key" },
  },
});

function job(kind: "Image" | "Warm"): V1Job {
  const image = nixImageSchema.parse({
    apiVersion: "niximage.io/v1alpha1",
    kind: "NixImage",
    metadata: { name: "web", namespace: "shop", uid: "0b6a4c52-7f1e-4a57-9a38-000000000001", generation: 1 },
    spec: {
      flake: "github:acme/shop?ref=main",
      image: { repository: "registry.example.com/acme/web", pushSecretRef: { name: "regcred" } },
      build: { resources: { requests: { cpu: "1", memory: "1Gi" } } },
      // A source credentials Secret: the Job gets its fetch step too.
      sourceCredentialsSecretRef: { name: "forge-token" },
    },
  });
  return builderJob({
    image,
    kind,
    number: 1,
    reasons: ["SpecChanged"],
    flake: `github:acme/shop/${"1".repeat(40)}`,
    storeVolume: "niximage-store-0",
    specHash: "0123456789abcdef",
    builderHash: "fedcba9876543210",
    config,
  });
}

/** The Job's pod, or the pod with only `step` (as its one container), in `namespace`. */
function podOf(j: V1Job, namespace: string, step?: string): V1Pod {
  const spec = j.spec!.template.spec!;
  const all: V1Container[] = [...(spec.initContainers ?? []), ...spec.containers];
  const only = all.find((c) => c.name === step);
  if (step && !only) throw new Error(`no step ${step}`);
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `builder-${step ?? "all"}`, namespace },
    spec: step ? { ...spec, initContainers: undefined, containers: [only!] } : spec,
  };
}

async function namespaceEnforcing(level: "restricted" | "baseline"): Promise<string> {
  const ns = await testNamespace(`pss-${level}`);
  await kubectl(["label", "namespace", ns, `pod-security.kubernetes.io/enforce=${level}`, "pod-security.kubernetes.io/enforce-version=latest"]);
  return ns;
}

/** Creates the pod with dryRun=All: "" when admitted, else the API server's message. */
async function admission(pod: V1Pod): Promise<string> {
  try {
    await kubeClients().core.createNamespacedPod({ namespace: pod.metadata!.namespace!, body: pod, dryRun: "All" });
    return "";
  } catch (e) {
    const body = (e as { body?: string }).body;
    const message = body ? ((JSON.parse(body) as { message?: string }).message ?? body) : String(e);
    if (!/violates PodSecurity/.test(message)) throw new Error(`the dry-run create failed for another reason: ${message}`);
    return message;
  }
}

describe("builder pod posture under Pod Security admission (real API server)", () => {
  it("push and stream (image build) and report (warm build) pass `restricted`", async () => {
    const ns = await namespaceEnforcing("restricted");
    expect(await admission(podOf(job("Image"), ns, "push"))).toBe("");
    expect(await admission(podOf(job("Image"), ns, "stream"))).toBe("");
    expect(await admission(podOf(job("Warm"), ns, "report"))).toBe("");
  });

  it("prepare, fetch, build and cache do not pass `restricted`, for root and their added capabilities only", async () => {
    const ns = await namespaceEnforcing("restricted");
    const prepare = await admission(podOf(job("Image"), ns, "prepare"));
    expect(prepare).toMatch(/runAsNonRoot != true/);
    expect(prepare).toMatch(/unrestricted capabilities \(container "prepare" must not include "CHOWN" in securityContext.capabilities.add\)/);
    const build = await admission(podOf(job("Image"), ns, "build"));
    expect(build).toMatch(/runAsNonRoot != true/);
    expect(build).toMatch(/must not include "CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID" in securityContext.capabilities.add/);
    // fetch (only with source credentials) runs as root on the store, with no capability at all.
    const fetch = await admission(podOf(job("Image"), ns, "fetch"));
    expect(fetch).toMatch(/runAsNonRoot != true/);
    expect(fetch).not.toMatch(/capabilities/);
    // cache (with a cluster binary cache) runs `nix copy` as root on the store, no capability.
    const cache = await admission(podOf(job("Image"), ns, "cache"));
    expect(cache).toMatch(/runAsNonRoot != true/);
    expect(cache).not.toMatch(/capabilities/);
    // Nothing else: no privilege escalation, seccomp, volume types, host namespaces.
    for (const message of [prepare, build, fetch, cache]) {
      expect(message).not.toMatch(/allowPrivilegeEscalation|seccompProfile|restricted volume types|host namespaces|privileged/);
    }
  });

  it("a namespace enforcing `restricted` refuses the whole pod for exactly the root steps prepare, fetch, build and cache", async () => {
    const ns = await namespaceEnforcing("restricted");
    const message = await admission(podOf(job("Image"), ns));
    const named = /runAsNonRoot != true \((?:pod or )?containers? ([^)]*?) must/.exec(message)?.[1];
    expect(named, message).toBe('"prepare", "fetch", "build", "cache"');
    expect(message).toMatch(/unrestricted capabilities \(containers "prepare", "build" must not include/);
    expect(message).not.toMatch(/"push"|"stream"/);
  });

  it("the whole builder pod (image and warm build) passes `baseline`", async () => {
    const ns = await namespaceEnforcing("baseline");
    expect(await admission(podOf(job("Image"), ns))).toBe("");
    expect(await admission(podOf(job("Warm"), ns))).toBe("");
  });
});
