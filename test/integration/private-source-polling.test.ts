// Revision polling of a private source (issue 13 item 2): the controller, with exactly the chart's
// RBAC, polls a git server that requires HTTP basic auth with the netrc of the NixImage's
// spec.sourceCredentialsSecretRef, read from the Secret at poll time. A new commit on the private
// repository is noticed by polling alone (the next build is pinned to it); a wrong password makes
// the Ready condition say that polling failed with HTTP 401 and what to fix. Neither password
// (both canary values) appears in the controller's log lines, the NixImage's status or any Event.
// The same over git+ssh with spec.sshKeySecretRef: polled with the key (held in memory by the
// controller, no ssh binary), host key checked against the Secret's known_hosts.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { KubernetesObject } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { NixImageStatus } from "../../src/api/niximage.ts";
import { createLogger } from "../../src/log/logger.ts";
import { kubeRequestJson } from "../../src/runtime/kube-request.ts";
import { createGitRepo, minimalFlake, type GitRepo } from "../support/git-fixtures.ts";
import { startGitServer } from "../support/git-server.ts";
import { apply, kubeClients, testbed, testNamespace, waitFor } from "../support/kube.ts";
import { chartServiceAccount, finishBuildPod, installTestCrd, OffsetClock, pushResult, startTestOperator, waitForJob } from "../support/operator-harness.ts";
import { run } from "../support/process.ts";
import { startSshGitServer } from "../support/ssh-git-server.ts";

type NixImageObject = KubernetesObject & { status?: NixImageStatus };
const repository = "127.0.0.1:5000/shop/private";
const hex = (seed: string) => (seed.repeat(64) + "0".repeat(64)).slice(0, 64);
const user = "poll-bot";
// Canaries: looked for everywhere the controller writes.
const password = `canary-right-${randomBytes(8).toString("hex")}`;
const wrongPassword = `canary-wrong-${randomBytes(8).toString("hex")}`;

/** Mirrors the test-bed repository onto the private server (again after each commit). */
async function mirror(repo: GitRepo, root: string): Promise<void> {
  const target = join(root, `${repo.name}.git`);
  await run("git", ["clone", "--quiet", "--mirror", repo.bareDir, target]).catch(async () => {
    await run("git", ["--git-dir", target, "fetch", "--quiet", "--prune", repo.bareDir, "+refs/*:refs/*"]);
  });
}

const netrcSecret = (namespace: string, pw: string) => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name: "source", namespace },
  type: "Opaque",
  stringData: { netrc: `machine 127.0.0.1 login ${user} password ${pw}\n` },
});

