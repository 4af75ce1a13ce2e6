// Small pieces the e2e fault tests (issue 10, cases 12, 14, 15, 16) share: a flake that builds in
// a second on the builder image (busybox only, no nixpkgs), the opted-in Deployment that runs it,
// and a check of a store volume by Nix itself in a pod of its own.
import type { Kube } from "./kube.ts";
import { waitFor } from "./kube.ts";

/**
 * A flake whose packages are small web apps: `bin/web` starts busybox httpd on :8080 serving
 * `message.txt`. Every package shares the `busybox-static` store path and one `shared-<n>` path
 * per entry of `shared` (overlapping closures). `packages.<name>` gets `extra` (shell run in its
 * builder before the output is written), e.g. a command that needs a lot of memory.
 */
export function webAppFlake(apps: Record<string, { message: string; extra?: string; shared?: number[] }>): Record<string, string> {
  const app = (name: string, o: { message: string; extra?: string; shared?: number[] }) => {
    const deps = (o.shared ?? []).map((n) => `shared${n}`);
    return `    ${JSON.stringify(name)} = derivation {
      name = ${JSON.stringify(`app-${name}`)};
      inherit system busybox ${deps.join(" ")};
      builder = "/bin/sh";
      message = ${JSON.stringify(o.message)};
      extra = ${JSON.stringify(o.extra ?? ":")};
      passAsFile = [ "extra" ];
      args = [ "-c" ''
        set -e
        . $extraPath
        /bin/busybox mkdir -p $out/bin $out/www
        /bin/busybox printf '%s' "$message" > $out/www/message.txt
        ${deps.map((d) => `/bin/busybox ln -s $${d} $out/www/${d}`).join("\n        ")}
        { echo "#!$busybox/bin/sh"; echo "exec $busybox/bin/busybox httpd -f -p 8080 -h $out/www"; } > $out/bin/web
        /bin/busybox chmod 555 $out/bin/web
      '' ];
    } // { meta.mainProgram = "web"; };`;
  };
  const sharedIds = [...new Set(Object.values(apps).flatMap((a) => a.shared ?? []))].sort((a, b) => a - b);
  const shared = sharedIds.map(
    (n) => `    shared${n} = derivation {
      name = "shared-${n}"; inherit system; builder = "/bin/sh";
      args = [ "-c" "/bin/busybox mkdir -p $out && echo shared ${n} > $out/data" ];
    };`,
  );
  const flake = `{
  outputs = { self }: let
    system = "x86_64-linux";
    busybox = derivation {
      name = "busybox-static"; inherit system; builder = "/bin/sh";
      args = [ "-c" "/bin/busybox mkdir -p $out/bin && /bin/busybox cp /bin/busybox $out/bin/busybox && /bin/busybox ln -s busybox $out/bin/sh" ];
    };
${shared.join("\n")}
  in { packages.\${system} = {
${Object.entries(apps)
  .map(([name, o]) => app(name, o))
  .join("\n")}
  }; };
}
`;
  return { "flake.nix": flake, "flake.lock": JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }) };
}

