// The Helm chart (charts/nix-image-operator) with the real helm and the test bed's API server:
// lint; `helm template` with default and non-default values and what they must render; the values
// schema against the operator's own config schema; the rendered manifests applied for real (the
// ServiceMonitor excepted: its CRD does not exist here, see below); the operator's ServiceAccount
// checked verb by verb with `kubectl auth can-i --as=system:serviceaccount:...` (a
// SelfSubjectAccessReview under impersonation) for everything it needs and for what it must not
// have; and the install steps of the README, done exactly as a newcomer would, up to a running,
// ready, leading controller that starts a first build.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { parseAllDocuments, parse as parseYaml, stringify as toYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { nixImageSchema } from "../../src/api/niximage.ts";
import { operatorConfigSchema, parseOperatorConfig } from "../../src/config/operator-config.ts";
import { builderJob } from "../../src/controller/builder-job.ts";
import { builderNetworkPolicy } from "../../src/controller/builder-network-policy.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { createNamespace, deleteNamespace, kubeClients, kubectl, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { installTestCrd } from "../support/operator-harness.ts";
import { freePort, httpGet, run, startDaemon } from "../support/process.ts";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const chartDir = join(repo, "charts/nix-image-operator");
const defaultOperatorImage = "ghcr.io/niximage/nix-image-operator:0.1.0";

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  [key: string]: any;
}

async function scratch(prefix: string): Promise<string> {
  const dir = join(testbed().tmpDir, "chart-test");
  await mkdir(dir, { recursive: true });
  return mkdtemp(join(dir, `${prefix}-`));
}

/** The test bed's helm, with its own cache/config dirs and the test bed's kubeconfig. */
async function helm(args: string[], timeoutMs = 120_000): Promise<string> {
  const bed = testbed();
  const home = join(bed.tmpDir, "helm-home");
  const env = {
    ...process.env,
    KUBECONFIG: bed.kube.kubeconfig,
    HELM_CACHE_HOME: join(home, "cache"),
    HELM_CONFIG_HOME: join(home, "config"),
    HELM_DATA_HOME: join(home, "data"),
  };
  return (await run(bed.kube.helm, args, { cwd: repo, env, timeoutMs })).stdout;
}

async function valuesFile(values: object): Promise<string> {
  const file = join(await scratch("values"), "values.yaml");
  await writeFile(file, toYaml(values));
  return file;
}

interface Rendered {
  release: string;
  namespace: string;
  fullname: string;
  manifests: Manifest[];
}

async function render(values?: object, opts: { release?: string; namespace?: string } = {}): Promise<Rendered> {
  const release = opts.release ?? "nio";
  const namespace = opts.namespace ?? "nix-image-operator";
  const args = ["template", release, chartDir, "--namespace", namespace, "--kube-version", testbed().kube.version];
  if (values) args.push("--values", await valuesFile(values));
  const out = await helm(args);
  const manifests = parseAllDocuments(out)
    .map((d) => d.toJS() as Manifest | null)
    .filter((m): m is Manifest => m !== null);
  return { release, namespace, fullname: release.includes("nix-image-operator") ? release : `${release}-nix-image-operator`, manifests };
}

function find(r: Rendered, kind: string, name?: string): Manifest {
  const matches = r.manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  expect(
    matches.map((m) => `${m.kind}/${m.metadata.name}`),
    `exactly one ${kind}${name ? ` ${name}` : ""}`,
  ).toHaveLength(1);
  return matches[0]!;
}

function operatorConfigOf(r: Rendered) {
  const text = find(r, "ConfigMap").data["config.yaml"] as string;
  // parseOperatorConfig is strict: an unknown or misspelled key fails here as it would at start-up.
  return parseOperatorConfig(parseYaml(text), "rendered config.yaml");
}

// ---- the values schema against the operator's config schema ---------------------------------

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  pattern?: string;
  minLength?: number;
  additionalProperties?: boolean | JsonSchema;
}

/** Leaf settings of an object schema by dotted path (`registries[].host`). */
function leaves(schema: JsonSchema, path = "", out = new Map<string, JsonSchema>()): Map<string, JsonSchema> {
  if (schema.properties) {
    for (const [key, child] of Object.entries(schema.properties)) leaves(child, path ? `${path}.${key}` : key, out);
  } else if (schema.type === "array" && schema.items?.properties) {
    leaves(schema.items, `${path}[]`, out);
  } else {
    out.set(path, schema);
  }
  return out;
}

/** Set by the chart itself (leader election in the release namespace, the metrics port). */
const chartManaged = new Set([
  "metrics.address",
  "leaderElection.enabled",
  "leaderElection.namespace",
  "leaderElection.leaseName",
  // From the top-level webhook: values (its Service, port and mounted Secret).
  "webhook.enabled",
  "webhook.address",
  "webhook.secretFile",
]);

