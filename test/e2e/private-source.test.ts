// Private flake sources on the real kubelet (issue 13 item 2): a git server on the node IP that
// requires basic auth serves a flake whose input is another private repository. The NixImage names
// a Secret with a netrc (spec.sourceCredentialsSecretRef): the builder pod's fetch step alone
// mounts it and fetches both into the store; the build step builds with no Secret; the image is
// pushed. The password appears in no step's log, no status, no Event. A NixImage naming a missing
// Secret says so in status (SourceSecretNotFound) without a pod. Per-phase timings are printed.
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { startPodGitServer, type PodGitServer } from "./support/git.ts";
import { diagnostics, kube, waitFor } from "./support/kube.ts";
import { installOperator, type InstalledOperator } from "./support/operator-install.ts";
import { run } from "../support/process.ts";
import { startSshGitServer, type SshGitServer } from "../support/ssh-git-server.ts";

const { cluster, workDir } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-private";
const user = "ci-bot";
const password = `pw-${randomBytes(12).toString("hex")}`;
let server: PodGitServer | undefined;
let sshServer: SshGitServer | undefined;
let operator: InstalledOperator | undefined;
let failed = false;

interface Container {
  name: string;
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  envFrom?: unknown[];
  volumeMounts?: { name: string; mountPath: string }[];
}
interface PodView {
  metadata: { name: string };
  spec: { initContainers?: Container[]; containers: Container[]; volumes?: { name: string; secret?: { secretName: string } }[] };
}
interface NixImageView {
  status?: {
    lastBuild?: { number: number; result: string; durations?: Record<string, number>; failure?: unknown; digest?: string };
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], operator?.namespace ?? "nix-image-operator")}\n`);
  await server?.stop();
  await sshServer?.stop();
});

const gitEnv = { ...process.env, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", GIT_TERMINAL_PROMPT: "0" };

/** A bare repository on the private server with one commit of `files`. */
async function privateRepo(root: string, name: string, files: Record<string, string>): Promise<void> {
  const dir = join(workDir, "private-src", name);
  await mkdir(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text);
  const git = (args: string[]) => run("git", args, { cwd: dir, env: gitEnv });
  await git(["init", "--quiet", "--initial-branch=master"]);
  await git(["add", "--all"]);
  await git(["-c", "user.name=e2e", "-c", "user.email=e2e@niximage.io", "commit", "--quiet", "--no-gpg-sign", "-m", "init"]);
  await run("git", ["clone", "--quiet", "--bare", dir, join(root, `${name}.git`)], { env: gitEnv });
}

describe("private flake source over HTTP with a netrc Secret", () => {
  it("the fetch step alone holds the credential; the build succeeds; the password is in no log, status or Event", async () => {
    const address = new URL(inject("e2e").git.baseUrl).hostname;
    const root = join(workDir, "private-git");
    await mkdir(root, { recursive: true });
    server = await startPodGitServer({ address, root, logFile: join(cluster.logDir, "private-git.log"), basicAuth: { user, password } });
    const depUrl = `git+${server.baseUrl}/dep.git`;
    await privateRepo(root, "dep", { "flake.nix": `{ outputs = { self }: { message = "hello from a private input"; }; }\n` });
    const topFlake = `{
  inputs.dep.url = "${depUrl}";
  outputs = { self, dep }: {
    packages.x86_64-linux.default = derivation {
      name = "private-app"; system = "x86_64-linux"; builder = "/bin/sh";
      args = [ "-c" "/bin/mkdir -p $out/share && echo '\${dep.message}' > $out/share/message.txt" ];
    };
  };
}
`;
    // The lock file pins the private input (made on the host with the same credential).
    const lockDir = join(workDir, "private-lock");
    await mkdir(lockDir, { recursive: true });
    await writeFile(join(lockDir, "flake.nix"), topFlake);
    await run("git", ["init", "--quiet"], { cwd: lockDir, env: gitEnv });
    await run("git", ["add", "flake.nix"], { cwd: lockDir, env: gitEnv });
    const home = join(workDir, "private-home");
    await mkdir(home, { recursive: true });
    const netrc = join(workDir, "private-netrc");
    await writeFile(netrc, `machine ${address} login ${user} password ${password}\n`, { mode: 0o600 });
    await writeFile(join(home, ".netrc"), await readFile(netrc), { mode: 0o600 });
    const nixConfig = "experimental-features = nix-command flakes\nflake-registry =\n";
    await run("nix", ["flake", "lock", lockDir], { env: { ...gitEnv, HOME: home, XDG_CACHE_HOME: join(home, "cache"), NIX_CONFIG: nixConfig } });
    await privateRepo(root, "app", { "flake.nix": topFlake, "flake.lock": await readFile(join(lockDir, "flake.lock"), "utf8") });

    operator = await installOperator(cluster);
    await k.kubectl(["create", "namespace", ns]);
    await k.kubectl(["-n", ns, "create", "secret", "generic", "git-credentials", `--from-file=netrc=${netrc}`]);
    const applied = Date.now();
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: app, namespace: ${ns} }
spec:
  flake: git+${server.baseUrl}/app.git
  sourceCredentialsSecretRef: { name: git-credentials }
  image: { repository: ${cluster.registry.host}/e2e/private-app }
  build: { timeout: 10m }
`);
    const build = await waitFor(
      "build 1 of the private NixImage to finish",
      async () => {
        const b = (await k.get<NixImageView>("niximage", "app", ns))?.status?.lastBuild;
        return b && b.result !== "Running" ? b : undefined;
      },
      { timeoutMs: 10 * 60_000, describe: async () => JSON.stringify((await k.get<NixImageView>("niximage", "app", ns))?.status ?? {}, null, 2) },
    );
    expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");
    const durations = build.durations ?? {};
    for (const phase of ["fetch", "fetchLock", "fetchInputs", "lock", "build", "push"]) expect(durations[phase], phase).toBeTypeOf("number");
    process.stderr.write(
      `\nprivate-source build (seconds): applied->succeeded=${(Date.now() - applied) / 1000} ${Object.entries(durations)
        .map(([p, s]) => `${p}=${s}`)
        .join(" ")}\n`,
    );

    // The pod as the kubelet ran it: only the fetch step mounts the Secret.
    const pods = await k.json<{ items: PodView[] }>(["-n", ns, "get", "pods", "-l", "niximage.io/image=app"]);
    const pod = pods.items[0]!;
    const secretVolumes = new Set((pod.spec.volumes ?? []).filter((v) => v.secret?.secretName === "git-credentials").map((v) => v.name));
    expect(secretVolumes.size).toBe(1);
    const containers = [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
    expect(containers.map((c) => c.name)).toEqual(expect.arrayContaining(["prepare", "fetch", "build", "push"]));
    for (const c of containers) {
      const mounts = (c.volumeMounts ?? []).filter((m) => secretVolumes.has(m.name));
      expect(mounts.length, c.name).toBe(c.name === "fetch" ? 1 : 0);
      expect(c.envFrom, c.name).toBeUndefined();
      for (const e of c.env ?? []) expect(e.valueFrom, `${c.name} ${e.name}`).toBeUndefined();
    }
    // Logs of every step, the NixImage, the Job and the Events: no password.
    const seen: Record<string, string> = {
      niximage: JSON.stringify(await k.get("niximage", "app", ns)),
      events: await k.kubectl(["-n", ns, "get", "events", "-o", "json"]),
    };
    for (const c of containers) seen[`log ${c.name}`] = await k.kubectl(["-n", ns, "logs", pod.metadata.name, "-c", c.name]);
    for (const [what, text] of Object.entries(seen)) expect(text.includes(password), what).toBe(false);
    expect(seen["log fetch"]).toContain("fetched the flake and its inputs");
  });

  it("git+ssh with a key Secret (spec.sshKeySecretRef: ssh-privatekey + known_hosts, host key checked): builds in the fetch step's pod", async () => {
    const address = new URL(inject("e2e").git.baseUrl).hostname;
    sshServer = await startSshGitServer({ dir: join(workDir, "sshd"), address, logFile: join(cluster.logDir, "sshd.log") });
    const root = join(workDir, "ssh-git");
    await mkdir(root, { recursive: true });
    await privateRepo(root, "dep", { "flake.nix": `{ outputs = { self }: { message = "hello over ssh"; }; }\n` });
    const depUrl = `git+${sshServer.baseUrl}${root}/dep.git`;
    const topFlake = `{
  inputs.dep.url = "${depUrl}";
  outputs = { self, dep }: {
    packages.x86_64-linux.default = derivation {
      name = "ssh-app"; system = "x86_64-linux"; builder = "/bin/sh";
      args = [ "-c" "/bin/mkdir -p $out/share && echo '\${dep.message}' > $out/share/message.txt" ];
    };
  };
}
`;
    const keyDir = join(workDir, "ssh-key");
    await mkdir(keyDir, { recursive: true });
    await writeFile(join(keyDir, "known_hosts"), sshServer.knownHosts);
    const lockDir = join(workDir, "ssh-lock");
    await mkdir(lockDir, { recursive: true });
    await writeFile(join(lockDir, "flake.nix"), topFlake);
    await run("git", ["init", "--quiet"], { cwd: lockDir, env: gitEnv });
    await run("git", ["add", "flake.nix"], { cwd: lockDir, env: gitEnv });
    const sshCommand = `ssh -F /dev/null -i ${sshServer.clientKeyFile} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${join(keyDir, "known_hosts")} -o BatchMode=yes`;
    const home = join(workDir, "ssh-home");
    await mkdir(home, { recursive: true });
    await run("nix", ["flake", "lock", lockDir], {
      env: {
        ...gitEnv,
        HOME: home,
        XDG_CACHE_HOME: join(home, "cache"),
        NIX_CONFIG: "experimental-features = nix-command flakes\nflake-registry =\n",
        GIT_SSH_COMMAND: sshCommand,
      },
    });
    await privateRepo(root, "app", { "flake.nix": topFlake, "flake.lock": await readFile(join(lockDir, "flake.lock"), "utf8") });
    await k.kubectl([
      "-n",
      ns,
      "create",
      "secret",
      "generic",
      "deploy-key",
      `--from-file=ssh-privatekey=${sshServer.clientKeyFile}`,
      `--from-file=known_hosts=${join(keyDir, "known_hosts")}`,
    ]);
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: ssh-app, namespace: ${ns} }
spec:
  flake: git+${sshServer.baseUrl}${root}/app.git
  sshKeySecretRef: { name: deploy-key }
  image: { repository: ${cluster.registry.host}/e2e/ssh-app }
  build: { timeout: 10m }
`);
    const build = await waitFor(
      "build 1 of the git+ssh NixImage to finish",
      async () => {
        const b = (await k.get<NixImageView>("niximage", "ssh-app", ns))?.status?.lastBuild;
        return b && b.result !== "Running" ? b : undefined;
      },
      { timeoutMs: 10 * 60_000, describe: async () => JSON.stringify((await k.get<NixImageView>("niximage", "ssh-app", ns))?.status ?? {}, null, 2) },
    );
    expect(build.result, JSON.stringify(build.failure)).toBe("Succeeded");
    process.stderr.write(
      `\ngit+ssh build (seconds): ${Object.entries(build.durations ?? {})
        .map(([p, s]) => `${p}=${s}`)
        .join(" ")}\n`,
    );
    expect(await readFile(join(cluster.logDir, "sshd.log"), "utf8")).toContain("Accepted publickey");
    const key = (await readFile(sshServer.clientKeyFile, "utf8")).split("\n")[1]!;
    expect(JSON.stringify(await k.get("niximage", "ssh-app", ns)).includes(key)).toBe(false);
  });

  it("a missing source Secret: Stalled/SourceSecretNotFound in status, no builder Job", async () => {
    await k.apply(`apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: nosecret, namespace: ${ns} }
spec:
  flake: git+${server!.baseUrl}/app.git
  sourceCredentialsSecretRef: { name: does-not-exist }
  image: { repository: ${cluster.registry.host}/e2e/private-nosecret }
`);
    const stalled = await waitFor(
      "SourceSecretNotFound on the NixImage",
      async () => (await k.get<NixImageView>("niximage", "nosecret", ns))?.status?.conditions?.find((c) => c.type === "Stalled" && c.status === "True"),
      { timeoutMs: 30_000 },
    );
    expect(stalled.reason).toBe("SourceSecretNotFound");
    expect(stalled.message).toContain("does-not-exist");
    expect(await k.get("job", "nosecret-build-1", ns)).toBeUndefined();
  });
});