/** An opted-in Deployment `name` (label app=<name>) that runs the NixImage `imageName`'s digest; a placeholder until then. */
export function appDeploymentYaml(o: { namespace: string; name: string; imageName: string; placeholderImage: string }): string {
  return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${o.name}
  namespace: ${o.namespace}
  annotations: { niximage.io/from: ${o.imageName} }
spec:
  replicas: 1
  selector: { matchLabels: { app: ${o.name} } }
  strategy: { type: RollingUpdate, rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }
  template:
    metadata: { labels: { app: ${o.name} } }
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: app
          image: ${o.placeholderImage}
          ports: [{ containerPort: 8080 }]
          readinessProbe: { httpGet: { path: /message.txt, port: 8080 }, periodSeconds: 1 }
`;
}

interface PodView {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { containers: { image: string }[] };
  status: { phase?: string; containerStatuses?: { ready: boolean; imageID: string; state?: { terminated?: { exitCode: number } } }[] };
}

/** Waits until the Deployment `name`'s only pod runs `image` (repo@digest) and is ready. */
export async function deploymentServes(k: Kube, namespace: string, name: string, image: string, timeoutMs = 180_000): Promise<void> {
  const digest = image.slice(image.indexOf("@") + 1);
  const pods = async () =>
    (await k.json<{ items: PodView[] }>(["-n", namespace, "get", "pods", "-l", `app=${name}`])).items.filter((p) => !p.metadata.deletionTimestamp);
  await waitFor(
    `Deployment ${namespace}/${name}'s pod to run ${image} ready`,
    async () => {
      const all = await pods();
      const status = all[0]?.status.containerStatuses?.[0];
      return all.length === 1 && all[0]!.spec.containers[0]?.image === image && status?.ready && status.imageID.endsWith(digest) ? true : undefined;
    },
    {
      timeoutMs,
      intervalMs: 500,
      describe: async () =>
        (await pods())
          .map((p) => `${p.metadata.name} ${p.status.phase} ${p.spec.containers[0]?.image} ready=${p.status.containerStatuses?.[0]?.ready}`)
          .join("\n"),
    },
  );
}

/** The PVC a builder Job mounted as its store volume. */
export async function jobStoreVolume(k: Kube, namespace: string, job: string): Promise<string> {
  const j = await k.get<{ spec: { template: { spec: { volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[] } } } }>(
    "job",
    job,
    namespace,
  );
  const claim = j?.spec.template.spec.volumes?.find((v) => v.name === "store")?.persistentVolumeClaim?.claimName;
  if (!claim) throw new Error(`job ${namespace}/${job} has no store volume`);
  return claim;
}

/**
 * Runs `script` (sh -c) in a pod of the builder image with the store volume `claim`'s Nix tree
 * mounted at /nix, as the build step sees it; returns its exit code and log. The caller makes
 * sure no build holds the volume meanwhile (a store is never shared by two pods).
 */
export async function runOnStore(
  k: Kube,
  o: { namespace: string; claim: string; image: string; name: string; script: string; timeoutMs?: number },
): Promise<{ exitCode: number; log: string }> {
  await k.kubectl(["-n", o.namespace, "delete", "pod", o.name, "--ignore-not-found", "--wait=true"]);
  await k.apply(`apiVersion: v1
kind: Pod
metadata: { name: ${o.name}, namespace: ${o.namespace} }
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
    - name: check
      image: ${o.image}
      imagePullPolicy: IfNotPresent
      command: ["/bin/sh", "-c", ${JSON.stringify(o.script)}]
      volumeMounts: [{ name: store, mountPath: /nix, subPath: nix }]
  volumes: [{ name: store, persistentVolumeClaim: { claimName: ${o.claim} } }]
`);
  const pod = await waitFor(
    `pod ${o.namespace}/${o.name} to finish`,
    async () => {
      const p = await k.get<PodView>("pod", o.name, o.namespace);
      return p?.status.phase === "Succeeded" || p?.status.phase === "Failed" ? p : undefined;
    },
    {
      timeoutMs: o.timeoutMs ?? 180_000,
      intervalMs: 500,
      describe: async () => JSON.stringify((await k.get<PodView>("pod", o.name, o.namespace))?.status ?? {}),
    },
  );
  const log = await k.kubectl(["-n", o.namespace, "logs", o.name]);
  await k.kubectl(["-n", o.namespace, "delete", "pod", o.name, "--wait=true"]);
  return { exitCode: pod.status.containerStatuses?.[0]?.state?.terminated?.exitCode ?? -1, log };
}

/** `nix-store --verify --check-contents` on the store volume `claim`: exit code and output. */
export const verifyStore = (k: Kube, o: { namespace: string; claim: string; image: string }) =>
  runOnStore(k, { ...o, name: `verify-${o.claim}`.slice(0, 63), script: "nix-store --verify --check-contents 2>&1" });