describe("Helm chart: lint and render", () => {
  it("passes helm lint --strict with default and with non-default values", async () => {
    const out = await helm(["lint", chartDir, "--strict", "--kube-version", testbed().kube.version]);
    expect(out).toContain("1 chart(s) linted, 0 chart(s) failed");
    const file = await valuesFile(nonDefaultValues(["team-a", "team-b"]));
    const custom = await helm(["lint", chartDir, "--strict", "--kube-version", testbed().kube.version, "--values", file]);
    expect(custom).toContain("0 chart(s) failed");
  });

  it("defaults: the objects of an install, the restricted controller pod, and the operator's own defaults in config.yaml", async () => {
    const r = await render();
    expect(r.manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort()).toEqual(
      [
        "ClusterRole/nio-nix-image-operator",
        "ClusterRoleBinding/nio-nix-image-operator",
        "ConfigMap/nio-nix-image-operator",
        "Deployment/nio-nix-image-operator",
        "Role/nio-nix-image-operator-leader-election",
        "RoleBinding/nio-nix-image-operator-leader-election",
        "Service/nio-nix-image-operator-metrics",
        "ServiceAccount/nio-nix-image-operator",
        "ValidatingAdmissionPolicy/nio-nix-image-operator-builders",
        "ValidatingAdmissionPolicy/nio-nix-image-operator-rollouts",
        "ValidatingAdmissionPolicyBinding/nio-nix-image-operator-builders",
        "ValidatingAdmissionPolicyBinding/nio-nix-image-operator-rollouts",
      ].sort(),
    );
    for (const m of r.manifests) {
      if (!m.kind.startsWith("Cluster") && !m.kind.startsWith("ValidatingAdmissionPolicy"))
        expect(m.metadata.namespace, `${m.kind} namespace`).toBe("nix-image-operator");
      expect(m.metadata.labels).toMatchObject({ "app.kubernetes.io/name": "nix-image-operator", "app.kubernetes.io/instance": "nio" });
    }

    const deployment = find(r, "Deployment");
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0];
    expect(deployment.spec.replicas).toBe(2);
    expect(pod.serviceAccountName).toBe("nio-nix-image-operator");
    expect(pod.securityContext).toEqual({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: "RuntimeDefault" } });
    expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    expect(container.image).toBe(defaultOperatorImage);
    expect(container.args).toEqual(["controller", "--config", "/etc/nix-image-operator/config.yaml"]);
    expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "metrics" });
    expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "metrics" });
    expect(container.ports).toEqual([{ name: "metrics", containerPort: 8080, protocol: "TCP" }]);
    expect(container.resources).toEqual({ requests: { cpu: "50m", memory: "128Mi" }, limits: { memory: "256Mi" } });
    // V8 sized for a small controller (bench/controller-scale.ts), under the memory limit.
    expect(container.env).toContainEqual({ name: "NODE_OPTIONS", value: "--max-semi-space-size=2 --max-old-space-size=160" });
    expect(container.env).toContainEqual({ name: "NIO_NODE_FLAGS", value: "--lite-mode" });
    // The only writable paths: /tmp (emptyDir); config read-only.
    expect(container.volumeMounts).toEqual([
      { name: "config", mountPath: "/etc/nix-image-operator", readOnly: true },
      { name: "tmp", mountPath: "/tmp" },
    ]);
    expect(pod.volumes.find((v: { name: string }) => v.name === "config").configMap.name).toBe("nio-nix-image-operator");
    expect(deployment.spec.template.metadata.annotations["checksum/config"]).toMatch(/^[a-f0-9]{64}$/);

    // Values defaults == the operator's defaults; the chart adds only what it knows better.
    expect(operatorConfigOf(r)).toEqual(
      parseOperatorConfig({
        leaderElection: { enabled: true, namespace: "nix-image-operator", leaseName: "nio-nix-image-operator" },
        builder: { pushImage: defaultOperatorImage },
        metrics: { address: "0.0.0.0:8080" },
      }),
    );
    const service = find(r, "Service");
    expect(service.spec.ports).toEqual([{ name: "metrics", port: 8080, targetPort: "metrics", protocol: "TCP" }]);
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
  });

  it("has a value, a schema entry and the operator's bounds for every operator config knob", async () => {
    const zodSchema = z.toJSONSchema(operatorConfigSchema, { io: "input", target: "draft-7" }) as JsonSchema;
    const valuesSchema = JSON.parse(await readFile(join(chartDir, "values.schema.json"), "utf8")) as JsonSchema & { $schema: string };
    expect(valuesSchema.$schema).toBe("http://json-schema.org/draft-07/schema#");
    const operatorKnobs = leaves(zodSchema);
    const chartKnobs = leaves(valuesSchema.properties!.config!);
    const userKnobs = [...operatorKnobs.keys()].filter((k) => !chartManaged.has(k)).sort();
    expect([...chartKnobs.keys()].sort()).toEqual(userKnobs);
    for (const key of userKnobs) {
      const want = operatorKnobs.get(key)!;
      const have = chartKnobs.get(key)!;
      expect(have.type, `${key}: type`).toEqual(want.type);
      for (const bound of ["enum", "minimum", "maximum", "minLength"] as const) {
        if (want[bound] !== undefined) expect(have[bound], `${key}: ${bound}`).toEqual(want[bound]);
      }
      if (want.pattern !== undefined) expect(have.pattern, `${key}: pattern`).toBe(want.pattern);
      if (want.items?.enum) expect(have.items?.enum, `${key}: items`).toEqual(want.items.enum);
    }
    // Strict like the operator: a misspelled key is an error at `helm install`, not at start-up.
    expect(valuesSchema.additionalProperties).toBe(false);
    expect(valuesSchema.properties!.config!.additionalProperties).toBe(false);

    // values.yaml spells out every knob that is not inside a list (registries[] has an example).
    const values = parseYaml(await readFile(join(chartDir, "values.yaml"), "utf8")) as { config: Record<string, unknown> };
    // binaryCache is an optional section (absent: off); values.yaml shows it commented out.
    for (const key of userKnobs.filter((k) => !k.includes("[]") && !k.startsWith("binaryCache."))) {
      const value = key.split(".").reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], values.config);
      expect(value, `values.yaml config.${key}`).not.toBeUndefined();
    }
  });

  it("non-default values: watched namespaces, storage class, registries, builder settings, pinned image, ServiceMonitor, NetworkPolicy", async () => {
    const r = await render(nonDefaultValues(["team-a", "team-b"]), { release: "platform", namespace: "niximage-system" });
    const config = operatorConfigOf(r);
    const image = `registry.corp.example/platform/nix-image-operator@sha256:${"ab".repeat(32)}`;
    expect(config.namespaces).toEqual(["team-a", "team-b"]);
    expect(config.store).toEqual({
      poolSize: 3,
      size: "100Gi",
      storageClassName: "fast-ssd",
      accessMode: "ReadWriteOnce",
      gcThresholdPercent: 70,
      keepSuccessful: 3,
    });
    expect(config.builder).toEqual({
      nixImage: "registry.corp.example/platform/nix-builder:2.28.3",
      pushImage: image,
      imagePullPolicy: "Always",
      serviceAccountName: "nix-builder",
      resources: { requests: { cpu: "100m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } },
      buildCapabilities: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"],
      workSizeLimit: "1Gi",
      tmpSizeLimit: "10Gi",
      networkPolicy: expect.objectContaining({ enabled: true }) as unknown,
    });
    expect(config.registries).toEqual([
      { host: "registry.corp.example", plainHttp: false, caFile: "/etc/ssl/corp/ca.pem" },
      { host: "registry.local:5000", plainHttp: true },
    ]);
    expect(config.flakeRefPolicy).toEqual({
      allowedSchemes: ["github", "git+https"],
      allowHostOverride: true,
      maxLength: 512,
      allowedAddressRanges: ["10.20.0.0/16"],
    });
    expect(config.leaderElection).toEqual({
      enabled: true,
      namespace: "niximage-system",
      leaseName: "platform-nix-image-operator",
      leaseDuration: "30s",
      renewDeadline: "20s",
      retryPeriod: "5s",
    });
    expect(config.metrics.address).toBe("0.0.0.0:9090");
    expect(config).toMatchObject({ concurrency: { builds: 8, reconcilers: 2 }, resyncPeriod: "30m", logLevel: "debug" });

    const deployment = find(r, "Deployment");
    const pod = deployment.spec.template.spec;
    expect(deployment.spec.replicas).toBe(3);
    expect(pod.containers[0].image).toBe(image);
    expect(pod.containers[0].ports[0].containerPort).toBe(9090);
    expect(pod.imagePullSecrets).toEqual([{ name: "corp-pull" }]);
    expect(pod.priorityClassName).toBe("system-cluster-critical");
    expect(pod.nodeSelector).toEqual({ "kubernetes.io/os": "linux" });
    expect(deployment.spec.template.metadata.labels).toMatchObject({ team: "platform" });
    const defaults = await render(undefined, { release: "platform", namespace: "niximage-system" });
    expect(deployment.spec.template.metadata.annotations["checksum/config"], "a config change restarts the pods").not.toBe(
      find(defaults, "Deployment").spec.template.metadata.annotations["checksum/config"],
    );
    expect(find(r, "ServiceAccount").metadata.annotations).toEqual({ "example.com/role": "nio" });

    // ServiceMonitor: selects the metrics Service by labels and scrapes its named port.
    const service = find(r, "Service");
    const monitor = serviceMonitorShape.parse(find(r, "ServiceMonitor"));
    expect(monitor.metadata.namespace).toBe("niximage-system");
    expect(monitor.metadata.labels).toMatchObject({ release: "kube-prometheus-stack" });
    expect(monitor.spec.namespaceSelector.matchNames).toEqual(["niximage-system"]);
    expect(service.metadata.labels).toMatchObject(monitor.spec.selector.matchLabels);
    expect(monitor.spec.endpoints).toEqual([{ port: service.spec.ports[0].name, path: "/metrics", interval: "1m", scrapeTimeout: "10s" }]);
    // ...and no other Service in the release matches it.
    expect(r.manifests.filter((m) => m.kind === "Service")).toHaveLength(1);

    // NetworkPolicy: none in the chart; the operator applies config.builder.networkPolicy in each
    // namespace before its first build (src/controller/builder-network-policy.ts).
    expect(r.manifests.filter((m) => m.kind === "NetworkPolicy")).toEqual([]);
    expect(config.builder.networkPolicy).toEqual({
      enabled: true,
      deniedCidrs: ["10.0.0.0/8", "169.254.0.0/16"],
      allowedCidrs: ["10.20.0.0/16"],
      ports: [
        { port: 443, protocol: "TCP" },
        { port: 22, protocol: "TCP" },
      ],
    });
    const job = builderJob({
      image: nixImageSchema.parse({
        apiVersion: "niximage.io/v1alpha1",
        kind: "NixImage",
        metadata: { name: "web", namespace: "team-a", uid: "00000000-0000-0000-0000-000000000001" },
        spec: { flake: "github:acme/shop", image: { repository: "registry.corp.example/acme/web" } },
      }),
      kind: "Image",
      number: 1,
      reasons: ["SpecChanged"],
      flake: "github:acme/shop",
      storeVolume: "niximage-store-0",
      specHash: "x",
      builderHash: "y",
      config,
    });
    const policy = builderNetworkPolicy("team-a", config.builder.networkPolicy);
    expect(selects(policy.spec!.podSelector!, job.spec!.template.metadata!.labels!), "selects builder pods").toBe(true);
    expect(selects(policy.spec!.podSelector!, { app: "web" }), "leaves other pods alone").toBe(false);
    expect(policy.spec!.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(policy.spec!.ingress).toEqual([]);
    expect(policy.spec!.egress).toEqual([
      {
        ports: [
          { port: 53, protocol: "UDP" },
          { port: 53, protocol: "TCP" },
        ],
      },
      {
        to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["10.0.0.0/8", "169.254.0.0/16"] } }, { ipBlock: { cidr: "::/0" } }],
        ports: [
          { port: 443, protocol: "TCP" },
          { port: 22, protocol: "TCP" },
        ],
      },
      {
        to: [{ ipBlock: { cidr: "10.20.0.0/16" } }],
        ports: [
          { port: 443, protocol: "TCP" },
          { port: 22, protocol: "TCP" },
        ],
      },
    ]);

    // Watching listed namespaces: the ClusterRole is bound in those namespaces only.
    expect(r.manifests.filter((m) => m.kind === "ClusterRoleBinding")).toEqual([]);
    const bindings = r.manifests.filter((m) => m.kind === "RoleBinding" && m.roleRef.kind === "ClusterRole");
    expect(bindings.map((b) => [b.metadata.namespace, b.roleRef.name, b.subjects])).toEqual(
      ["team-a", "team-b"].map((ns) => [
        ns,
        "platform-nix-image-operator",
        [{ kind: "ServiceAccount", name: "platform-nix-image-operator", namespace: "niximage-system" }],
      ]),
    );

    // No value widens the operator's RBAC.
    for (const kind of ["ClusterRole", "Role"]) expect(find(r, kind).rules).toEqual(find(defaults, kind).rules);
  });

  it("default builder NetworkPolicy (applied by the operator): DNS anywhere, egress to all but private, loopback, link-local (metadata) and CGNAT ranges, no ingress", async () => {
    const config = operatorConfigOf(await render({}));
    expect(config.builder.networkPolicy.enabled).toBe(true);
    const policy = builderNetworkPolicy("apps", config.builder.networkPolicy);
    expect(policy.metadata?.namespace).toBe("apps");
    expect(policy.spec!.egress).toEqual([
      {
        ports: [
          { port: 53, protocol: "UDP" },
          { port: 53, protocol: "TCP" },
        ],
      },
      {
        to: [
          {
            ipBlock: {
              cidr: "0.0.0.0/0",
              except: [
                "0.0.0.0/8",
                "10.0.0.0/8",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.0.0.0/24",
                "192.168.0.0/16",
                "198.18.0.0/15",
                "224.0.0.0/4",
                "240.0.0.0/4",
              ],
            },
          },
          { ipBlock: { cidr: "::/0", except: ["::1/128", "::/96", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"] } },
        ],
      },
    ]);
    expect(policy.spec!.ingress).toEqual([]);
  });

  it("webhook enabled: its own port and Service, the Secret mounted read-only, config pointing at both, and patch on NixImages", async () => {
    const r = await render({ webhook: { enabled: true, port: 9443, secretName: "forge-hook", secretKey: "token", service: { port: 8080 } } });
    const pod = find(r, "Deployment").spec.template.spec;
    const container = pod.containers[0];
    expect(container.ports).toContainEqual({ name: "webhook", containerPort: 9443, protocol: "TCP" });
    expect(container.volumeMounts).toContainEqual({ name: "webhook-secret", mountPath: "/var/run/niximage/webhook", readOnly: true });
    expect(pod.volumes).toContainEqual({ name: "webhook-secret", secret: { secretName: "forge-hook", items: [{ key: "token", path: "secret" }] } });
    const service = find(r, "Service", "nio-nix-image-operator-webhook");
    expect(service.spec.ports).toEqual([{ name: "webhook", port: 8080, targetPort: "webhook", protocol: "TCP" }]);
    expect(service.spec.selector).toEqual(find(r, "Deployment").spec.selector.matchLabels);
    expect(operatorConfigOf(r).webhook).toEqual({
      enabled: true,
      address: "0.0.0.0:9443",
      path: "/webhook",
      secretFile: "/var/run/niximage/webhook/secret",
      maxBodyBytes: 4 * 1024 * 1024,
      rememberDeliveries: 10_000,
    });
    const rules = find(r, "ClusterRole").rules as Array<{ resources: string[]; verbs: string[] }>;
    expect(rules.find((x) => x.resources.includes("niximages"))!.verbs).toEqual(["get", "list", "watch", "patch"]);
    // Default secret name; off by default (no Service, no patch verb).
    expect(find(await render({ webhook: { enabled: true } }), "Deployment").spec.template.spec.volumes).toContainEqual({
      name: "webhook-secret",
      secret: { secretName: "nio-nix-image-operator-webhook", items: [{ key: "secret", path: "secret" }] },
    });
    const off = await render();
    expect(off.manifests.filter((m) => m.metadata.name.endsWith("-webhook"))).toEqual([]);
    expect((find(off, "ClusterRole").rules as Array<{ resources: string[]; verbs: string[] }>).find((x) => x.resources.includes("niximages"))!.verbs).toEqual([
      "get",
      "list",
      "watch",
    ]);
  });

  it("config.binaryCache passes through to the operator's config as given", async () => {
    const binaryCache = {
      url: "https://nix-cache.example.com",
      uploadUrl: "s3://nix-cache?region=eu-central-1&compression=zstd",
      publicKeys: ["nix-cache.example.com-1:EIMBznL4nGDpN+48ZDSZO2ndB+pb1vtTcjCu9nhVa1M="],
      signingKeySecret: { name: "nix-cache-signing", key: "secret-key" },
      credentialsSecret: { name: "nix-cache-s3", key: "credentials", type: "aws" },
    };
    expect(operatorConfigOf(await render({ config: { binaryCache } })).binaryCache).toEqual(binaryCache);
    await expect(render({ config: { binaryCache: { ...binaryCache, url: "ftp://cache" } } })).rejects.toThrow(/config\/binaryCache\/url/);
  });

  it("refuses bad values with a message naming the value", async () => {
    const cases: Array<[object, RegExp]> = [
      [{ config: { store: { poolSize: 0 } } }, /config\/store\/poolSize.*minimum/],
      [{ config: { concurrency: { builds: "4" } } }, /config\/concurrency\/builds/],
      [{ config: { logLevel: "verbose" } }, /config\/logLevel/],
      [{ config: { flakeRefPolicy: { allowedSchemes: ["ftp"] } } }, /config\/flakeRefPolicy\/allowedSchemes\/0/],
      [{ config: { leaderElection: { leaseDuration: "15 seconds" } } }, /config\/leaderElection\/leaseDuration/],
      [{ config: { registries: [{ plainHttp: true }] } }, /config\/registries\/0.*host/],
      [{ config: { nameSpaces: ["a"] } }, /additional properties 'nameSpaces'/],
      [{ config: { metrics: { address: ":9000" } } }, /additional properties 'metrics'/],
      [{ config: { namespaces: ["Team_A"] } }, /config\/namespaces\/0/],
      [{ image: { digest: "sha256:short" } }, /image\/digest/],
      [{ metrics: { port: 80 } }, /metrics\/port.*minimum/],
      [{ networkPolicy: { enabled: true } }, /additional properties 'networkPolicy'/],
      [{ config: { builder: { networkPolicy: { deniedCidrs: ["everywhere"] } } } }, /config\/builder\/networkPolicy\/deniedCidrs\/0/],
    ];
    for (const [values, message] of cases) {
      await expect(render(values), JSON.stringify(values)).rejects.toThrow(message);
    }
  });

  it("RBAC as rendered: no wildcard, Secrets get only, workloads read and patch only, Lease namespaced", async () => {
    const r = await render();
    const clusterRole = find(r, "ClusterRole");
    for (const rule of clusterRole.rules as Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>) {
      for (const field of [rule.apiGroups, rule.resources, rule.verbs]) expect(field).not.toContain("*");
      for (const verb of ["escalate", "bind", "impersonate", "deletecollection", "update"]) expect(rule.verbs).not.toContain(verb);
    }
    const rulesFor = (resource: string) => (clusterRole.rules as Array<{ resources: string[]; verbs: string[] }>).filter((x) => x.resources.includes(resource));
    expect(rulesFor("secrets").map((x) => x.verbs)).toEqual([["get"]]);
    for (const workload of ["deployments", "statefulsets", "daemonsets", "cronjobs"])
      expect(rulesFor(workload).map((x) => x.verbs)).toEqual([["get", "list", "watch", "patch"]]);
    expect(rulesFor("leases")).toEqual([]);
    const role = find(r, "Role");
    expect(role.metadata.namespace).toBe("nix-image-operator");
    expect(role.rules).toEqual([{ apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] }]);
    expect(find(r, "RoleBinding").subjects).toEqual([{ kind: "ServiceAccount", name: "nio-nix-image-operator", namespace: "nix-image-operator" }]);
    expect(find(r, "ClusterRoleBinding").subjects).toEqual([{ kind: "ServiceAccount", name: "nio-nix-image-operator", namespace: "nix-image-operator" }]);
  });
});