describe("revision polling of a private source with its credential Secret", () => {
  beforeAll(installTestCrd);

  it("notices a new commit by polling with the netrc; a wrong password says polling failed (401) and what to do; the secret appears nowhere", async () => {
    const bed = testbed();
    const dir = join(bed.tmpDir, `private-poll-${randomBytes(3).toString("hex")}`);
    const server = await startGitServer({ root: join(dir, "git"), logFile: join(dir, "git.log"), basicAuth: { user, password } });
    try {
      const repo = await createGitRepo(minimalFlake({ marker: "private-one" }), { prefix: "private-poll" });
      await mirror(repo, server.root);
      const flake = `git+${server.baseUrl}/${repo.name}.git`;

      const namespace = await testNamespace("private-poll");
      const lines: string[] = [];
      const logger = createLogger({ level: "trace", destination: { write: (line: string) => void lines.push(line) } });
      const clock = new OffsetClock();
      const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace], clock, logger });
      await apply(netrcSecret(namespace, password));
      await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
        body: {
          apiVersion: "niximage.io/v1alpha1",
          kind: "NixImage",
          metadata: { name: "web" },
          spec: { flake, sourceCredentialsSecretRef: { name: "source" }, triggers: { interval: "1m" }, image: { repository } },
        },
      });
      const read = () => kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`);

      // The first build is pinned to the commit the authenticated poll found.
      const first = await waitForJob(namespace, "web-build-1");
      expect(first.metadata?.annotations?.["niximage.io/revision"]).toContain(repo.rev);
      await finishBuildPod(namespace, "web-build-1", { succeed: { message: pushResult(repository, hex("1"), repo.rev) } });
      await waitFor("first image in status", async () => ((await read()).status?.latestImage?.endsWith(hex("1")) ? true : undefined));
      const ready = (await read()).status?.conditions?.find((c) => c.type === "Ready");
      expect(ready?.message).not.toMatch(/does not poll/);

      // A new commit on the private repository: seen by the next poll, and built.
      const second = await repo.commit({ "message.txt": "two" });
      await mirror(repo, server.root);
      clock.advance(70_000);
      operator.enqueueAll();
      const job2 = await waitForJob(namespace, "web-build-2");
      expect(job2.metadata?.annotations?.["niximage.io/revision"]).toContain(second);
      await finishBuildPod(namespace, "web-build-2", { succeed: { message: pushResult(repository, hex("2"), second) } });
      await waitFor("second image in status", async () => ((await read()).status?.latestImage?.endsWith(hex("2")) ? true : undefined));

      // A wrong password: the next poll is refused, and the Ready condition says so and what to do.
      await apply(netrcSecret(namespace, wrongPassword), { force: true });
      await repo.commit({ "message.txt": "three" });
      await mirror(repo, server.root);
      clock.advance(70_000);
      operator.enqueueAll();
      const refused = await waitFor("Ready says polling failed with 401", async () => {
        const message = (await read()).status?.conditions?.find((c) => c.type === "Ready")?.message ?? "";
        return /polling failed/.test(message) ? message : undefined;
      });
      expect(refused).toContain("refused the credential from Secret " + `${namespace}/source (netrc machine 127.0.0.1) with HTTP 401`);
      expect(refused).toMatch(/correct that entry/);
      expect(refused).toContain(`${hex("2")} is the latest build`);
      await operator.idle();
      const { items: events } = await kubeClients().core.listNamespacedEvent({ namespace });
      expect(events.some((e) => e.reason === "RevisionUnavailable" && /HTTP 401/.test(e.message ?? ""))).toBe(true);
      // No build for the unseen commit.
      expect((await kubeClients().batch.listNamespacedJob({ namespace })).items.map((j) => j.metadata?.name).sort()).toEqual(["web-build-1", "web-build-2"]);

      // The server saw the controller's authenticated polls, and the refused one.
      const serverLog = await readFile(join(dir, "git.log"), "utf8");
      expect(serverLog).toMatch(/GET \/private-poll-[0-9a-f]+\.git\/info\/refs\?service=git-upload-pack -> 401 \(wrong credentials\)/);

      // The canaries: nowhere in the controller's log, the NixImage (status included) or the Events.
      const everything = [lines.join(""), JSON.stringify(await read()), JSON.stringify(events)].join("\n");
      expect(lines.length).toBeGreaterThan(0);
      for (const canary of [
        password,
        wrongPassword,
        Buffer.from(`${user}:${password}`).toString("base64"),
        Buffer.from(`${user}:${wrongPassword}`).toString("base64"),
      ]) {
        expect(everything).not.toContain(canary);
      }
    } finally {
      await server.stop();
    }
  });

  it("git+ssh: notices a new commit by polling with the key; a changed host key is refused before authentication; the key appears nowhere", async () => {
    const bed = testbed();
    const dir = join(bed.tmpDir, `private-poll-ssh-${randomBytes(3).toString("hex")}`);
    const sshd = await startSshGitServer({ dir: join(dir, "sshd"), logFile: join(dir, "sshd.log") });
    try {
      const root = join(dir, "ssh-git");
      const repo = await createGitRepo(minimalFlake({ marker: "private-ssh" }), { prefix: "private-poll-ssh" });
      await mirror(repo, root);
      const flake = `git+${sshd.baseUrl}${root}/${repo.name}.git`;
      const key = await readFile(sshd.clientKeyFile, "utf8");
      const keySecret = (knownHosts: string) => ({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "ssh", namespace },
        type: "Opaque",
        stringData: { "ssh-privatekey": key, known_hosts: knownHosts },
      });

      const namespace = await testNamespace("private-poll-ssh");
      const lines: string[] = [];
      const logger = createLogger({ level: "trace", destination: { write: (line: string) => void lines.push(line) } });
      const clock = new OffsetClock();
      const operator = await startTestOperator({ access: await chartServiceAccount(), namespaces: [namespace], clock, logger });
      await apply(keySecret(sshd.knownHosts));
      await kubeRequestJson(kubeClients().kc, "POST", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages`, {
        body: {
          apiVersion: "niximage.io/v1alpha1",
          kind: "NixImage",
          metadata: { name: "web" },
          spec: { flake, sshKeySecretRef: { name: "ssh" }, triggers: { interval: "1m" }, image: { repository } },
        },
      });
      const read = () => kubeRequestJson<NixImageObject>(kubeClients().kc, "GET", `/apis/niximage.io/v1alpha1/namespaces/${namespace}/niximages/web`);
      const first = await waitForJob(namespace, "web-build-1");
      expect(first.metadata?.annotations?.["niximage.io/revision"]).toContain(repo.rev);
      await finishBuildPod(namespace, "web-build-1", { succeed: { message: pushResult(repository, hex("1"), repo.rev) } });
      await waitFor("first image in status", async () => ((await read()).status?.latestImage?.endsWith(hex("1")) ? true : undefined));
      expect((await read()).status?.conditions?.find((c) => c.type === "Ready")?.message).not.toMatch(/does not poll/);

      const second = await repo.commit({ "message.txt": "two" });
      await mirror(repo, root);
      clock.advance(70_000);
      operator.enqueueAll();
      const job2 = await waitForJob(namespace, "web-build-2");
      expect(job2.metadata?.annotations?.["niximage.io/revision"]).toContain(second);
      await finishBuildPod(namespace, "web-build-2", { succeed: { message: pushResult(repository, hex("2"), second) } });
      await waitFor("second image in status", async () => ((await read()).status?.latestImage?.endsWith(hex("2")) ? true : undefined));

      // known_hosts now names another key for this host: refused before the key is offered.
      const accepted = async () => ((await readFile(join(dir, "sshd.log"), "utf8")).match(/Accepted publickey/g) ?? []).length;
      const acceptedBefore = await accepted();
      expect(acceptedBefore).toBeGreaterThanOrEqual(2);
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "other")]);
      const other = (await readFile(join(dir, "other.pub"), "utf8")).trim().split(/\s+/).slice(0, 2).join(" ");
      await apply(keySecret(sshd.knownHosts.replace(/ssh-ed25519 \S+/, other)), { force: true });
      await repo.commit({ "message.txt": "three" });
      await mirror(repo, root);
      clock.advance(70_000);
      operator.enqueueAll();
      const refused = await waitFor("Ready says the host key does not match", async () => {
        const message = (await read()).status?.conditions?.find((c) => c.type === "Ready")?.message ?? "";
        return /polling failed/.test(message) ? message : undefined;
      });
      expect(refused).toMatch(/does not match known_hosts/);
      expect(refused).toContain(`Secret ${namespace}/ssh`);
      await operator.idle();
      expect(await accepted()).toBe(acceptedBefore);
      expect((await kubeClients().batch.listNamespacedJob({ namespace })).items.map((j) => j.metadata?.name).sort()).toEqual(["web-build-1", "web-build-2"]);

      const { items: events } = await kubeClients().core.listNamespacedEvent({ namespace });
      const everything = [lines.join(""), JSON.stringify(await read()), JSON.stringify(events)].join("\n");
      const keyLines = key.split("\n").filter((l) => l.length >= 16 && !l.startsWith("-----"));
      expect(keyLines.length).toBeGreaterThan(0);
      for (const line of keyLines) expect(everything).not.toContain(line);
    } finally {
      await sshd.stop();
    }
  });
});
