// Proves each component of the test bed works, with real clients.
import { readFileSync, existsSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createGitRepo, minimalFlake } from "../support/git-fixtures.ts";
import { apply, kubeClients, kubectl, testNamespace, testbed, waitFor } from "../support/kube.ts";
import { httpGet, run } from "../support/process.ts";

const bed = testbed();
const nixEnv = { ...process.env, ...bed.nix.env };

describe("kube-apiserver", () => {
  it("answers /version with the built Kubernetes version", async () => {
    const r = await httpGet(`${bed.kube.server}/version`, {
      ca: readFileSync(bed.kube.caFile),
      cert: readFileSync(bed.kube.certFile),
      key: readFileSync(bed.kube.keyFile),
    });
    expect(r.status).toBe(200);
    const v = JSON.parse(r.body) as { gitVersion: string; major: string; minor: string };
    expect(v.gitVersion).toBe(`v${bed.kube.version}`);
    expect(v.gitVersion).toBe("v1.34.4");
  });

  it("lists namespaces via client-node, kubectl and the bearer token", async () => {
    const { core } = kubeClients();
    const list = await core.listNamespace();
    expect(list.items.map((n) => n.metadata?.name)).toEqual(expect.arrayContaining(["default", "kube-system"]));

    expect((await kubectl(["get", "namespaces", "-o", "name"])).split("\n")).toContain("namespace/default");

    const r = await httpGet(`${bed.kube.server}/api/v1/namespaces`, {
      ca: readFileSync(bed.kube.caFile),
      headers: { Authorization: `Bearer ${bed.kube.token}` },
    });
    expect(r.status).toBe(200);
    const anon = await httpGet(`${bed.kube.server}/api/v1/namespaces`, { ca: readFileSync(bed.kube.caFile) });
    expect(anon.status).toBe(403);
  });

  it("serves ValidatingAdmissionPolicy", async () => {
    const out = await kubectl(["api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name"]);
    expect(out).toContain("validatingadmissionpolicies.admissionregistration.k8s.io");
  });
});

describe("kube-controller-manager", () => {
  it("makes a Pod for a Job", async () => {
    const ns = await testNamespace();
    const { core } = kubeClients();
    await apply({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: "hello", namespace: ns },
      spec: {
        backoffLimit: 0,
        template: {
          spec: {
            restartPolicy: "Never",
            containers: [{ name: "main", image: "registry.invalid/none:1", command: ["true"] }],
          },
        },
      },
    });
    const pod = await waitFor("a Pod of Job hello", async () => {
      const pods = await core.listNamespacedPod({ namespace: ns, labelSelector: "job-name=hello" });
      return pods.items[0];
    });
    expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({ kind: "Job", name: "hello" });
    // ServiceAccount admission ran: the projected token volume is there.
    expect(pod.spec?.volumes?.some((v) => v.name.startsWith("kube-api-access-"))).toBe(true);
  });

  it("makes a ReplicaSet (and Pods) for a Deployment", async () => {
    const ns = await testNamespace();
    const { apps, core } = kubeClients();
    await apply({
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web", namespace: ns },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: "web" } },
        template: {
          metadata: { labels: { app: "web" } },
          spec: { containers: [{ name: "web", image: "registry.invalid/web:1" }] },
        },
      },
    });
    const rs = await waitFor("a ReplicaSet of Deployment web", async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace: ns });
      return list.items.find((r) => r.metadata?.ownerReferences?.some((o) => o.kind === "Deployment" && o.name === "web"));
    });
    expect(rs.spec?.replicas).toBe(2);
    await waitFor("2 Pods of Deployment web", async () => {
      const pods = await core.listNamespacedPod({ namespace: ns, labelSelector: "app=web" });
      return pods.items.length === 2;
    });
  });
});