function nonDefaultValues(namespaces: string[]) {
  return {
    image: { repository: "registry.corp.example/platform/nix-image-operator", digest: `sha256:${"ab".repeat(32)}`, pullPolicy: "Always" },
    imagePullSecrets: [{ name: "corp-pull" }],
    replicaCount: 3,
    config: {
      namespaces,
      concurrency: { builds: 8, reconcilers: 2 },
      store: { poolSize: 3, size: "100Gi", storageClassName: "fast-ssd", accessMode: "ReadWriteOnce", gcThresholdPercent: 70, keepSuccessful: 3 },
      builder: {
        nixImage: "registry.corp.example/platform/nix-builder:2.28.3",
        imagePullPolicy: "Always",
        serviceAccountName: "nix-builder",
        networkPolicy: {
          deniedCidrs: ["10.0.0.0/8", "169.254.0.0/16"],
          allowedCidrs: ["10.20.0.0/16"],
          ports: [
            { port: 443, protocol: "TCP" },
            { port: 22, protocol: "TCP" },
          ],
        },
      },
      flakeRefPolicy: { allowedSchemes: ["github", "git+https"], allowHostOverride: true, maxLength: 512, allowedAddressRanges: ["10.20.0.0/16"] },
      registries: [
        { host: "registry.corp.example", caFile: "/etc/ssl/corp/ca.pem" },
        { host: "registry.local:5000", plainHttp: true },
      ],
      leaderElection: { leaseDuration: "30s", renewDeadline: "20s", retryPeriod: "5s" },
      resyncPeriod: "30m",
      logLevel: "debug",
    },
    resources: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "1Gi" } },
    nodeSelector: { "kubernetes.io/os": "linux" },
    podLabels: { team: "platform" },
    priorityClassName: "system-cluster-critical",
    serviceAccount: { annotations: { "example.com/role": "nio" } },
    metrics: { port: 9090, serviceMonitor: { enabled: true, interval: "1m", labels: { release: "kube-prometheus-stack" } } },
  };
}

