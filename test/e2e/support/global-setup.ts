// vitest globalSetup of the e2e tier: starts the single-node cluster (test/e2e/support/cluster.ts)
// and a git server pods can reach, provides them as `inject("e2e")`, tears both down afterwards
// and fails the run when the teardown left anything on the host.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { leftovers, startCluster } from "./cluster.ts";
import "./e2e-types.ts";
import { startPodGitServer } from "./git.ts";

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await startCluster();
  const workDir = join(cluster.runDir, "work");
  await mkdir(workDir, { recursive: true });
  let git;
  try {
    git = await startPodGitServer({ address: cluster.net.nodeIp, root: join(cluster.runDir, "git"), logFile: join(cluster.logDir, "git.log") });
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  process.stderr.write(
    `e2e cluster up in ${((cluster.timings.total ?? 0) / 1000).toFixed(1)}s (${JSON.stringify(cluster.timings)}); ` +
      `KUBECONFIG=${cluster.kubeconfig}; registry ${cluster.registry.host}; git ${git.baseUrl}; logs in ${cluster.logDir}\n`,
  );
  const { kc: _kc, kubectl_: _k, stop: _s, ...info } = cluster;
  project.provide("e2e", { cluster: info, git: { baseUrl: git.baseUrl, root: git.root }, workDir });
  return async () => {
    await git.stop();
    await cluster.stop();
    const left = leftovers(info);
    if (left.length) throw new Error(`the e2e cluster left things behind:\n  - ${left.join("\n  - ")}`);
    process.stderr.write(`e2e cluster stopped; nothing left behind (logs in ${cluster.logDir})\n`);
  };
}
