// Installs the operator into the e2e cluster the way users do: `helm template` of the chart with
// values pointing at the locally built images and the cluster's plain-HTTP registry, the CRD made
// by `nix-image-operator crd` from the very config the chart renders (so its CEL rules carry the
// widened flake ref policy that allows the local git+http server), then `kubectl apply`.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseAllDocuments, stringify } from "yaml";
import { DEFAULT_ALLOWED_SCHEMES } from "../../../src/flake/flake-ref-policy.ts";
import { run } from "../../support/process.ts";
import type { ClusterInfo } from "./cluster.ts";
import { repoRoot } from "./cluster.ts";
import { waitFor } from "./kube.ts";

export interface InstalledOperator {
  namespace: string;
  release: string;
  deployment: string;
  /** The operator config as rendered into the chart's ConfigMap. */
  configYaml: string;
  manifestsFile: string;
  crdFile: string;
}

export interface InstallOptions {
  namespace?: string;
  release?: string;
  replicas?: number;
  logLevel?: string;
  storeSize?: string;
  poolSize?: number;
  /** Serve the forge webhook receiver (the Secret <release>-nix-image-operator-webhook must exist first). */
  webhook?: boolean;
  /** The prepare/build steps' image (config.builder.nixImage); default: the cluster's builder image. */
  builderImage?: string;
}

function operatorValues(cluster: ClusterInfo, opts: InstallOptions = {}): Record<string, unknown> {
  const op = cluster.images.operator;
  return {
    image: { repository: `${cluster.registry.host}/${op.repository}`, tag: op.tag, pullPolicy: "IfNotPresent" },
    replicaCount: opts.replicas ?? 1,
    ...(opts.webhook ? { webhook: { enabled: true } } : {}),
    config: {
      store: {
        poolSize: opts.poolSize ?? 2,
        size: opts.storeSize ?? "2Gi",
        storageClassName: cluster.storageClassName,
        // hostPath volumes do not support ReadWriteOncePod (CSI only).
        accessMode: "ReadWriteOnce",
      },
      // The e2e builder image builds as nixbld users: the build step gets the chart's default
      // capabilities (builder.buildCapabilities) and --require-build-users.
      builder: { nixImage: opts.builderImage ?? cluster.images.builder.reference, imagePullPolicy: "IfNotPresent" },
      // The test git server listens on the node IP, a private address the default policy refuses.
      flakeRefPolicy: { allowedSchemes: [...DEFAULT_ALLOWED_SCHEMES, "git+http"], allowedAddressRanges: [`${cluster.net.nodeIp}/32`] },
      registries: [{ host: cluster.registry.host, plainHttp: true }],
      // The e2e files share one cluster and end by deleting their namespaces without waiting:
      // builds of a file before (e.g. one stuck on an unpullable image until its deadline) must
      // not use up the global cap (default 4) of the next. No e2e test is about the cap.
      concurrency: { builds: 32 },
      logLevel: opts.logLevel ?? "debug",
    },
  };
}

export async function installOperator(cluster: ClusterInfo, opts: InstallOptions = {}): Promise<InstalledOperator> {
  const namespace = opts.namespace ?? "nix-image-operator";
  const release = opts.release ?? "nio";
  const dir = cluster.runDir;
  const valuesFile = join(dir, "operator-values.yaml");
  await writeFile(valuesFile, stringify(operatorValues(cluster, opts)));
  const chart = join(repoRoot, "charts/nix-image-operator");
  const { stdout: manifests } = await run(
    cluster.helm,
    ["template", release, chart, "--namespace", namespace, "--kube-version", cluster.kubeVersion, "-f", valuesFile],
    {
      timeoutMs: 60_000,
    },
  );
  const docs = parseAllDocuments(manifests).map((d) => d.toJSON() as { kind?: string; metadata?: { name?: string }; data?: Record<string, string> } | null);
  const configMap = docs.find((d) => d?.kind === "ConfigMap" && d.data?.["config.yaml"] !== undefined);
  const deployment = docs.find((d) => d?.kind === "Deployment");
  if (!configMap?.data || !deployment?.metadata?.name) throw new Error("helm template rendered no ConfigMap with config.yaml or no Deployment");
  const configYaml = configMap.data["config.yaml"]!;
  const configFile = join(dir, "operator-config.yaml");
  await writeFile(configFile, configYaml);
  const manifestsFile = join(dir, "operator-manifests.yaml");
  await writeFile(manifestsFile, manifests);
  const { stdout: crd } = await run(process.execPath, [join(repoRoot, "src/cli/main.ts"), "crd", "--config", configFile], { timeoutMs: 60_000 });
  const crdFile = join(dir, "niximage-crd.yaml");
  await writeFile(crdFile, crd);

  const kubectl = (args: string[], timeoutMs = 120_000) => run(cluster.kubectl, ["--kubeconfig", cluster.kubeconfig, ...args], { timeoutMs });
  await kubectl(["apply", "--server-side", "-f", crdFile]);
  // `kubectl wait` fails outright while the CRD has no status.conditions yet: poll instead.
  await waitFor(
    "the NixImage CRD to be Established",
    async () => {
      const { stdout } = await kubectl(["get", "crd", "niximages.niximage.io", "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}']);
      return stdout.trim() === "True" ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  await kubectl(["create", "namespace", namespace]).catch((e: unknown) => {
    if (!/AlreadyExists/.test((e as Error).message)) throw e;
  });
  await kubectl(["apply", "-f", manifestsFile]);
  await kubectl(["-n", namespace, "rollout", "status", `deployment/${deployment.metadata.name}`, "--timeout=300s"], 320_000);
  return { namespace, release, deployment: deployment.metadata.name, configYaml, manifestsFile, crdFile };
}