/** A label selector (matchLabels + matchExpressions with In/NotIn/Exists/DoesNotExist) against labels. */
function selects(
  selector: { matchLabels?: Record<string, string>; matchExpressions?: Array<{ key: string; operator: string; values?: string[] }> },
  labels: Record<string, string>,
): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = e.key in labels;
    const ok =
      e.operator === "Exists"
        ? has
        : e.operator === "DoesNotExist"
          ? !has
          : e.operator === "In"
            ? has && (e.values ?? []).includes(labels[e.key]!)
            : e.operator === "NotIn"
              ? !has || !(e.values ?? []).includes(labels[e.key]!)
              : false;
    if (!ok) return false;
  }
  return true;
}

/**
 * The ServiceMonitor fields the chart relies on (monitoring.coreos.com/v1). The test bed has no
 * Prometheus Operator CRDs, so the API server cannot check this object; this schema is the check.
 */
const serviceMonitorShape = z.object({
  apiVersion: z.literal("monitoring.coreos.com/v1"),
  kind: z.literal("ServiceMonitor"),
  metadata: z.object({ name: z.string().min(1), namespace: z.string().min(1), labels: z.record(z.string(), z.string()) }),
  spec: z.strictObject({
    namespaceSelector: z.strictObject({ matchNames: z.array(z.string()).min(1) }),
    selector: z.strictObject({ matchLabels: z.record(z.string(), z.string()) }),
    endpoints: z
      .array(
        z.strictObject({
          port: z.string().min(1),
          path: z.string().startsWith("/"),
          interval: z.string().regex(/^(\d+(ms|s|m|h))+$/),
          scrapeTimeout: z.string().regex(/^(\d+(ms|s|m|h))+$/),
        }),
      )
      .min(1),
  }),
});