function httpsGet(url: string, ca: Buffer, auth?: string): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers: auth ? { Authorization: auth } : {}, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("docker-registry", () => {
  it("plain registry answers /v2/ with 200", async () => {
    const r = await httpGet(`http://${bed.registry.plain.host}/v2/`);
    expect(r.status).toBe(200);
    expect(r.headers["docker-distribution-api-version"]).toBe("registry/2.0");
    expect(existsSync(bed.registry.plain.rootDir)).toBe(true);
  });

  it("TLS registry verifies with the CA and wants basic auth", async () => {
    const tls = bed.registry.tls;
    const ca = readFileSync(tls.caFile);
    const anon = await httpsGet(`https://${tls.host}/v2/`, ca);
    expect(anon.status).toBe(401);
    expect(String(anon.headers["www-authenticate"])).toMatch(/^Basic realm=/);
    const basic = `Basic ${Buffer.from(`${tls.username}:${tls.password}`).toString("base64")}`;
    expect((await httpsGet(`https://${tls.host}/v2/`, ca, basic)).status).toBe(200);
    const wrong = `Basic ${Buffer.from(`${tls.username}:nope`).toString("base64")}`;
    expect((await httpsGet(`https://${tls.host}/v2/`, ca, wrong)).status).toBe(401);
    // Without the CA the certificate is not trusted.
    await expect(httpsGet(`https://${tls.host}/v2/`, Buffer.from(""))).rejects.toThrow();

    const authJson = JSON.parse(readFileSync(tls.authFile, "utf8")) as { auths: Record<string, { auth: string }> };
    expect(authJson.auths[tls.host]?.auth).toBe(basic.slice("Basic ".length));
    expect(existsSync(join(tls.certsDir, "ca.crt"))).toBe(true);
  });
});

describe("git server and Nix", () => {
  it("serves a pushed repo for clone, and Nix locks and builds the flake in it", async () => {
    const repo = await createGitRepo(minimalFlake({ marker: "testbed-check" }), { prefix: "flake" });
    expect(repo.rev).toMatch(/^[0-9a-f]{40}$/);

    const clone = join(bed.tmpDir, `clone-${repo.name}`);
    await run("git", ["clone", "--quiet", repo.httpUrl, clone]);
    const head = (await run("git", ["rev-parse", "HEAD"], { cwd: clone })).stdout.trim();
    expect(head).toBe(repo.rev);

    const meta = JSON.parse((await run("nix", ["flake", "metadata", "--json", repo.flakeUrl], { env: nixEnv })).stdout) as {
      revision: string;
      locked: { rev: string; type: string };
      lastModified: number;
    };
    expect(meta.revision).toBe(repo.rev);
    expect(meta.locked.rev).toBe(repo.rev);
    expect(meta.lastModified).toBe(1_704_067_200); // fixed commit date of the first commit

    // A new commit is seen at once (tarball-ttl = 0).
    const rev2 = await repo.commit(minimalFlake({ marker: "testbed-check-2" }));
    const meta2 = JSON.parse((await run("nix", ["flake", "metadata", "--json", repo.flakeUrl], { env: nixEnv })).stdout) as { revision: string };
    expect(meta2.revision).toBe(rev2);

    const built = JSON.parse(
      (
        await run("nix", ["build", "--json", "--no-link", `${repo.flakeUrl}?rev=${rev2}#default`], {
          env: nixEnv,
          timeoutMs: 120_000,
        })
      ).stdout,
    ) as Array<{ drvPath: string; outputs: { out: string } }>;
    expect(built).toHaveLength(1);
    const out = built[0]?.outputs.out ?? "";
    expect(out).toMatch(/^\/nix\/store\/[a-z0-9]{32}-testbed-default$/);
    expect(readFileSync(out, "utf8")).toBe("testbed-check-2\n");
  });

  it("gives the same commit hash for the same content (fixed author and dates)", async () => {
    const a = await createGitRepo({ README: "same\n" }, { prefix: "same" });
    const b = await createGitRepo({ README: "same\n" }, { prefix: "same" });
    expect(a.rev).toBe(b.rev);
  });
});
