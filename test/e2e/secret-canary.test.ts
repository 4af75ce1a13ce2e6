// Secrets in the cluster (issue 12, item 9): a canary password in push Secrets, as a working
// dockerconfigjson, as malformed JSON, as a wrong password and inside base64 garbage, each used by
// a NixImage on the e2e cluster. After every build has finished (or failed), the canary occurs 0
// times, raw, base64-encoded (alone and as the `user:password` auth field) or URL-encoded, in the
// controller's and every builder container's logs, the Events, the NixImages' status, the Jobs'
// and Pods' JSON (specs and statuses with termination messages) and the operator's metrics. The
// Secrets themselves are the only place it may be.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { createFlakeRepo } from "./support/git.ts";
import { diagnostics, httpText, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";

const { cluster, git, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-canary";
const fixture = join(import.meta.dirname, "fixtures/web");

// Characters that base64 and URL encoding change, around a random core.
const core = randomBytes(12).toString("hex");
const canary = `Nio+Canary/${core}=&?`;
const user = "canary-user";
const host = cluster.registry.host;
const b64 = (s: string) => Buffer.from(s).toString("base64");

/**
 * dockerconfigjson bodies, one per NixImage: each carries the canary a different way. (The API
 * server refuses malformed JSON in a kubernetes.io/dockerconfigjson Secret, so that one is an
 * Opaque Secret with the same key, which the builder Job mounts all the same.)
 */
const variants: Record<string, string> = {
  valid: JSON.stringify({ auths: { [host]: { auth: b64(`${user}:${canary}`) } } }),
  malformed: `{"auths":{"${host}":{"username":"${user}","password":"${canary}"`,
  wrong: JSON.stringify({ auths: { [host]: { username: user, password: `${canary}-wrong` } } }),
  garbage: JSON.stringify({ auths: { [host]: { auth: `%%${canary}%%not-base64` } } }),
};

/** Every spelling of the canary that must not appear. */
const needles: Record<string, string> = {
  raw: canary,
  core,
  base64: b64(canary),
  "base64 user:password": b64(`${user}:${canary}`),
  "url-encoded": encodeURIComponent(canary),
  "url-encoded (form)": new URLSearchParams({ p: canary }).toString().slice(2),
  "json-escaped": JSON.stringify(canary).slice(1, -1),
};

let operator: InstalledOperator | undefined;
let failed = false;

afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
});

interface Status {
  lastBuild?: { number: number; result: string; failure?: { step: string; message: string } };
  conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
}

describe("secret canary: the push Secret's password appears nowhere but in the Secret", () => {
  it("builds with four push Secret variants; 0 occurrences in logs, Events, status, Job/Pod JSON and metrics", async () => {
    try {
      operator = await installOperator(cluster);
      const repo = await createFlakeRepo({ baseUrl: git.baseUrl, root: git.root, stop: async () => {} }, "canary", fixture, workDir);
      await k.kubectl(["create", "namespace", ns]);
      for (const [name, body] of Object.entries(variants)) {
        await k.apply(`apiVersion: v1
kind: Secret
metadata:
  name: push-${name}
  namespace: ${ns}
  annotations: { niximage.io/allowed-images: ${name} }
type: ${name === "malformed" ? "Opaque" : "kubernetes.io/dockerconfigjson"}
data:
  .dockerconfigjson: ${b64(body)}
`);
        await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: ${name}, namespace: ${ns} }
spec:
  flake: ${repo.flakeUrl}
  attribute: default
  image:
    repository: ${host}/e2e/canary-${name}
    pushSecretRef: { name: push-${name} }
  build: { timeout: 15m }
`);
      }
      const results: Record<string, Status["lastBuild"]> = {};
      for (const name of Object.keys(variants)) {
        results[name] = await waitFor(
          `build 1 of NixImage ${ns}/${name} to finish`,
          async () => {
            const s = (await k.get<{ status?: Status }>("niximage", name, ns))?.status;
            return s?.lastBuild && s.lastBuild.number === 1 && s.lastBuild.result !== "Running" ? s.lastBuild : undefined;
          },
          { timeoutMs: 12 * 60_000, intervalMs: 2000, describe: async () => JSON.stringify((await k.get("niximage", name, ns)) ?? "none") },
        );
      }
      process.stderr.write(`canary builds: ${JSON.stringify(results)}\n`);
      // The valid Secret pushes; the malformed one and the base64 garbage fail in the push step,
      // with a message that names the problem, not the content.
      expect(results.valid?.result).toBe("Succeeded");
      expect(results.malformed?.result).toBe("Failed");
      expect(results.malformed?.failure?.step).toBe("push");
      expect(results.garbage?.result).toBe("Failed");
      expect(results.garbage?.failure?.step).toBe("push");

      // Everything the cluster shows about these builds.
      const haystacks: Record<string, string> = {};
      const pods = await k.json<{ items: Array<{ metadata: { name: string }; status?: { podIP?: string } }> }>(["-n", ns, "get", "pods"]);
      for (const pod of pods.items) {
        haystacks[`logs ${ns}/${pod.metadata.name}`] = await k
          .kubectl(["-n", ns, "logs", pod.metadata.name, "--all-containers", "--prefix"])
          .catch((e: Error) => e.message);
      }
      const opPods = await k.json<{ items: Array<{ metadata: { name: string }; status?: { podIP?: string } }> }>([
        "-n",
        operator.namespace,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=nix-image-operator",
      ]);
      for (const pod of opPods.items) {
        haystacks[`controller logs ${pod.metadata.name}`] = await k.kubectl(["-n", operator.namespace, "logs", pod.metadata.name, "--all-containers"]);
        const metrics = pod.status?.podIP ? await httpText(`http://${pod.status.podIP}:8080/metrics`) : undefined;
        expect(metrics, `metrics of ${pod.metadata.name}`).toMatch(/^# (HELP|TYPE) /m);
        haystacks[`metrics ${pod.metadata.name}`] = metrics ?? "";
      }
      haystacks.events = await k.kubectl(["get", "events", "-A", "-o", "json"]);
      haystacks["niximages (spec and status)"] = await k.kubectl(["-n", ns, "get", "niximages", "-o", "json"]);
      haystacks["jobs (spec and status)"] = await k.kubectl(["-n", ns, "get", "jobs", "-o", "json"]);
      haystacks["pods (spec and status, termination messages)"] = await k.kubectl(["-n", ns, "get", "pods", "-o", "json"]);
      haystacks["persistentvolumeclaims"] = await k.kubectl(["-n", ns, "get", "pvc", "-o", "json"]);
      expect(Object.keys(haystacks).filter((h) => h.startsWith("logs ")).length, "builder pods' logs read").toBeGreaterThanOrEqual(4);

      // The control: the canary is where it belongs, in every spelling we look for where it applies.
      const secrets = await k.kubectl(["-n", ns, "get", "secrets", "-o", "json"]);
      expect(secrets).toContain(b64(variants.valid!));

      const found: string[] = [];
      for (const [where, text] of Object.entries(haystacks)) {
        for (const [spelling, needle] of Object.entries(needles)) if (text.includes(needle)) found.push(`${spelling} in ${where}`);
      }
      const bytes = Object.values(haystacks).reduce((a, t) => a + t.length, 0);
      process.stderr.write(
        `secret canary: searched ${Object.keys(haystacks).length} sources (${bytes} bytes) for ${Object.keys(needles).length} spellings: ${found.length} hits\n`,
      );
      expect(found).toEqual([]);
    } catch (e) {
      failed = true;
      throw e;
    }
  });
});