// ---- on the API server ------------------------------------------------------------------------

interface CanI {
  verb: string;
  resource: string;
  subresource?: string;
  /** Namespace to ask in; undefined: cluster-wide (--all-namespaces). */
  namespace?: string;
}

/** `kubectl auth can-i` as `user` (impersonated by the test bed admin): true for "yes". */
function canI(user: string, q: CanI): Promise<boolean> {
  const bed = testbed();
  const args = ["--kubeconfig", bed.kube.kubeconfig, "auth", "can-i", q.verb, q.resource, `--as=${user}`];
  args.push(...(q.namespace ? ["--namespace", q.namespace] : ["--all-namespaces"]));
  if (q.subresource) args.push(`--subresource=${q.subresource}`);
  return new Promise((resolve, reject) => {
    execFile(bed.kube.kubectl, args, { timeout: 30_000 }, (error, stdout, stderr) => {
      // A misspelled resource would answer "no" and pass a must-not check silently.
      if (/doesn't have a resource type/.test(stderr)) return reject(new Error(`can-i ${q.verb} ${q.resource}: ${stderr.trim()}`));
      const answer = stdout.trim();
      if (answer === "yes") return resolve(true);
      if (answer.startsWith("no")) return resolve(false);
      reject(new Error(`kubectl auth can-i ${args.slice(3).join(" ")}: ${error?.message ?? ""} ${stderr.trim()}`));
    });
  });
}

/** Runs can-i for each query, 8 at a time; returns "verb resource[/sub] @ns" of those that answered `expected`'s opposite. */
async function mismatches(user: string, queries: CanI[], expected: boolean): Promise<string[]> {
  const wrong: string[] = [];
  for (let i = 0; i < queries.length; i += 8) {
    const batch = queries.slice(i, i + 8);
    const answers = await Promise.all(batch.map((q) => canI(user, q)));
    batch.forEach((q, j) => {
      if (answers[j] !== expected) wrong.push(`${q.verb} ${q.resource}${q.subresource ? `/${q.subresource}` : ""} @${q.namespace ?? "all namespaces"}`);
    });
  }
  return wrong;
}

const each = (verbs: string[], resource: string, extra: Omit<CanI, "verb" | "resource"> = {}): CanI[] => verbs.map((verb) => ({ verb, resource, ...extra }));

const workloads = ["deployments.apps", "statefulsets.apps", "daemonsets.apps", "cronjobs.batch"];

/** What the controller does in a namespace it watches (src/controller, src/runtime/lease-store.ts). */
function neededIn(app: string, own: string): CanI[] {
  return [
    // NixImages: informers and status writes.
    ...each(["get", "list", "watch"], "niximages.niximage.io", { namespace: app }),
    { verb: "patch", resource: "niximages.niximage.io", subresource: "status", namespace: app },
    // Builder Jobs: informer, create, delete (history limit); their pods: informer only.
    ...each(["get", "list", "watch", "create", "delete"], "jobs.batch", { namespace: app }),
    ...each(["get", "list", "watch"], "pods", { namespace: app }),
    // Store volumes: informer, create, lease annotations by patch.
    ...each(["get", "list", "watch", "create", "patch"], "persistentvolumeclaims", { namespace: app }),
    // Events: recorded; listed (by involvedObject.uid) only for a builder Job without a pod or a store volume that stays Pending.
    ...each(["create", "list"], "events", { namespace: app }),
    // The builder NetworkPolicy, before the namespace's first build.
    ...each(["create", "patch"], "networkpolicies.networking.k8s.io", { namespace: app }),
    // The push Secret's existence, by name.
    { verb: "get", resource: "secrets", namespace: app },
    // Rollout targets: informers and the image patch.
    ...workloads.flatMap((resource) => each(["get", "list", "watch", "patch"], resource, { namespace: app })),
    // Leader election, in the operator's own namespace.
    ...each(["get", "create", "update"], "leases.coordination.k8s.io", { namespace: own }),
  ];
}

/** The informers' cluster-wide list/watch (config.namespaces empty). */
const clusterWideWatches: CanI[] = ["niximages.niximage.io", "jobs.batch", "pods", "persistentvolumeclaims", ...workloads].flatMap((resource) =>
  each(["list", "watch"], resource),
);

/** What the operator must never do in a namespace it watches, or anywhere. */
function forbiddenIn(app: string, own: string): CanI[] {
  return [
    // Secrets: never read in bulk, never written.
    ...each(["list", "watch", "create", "update", "patch", "delete", "deletecollection"], "secrets", { namespace: app }),
    ...each(["list", "watch"], "secrets"),
    // Pods: no creating, deleting, exec, attach, port-forward, logs, ephemeral containers.
    ...each(["create", "update", "patch", "delete", "deletecollection"], "pods", { namespace: app }),
    { verb: "create", resource: "pods", subresource: "exec", namespace: app },
    { verb: "create", resource: "pods", subresource: "attach", namespace: app },
    { verb: "create", resource: "pods", subresource: "portforward", namespace: app },
    { verb: "get", resource: "pods", subresource: "log", namespace: app },
    { verb: "patch", resource: "pods", subresource: "ephemeralcontainers", namespace: app },
    // Workloads: read and patch only.
    ...workloads.flatMap((resource) => each(["create", "update", "delete", "deletecollection"], resource, { namespace: app })),
    ...each(["patch", "create", "delete"], "replicasets.apps", { namespace: app }),
    { verb: "patch", resource: "deployments.apps", subresource: "scale", namespace: app },
    // NixImages are the users': the operator writes status only.
    ...each(["create", "update", "patch", "delete", "deletecollection"], "niximages.niximage.io", { namespace: app }),
    { verb: "update", resource: "niximages.niximage.io", subresource: "status", namespace: app },
    // Jobs and store volumes: no update/patch of Jobs, no deleting volumes.
    ...each(["update", "patch", "deletecollection"], "jobs.batch", { namespace: app }),
    ...each(["update", "delete", "deletecollection"], "persistentvolumeclaims", { namespace: app }),
    // Leases: only in its own namespace, and never deleted.
    ...each(["get", "create", "update"], "leases.coordination.k8s.io", { namespace: app }),
    ...each(["get", "create", "update"], "leases.coordination.k8s.io", { namespace: "kube-system" }),
    { verb: "delete", resource: "leases.coordination.k8s.io", namespace: own },
    { verb: "list", resource: "leases.coordination.k8s.io" },
    // Nothing else: config, tokens, RBAC, policies, nodes, namespaces, CRDs, events beyond create and list.
    ...each(["get", "list"], "configmaps", { namespace: own }),
    { verb: "create", resource: "serviceaccounts", subresource: "token", namespace: app },
    ...each(["create", "escalate", "bind"], "clusterroles.rbac.authorization.k8s.io"),
    { verb: "create", resource: "rolebindings.rbac.authorization.k8s.io", namespace: app },
    ...each(["get", "list", "update", "delete"], "networkpolicies.networking.k8s.io", { namespace: app }),
    { verb: "list", resource: "nodes" },
    ...each(["list", "create", "delete"], "namespaces"),
    ...each(["create", "update"], "customresourcedefinitions.apiextensions.k8s.io"),
    ...each(["update", "delete", "watch"], "events", { namespace: app }),
    { verb: "impersonate", resource: "serviceaccounts", namespace: app },
    // No wildcard anywhere.
    { verb: "*", resource: "*" },
    { verb: "*", resource: "*", namespace: app },
    { verb: "*", resource: "niximages.niximage.io", namespace: app },
    { verb: "*", resource: "secrets", namespace: app },
    { verb: "get", resource: "*", namespace: app },
  ];
}

/** Server-side apply, as `helm template ... | kubectl apply --server-side -f -` does. */
function applyAll(objects: Manifest[], extra: string[] = []) {
  const bed = testbed();
  return run(bed.kube.kubectl, ["--kubeconfig", bed.kube.kubeconfig, "apply", "--server-side", "--field-manager", "helm-template", ...extra, "-f", "-"], {
    input: objects.map((o) => JSON.stringify(o)).join("\n"),
  });
}

interface Install {
  release: string;
  namespace: string;
  rendered: Rendered;
  serviceAccount: string;
}

describe("Helm chart on the test bed API server", () => {
  const id = randomBytes(3).toString("hex");
  const created: string[] = [];
  const releases: string[] = [];
  let appNamespaces: string[] = [];
  let other = "";
  /** config.namespaces set (RoleBindings in those namespaces) and the rest non-default too. */
  let scoped: Install;
  /** Default values: all namespaces (ClusterRoleBinding). */
  let clusterWide: Install;
  let applied: { objects: Manifest[]; stdout: string; stderr: string };

  const prepare = async (release: string, values: object | undefined): Promise<Install> => {
    releases.push(release);
    const namespace = await createNamespace(`${release}-system`);
    created.push(namespace);
    const rendered = await render(values, { release, namespace });
    return { release, namespace, rendered, serviceAccount: `system:serviceaccount:${namespace}:${release}-nix-image-operator` };
  };

  beforeAll(async () => {
    await installTestCrd();
    appNamespaces = [await createNamespace(`chart-${id}-team-a`), await createNamespace(`chart-${id}-team-b`)];
    other = await createNamespace(`chart-${id}-other`);
    created.push(...appNamespaces, other);
    scoped = await prepare(`nio${id}a`, nonDefaultValues(appNamespaces));
    clusterWide = await prepare(`nio${id}b`, undefined);
    // The cluster-wide install: its ServiceAccount and RBAC (everything is applied for the scoped one below).
    const rbac = new Set(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
    await kubectl(["apply", "--server-side", "-f", "-"], {
      input: clusterWide.rendered.manifests
        .filter((m) => rbac.has(m.kind))
        .map((m) => JSON.stringify(m))
        .join("\n"),
    });
    // The scoped install: every object but the ServiceMonitor (see the first test), into a
    // release namespace that enforces and warns PodSecurity "restricted" (the Deployment's pod
    // template gets checked by the admission plugin).
    await kubectl(["label", "namespace", scoped.namespace, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted"]);
    const objects = scoped.rendered.manifests.filter((m) => m.kind !== "ServiceMonitor");
    applied = { objects, ...(await applyAll(objects)) };
  });
  afterAll(async () => {
    for (const release of releases) {
      await kubectl(["delete", "clusterrole,clusterrolebinding", `${release}-nix-image-operator`, "--ignore-not-found"]).catch(() => undefined);
      for (const what of ["builders", "rollouts"]) {
        const policy = `${release}-nix-image-operator-${what}`;
        await kubectl(["delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy, "--ignore-not-found"]).catch(() => undefined);
      }
    }
    for (const ns of created) await deleteNamespace(ns);
  });

  it("applies every rendered object for real (the ServiceMonitor only by shape: no such CRD here); the pod template passes PodSecurity restricted", async () => {
    const { namespace, rendered, release } = scoped;
    const { objects, stdout, stderr } = applied;
    const bed = testbed();

    // The Prometheus Operator's CRDs are not part of the test bed: the API server has no
    // ServiceMonitor kind, so even a dry run is refused. Its shape is checked by zod instead.
    const monitors = rendered.manifests.filter((m) => m.kind === "ServiceMonitor");
    expect(monitors).toHaveLength(1);
    await expect(applyAll(monitors, ["--dry-run=server"])).rejects.toThrow(/ServiceMonitor/);
    serviceMonitorShape.parse(monitors[0]);

    expect(objects.map((o) => `${o.kind} ${o.metadata.namespace ?? ""}`).sort()).toEqual(
      [
        "ClusterRole ",
        `ConfigMap ${namespace}`,
        `Deployment ${namespace}`,
        `Role ${namespace}`,
        `RoleBinding ${namespace}`,
        ...appNamespaces.map((ns) => `RoleBinding ${ns}`),
        `Service ${namespace}`,
        `ServiceAccount ${namespace}`,
        "ValidatingAdmissionPolicy ",
        "ValidatingAdmissionPolicy ",
        "ValidatingAdmissionPolicyBinding ",
        "ValidatingAdmissionPolicyBinding ",
      ].sort(),
    );
    expect(stderr, "no PodSecurity warning for the controller pod").not.toMatch(/PodSecurity|violate/i);
    expect(stdout.trim().split("\n")).toHaveLength(objects.length);

    // The admission plugin is really on: a privileged pod template is warned about.
    const bad = structuredClone(rendered.manifests.find((m) => m.kind === "Deployment")!);
    bad.metadata.name = "not-restricted";
    bad.spec.template.spec.containers[0].securityContext = { privileged: true };
    const warned = await applyAll([bad], ["--dry-run=server"]);
    expect(warned.stderr).toMatch(/would violate PodSecurity "restricted:latest"/);

    const { apps, core } = kubeClients();
    const deployment = await apps.readNamespacedDeployment({ namespace, name: `${release}-nix-image-operator` });
    expect(deployment.spec?.template.spec?.serviceAccountName).toBe(`${release}-nix-image-operator`);
    const configMap = await core.readNamespacedConfigMap({ namespace, name: `${release}-nix-image-operator` });
    expect(parseOperatorConfig(parseYaml(configMap.data!["config.yaml"]!)).namespaces).toEqual(appNamespaces);

    // The chart's CRD file (crds/) is accepted by this API server too (dry run: the test bed's
    // CRD, which allows git+http for other tests, stays as it is).
    await run(bed.kube.kubectl, [
      "--kubeconfig",
      bed.kube.kubeconfig,
      "apply",
      "--server-side",
      "--force-conflicts",
      "--dry-run=server",
      "-f",
      join(chartDir, "crds/niximages.niximage.io.yaml"),
    ]);
  });

  it("watching listed namespaces: the ServiceAccount can do everything the controller does there", async () => {
    const needed = appNamespaces.flatMap((app) => neededIn(app, scoped.namespace));
    expect(await mismatches(scoped.serviceAccount, needed, true)).toEqual([]);
  });

  it("watching listed namespaces: nothing else, and nothing at all outside them", async () => {
    const forbidden: CanI[] = [
      ...forbiddenIn(appNamespaces[0]!, scoped.namespace),
      // No cluster-wide reads, and nothing in a namespace it does not watch.
      ...clusterWideWatches,
      ...neededIn(other, "kube-system"),
      { verb: "get", resource: "secrets", namespace: "default" },
      { verb: "get", resource: "secrets", namespace: "kube-system" },
    ];
    expect(await mismatches(scoped.serviceAccount, forbidden, false)).toEqual([]);
  });

  it("watching all namespaces: everything the controller does, in any namespace and cluster-wide", async () => {
    const needed = [...neededIn(other, clusterWide.namespace), ...neededIn(appNamespaces[0]!, clusterWide.namespace), ...clusterWideWatches];
    expect(await mismatches(clusterWide.serviceAccount, needed, true)).toEqual([]);
  });

  it("watching all namespaces: nothing else", async () => {
    expect(await mismatches(clusterWide.serviceAccount, forbiddenIn(other, clusterWide.namespace), false)).toEqual([]);
  });

  it("the ServiceAccount's own token gets the same answers (SelfSubjectAccessReview without impersonation)", async () => {
    const bed = testbed();
    const [app] = appNamespaces as [string];
    const token = (await kubectl(["create", "token", `${scoped.release}-nix-image-operator`, "--namespace", scoped.namespace, "--duration", "10m"])).trim();
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: "testbed", server: bed.kube.server, caData: (await readFile(bed.kube.caFile)).toString("base64") }],
      users: [{ name: "operator", token }],
      contexts: [{ name: "operator", cluster: "testbed", user: "operator" }],
      currentContext: "operator",
    });
    const review = async (namespace: string, verb: string, resource: string, group = "") =>
      (
        await kubeRequestJson<{ status: { allowed: boolean } }>(kc, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
          body: { apiVersion: "authorization.k8s.io/v1", kind: "SelfSubjectAccessReview", spec: { resourceAttributes: { namespace, verb, resource, group } } },
        })
      ).status.allowed;
    expect(await review(app, "get", "secrets")).toBe(true);
    expect(await review(other, "get", "secrets")).toBe(false);
    expect(await review(app, "list", "secrets")).toBe(false);
    expect(await review(app, "patch", "deployments", "apps")).toBe(true);
    expect(await review(app, "delete", "deployments", "apps")).toBe(false);
    // And real requests: listing Secrets is refused by the API server; listing Jobs works.
    await expect(kubeRequestJson(kc, "GET", `/api/v1/namespaces/${app}/secrets`)).rejects.toThrow(/forbidden|403/i);
    await kubeRequestJson(kc, "GET", `/apis/batch/v1/namespaces/${app}/jobs`);
  });
});

// ---- the README's install steps -----------------------------------------------------------------

describe("README install steps on the test bed", () => {
  beforeAll(async () => {
    // The test bed's CRD allows git+http (the local git server): the same CRD an admin makes with
    // `nix-image-operator crd --config` after widening flakeRefPolicy, as in the values below.
    await installTestCrd();
  });

  it("helm install, then the controller as the Deployment runs it: ready, leading, first build started", async () => {
    const bed = testbed();
    const id = randomBytes(3).toString("hex");
    const namespace = `nio-install-${id}`;
    const release = "nix-image-operator";
    const fullname = "nix-image-operator";
    const work = await scratch("install");
    onCleanup(async () => {
      await helm(["uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s"]).catch(() => undefined);
      await deleteNamespace(namespace);
    });

    // Step 1: the namespace where NixImages live (the NetworkPolicy goes there).
    const apps = await testNamespace(`shop-${id}`);

    // Step 2: values. Watch one namespace, isolate builder pods; the git+http scheme and the
    // loopback range are only for the test bed's local git server.
    const valuesPath = join(work, "values.yaml");
    await writeFile(
      valuesPath,
      toYaml({
        config: {
          namespaces: [apps],
          flakeRefPolicy: {
            allowedSchemes: ["github", "gitlab", "sourcehut", "git+https", "git+ssh", "tarball+https", "https", "git+http"],
            allowedAddressRanges: ["127.0.0.0/8"],
          },
        },
      }),
    );

    // Step 3: helm install (CRD from crds/, then the operator). No --wait: the test bed has no
    // kubelet, so the Deployment's pods never start; the controller is started below instead.
    const installed = await helm(["install", release, chartDir, "--namespace", namespace, "--create-namespace", "--values", valuesPath]);
    expect(installed).toMatch(/STATUS: deployed/);
    expect(installed).toContain(`kubectl -n ${namespace} rollout status deployment/${fullname}`);
    const status = JSON.parse(await helm(["status", release, "--namespace", namespace, "--output", "json"])) as { info: { status: string } };
    expect(status.info.status).toBe("deployed");
    const listed = await kubectl(["get", "deployment,serviceaccount,configmap,service,role,rolebinding", "--namespace", namespace, "-o", "name"]);
    expect(listed.split("\n").filter(Boolean).sort()).toEqual(
      [
        `configmap/${fullname}`,
        "configmap/kube-root-ca.crt",
        `deployment.apps/${fullname}`,
        `role.rbac.authorization.k8s.io/${fullname}-leader-election`,
        `rolebinding.rbac.authorization.k8s.io/${fullname}-leader-election`,
        `service/${fullname}-metrics`,
        `serviceaccount/${fullname}`,
        "serviceaccount/default",
      ].sort(),
    );
    // No NetworkPolicy yet: the controller applies it before the namespace's first build (below).
    expect(await kubectl(["get", "networkpolicy", "--namespace", apps, "-o", "name"])).toBe("");

    // Step 4 is the kubelet's: run the container's command with what the pod would have: the
    // ConfigMap's config.yaml and the ServiceAccount's token.
    const configPath = join(work, "config.yaml");
    await writeFile(configPath, await kubectl(["get", "configmap", fullname, "--namespace", namespace, "-o", "jsonpath={.data.config\\.yaml}"]));
    const token = (await kubectl(["create", "token", fullname, "--namespace", namespace, "--duration", "1h"])).trim();
    const kubeconfigPath = join(work, "kubeconfig");
    await writeFile(
      kubeconfigPath,
      toYaml({
        apiVersion: "v1",
        kind: "Config",
        clusters: [
          { name: "testbed", cluster: { server: bed.kube.server, "certificate-authority-data": (await readFile(bed.kube.caFile)).toString("base64") } },
        ],
        users: [{ name: fullname, user: { token } }],
        contexts: [{ name: fullname, context: { cluster: "testbed", user: fullname, namespace } }],
        "current-context": fullname,
      }),
      { mode: 0o600 },
    );
    const port = await freePort();
    const controller = await startDaemon({
      name: "chart-install-controller",
      command: process.execPath,
      args: [join(repo, "src/cli/main.ts"), "controller", "--config", configPath, "--kubeconfig", kubeconfigPath, "--metrics-address", `127.0.0.1:${port}`],
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work, POD_NAME: `${fullname}-0` },
      logFile: join(bed.logDir, `chart-install-controller-${id}.log`),
      ready: async () => (await httpGet(`http://127.0.0.1:${port}/readyz`)).status === 200,
      timeoutMs: 60_000,
    });
    onCleanup(() => controller.stop());

    const lease = await waitFor(
      `Lease ${namespace}/${fullname} held`,
      async () => {
        const l = await kubeRequestJson<{ spec?: { holderIdentity?: string } }>(
          kubeClients().kc,
          "GET",
          `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/${fullname}`,
        ).catch(() => undefined);
        return l?.spec?.holderIdentity ? l : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(lease.spec!.holderIdentity).toBeTruthy();
    expect((await httpGet(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    const metrics = await httpGet(`http://127.0.0.1:${port}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^# (HELP|TYPE) /m);

    // Step 5: a first NixImage; the controller starts its builder Job with the chart's images.
    const flake = await createGitRepo(minimalFlake({ marker: "install" }), { prefix: "chart-install" });
    await kubectl(["apply", "--namespace", apps, "-f", "-"], {
      input: toYaml({
        apiVersion: "niximage.io/v1alpha1",
        kind: "NixImage",
        metadata: { name: "hello" },
        spec: { flake: flake.flakeUrl, image: { repository: `${bed.registry.plain.host}/shop/hello` } },
      }),
    });
    const job = await waitFor(
      `builder Job ${apps}/hello-build-1`,
      () =>
        kubeClients()
          .batch.readNamespacedJob({ namespace: apps, name: "hello-build-1" })
          .catch(() => undefined),
      { timeoutMs: 30_000 },
    );
    const pod = job.spec!.template.spec!;
    expect(pod.initContainers!.map((c) => c.image)).toEqual(["ghcr.io/niximage/nix-builder:2.28", "ghcr.io/niximage/nix-builder:2.28"]);
    // push (the operator image) and stream (the builder image: streamLayeredImage scripts, issue 12 item 4)
    expect(pod.containers.map((c) => c.image)).toEqual([defaultOperatorImage, "ghcr.io/niximage/nix-builder:2.28"]);
    expect(pod.automountServiceAccountToken).toBe(false);
    // ...and, with the chart's RBAC, the builder NetworkPolicy in that namespace before it.
    const policy = JSON.parse(await kubectl(["get", "networkpolicy", "niximage-builders", "--namespace", apps, "-o", "json"])) as Manifest;
    // (The API server stores `ingress: []`, no rule: no ingress at all, as an absent list.)
    const { ingress: noIngress, ...wanted } = builderNetworkPolicy(apps, parseOperatorConfig({}).builder.networkPolicy).spec!;
    expect(noIngress).toEqual([]);
    expect(policy.spec).toEqual(wanted);
    expect(policy.spec.policyTypes).toEqual(["Ingress", "Egress"]);

    // A clean stop (SIGTERM, as the kubelet sends): exit code 0.
    await controller.stop(10_000);
    expect(await controller.exited).toBe("exit code 0");
  });
});

/** Cleanup for the current test, run in reverse order of registration (like defer). */
function onCleanup(fn: () => Promise<unknown> | unknown): void {
  cleanups.push(fn);
}
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterAll(async () => {
  for (const fn of cleanups.reverse()) await fn();
});
