// Manual control of the e2e cluster:
//   node test/e2e/support/cluster-cli.ts up       start it, print how to use it, stop on Ctrl-C
//   node test/e2e/support/cluster-cli.ts down     remove what a crashed run left behind
//   node test/e2e/support/cluster-cli.ts images   build (or find cached) the pause/builder/operator layers
//   node test/e2e/support/cluster-cli.ts check    list missing prerequisites
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { kubeBinDir } from "../../support/kube-apiserver.ts";
import { leftovers, onInterrupt, reapStaleCluster, repoRoot, startCluster, stateFilePath } from "./cluster.ts";
import { buildImages, e2eCacheDir, type ImageSpec } from "./images.ts";
import { defaultNetwork } from "./network.ts";
import { missingPrerequisites } from "./prerequisites.ts";

const command = process.argv[2] ?? "help";
const t0 = Date.now();
const log = (m: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);

switch (command) {
  case "up": {
    const cluster = await startCluster({ log });
    process.stdout.write(
      `\ncluster up in ${(cluster.timings.total! / 1000).toFixed(1)}s  (timings ms: ${JSON.stringify(cluster.timings)})\n` +
        `  export KUBECONFIG=${cluster.kubeconfig}\n  ${cluster.kubectl} get nodes -o wide\n` +
        `  registry: ${cluster.registry.url}  logs: ${cluster.logDir}\n  Ctrl-C stops the cluster.\n`,
    );
    onInterrupt(async () => {
      log("stopping (Ctrl-C again kills everything at once)");
      await cluster.stop();
      const left = leftovers(cluster);
      log(left.length ? `left behind:\n  - ${left.join("\n  - ")}` : "stopped; nothing left behind");
      process.exitCode = left.length ? 1 : 0;
    });
    await new Promise(() => {});
    break;
  }
  case "down": {
    if (!existsSync(stateFilePath())) {
      log("no e2e cluster state recorded; nothing to do");
      break;
    }
    const state = JSON.parse(readFileSync(stateFilePath(), "utf8")) as { runDir: string };
    reapStaleCluster(log);
    const left = leftovers({ runDir: state.runDir, net: defaultNetwork });
    log(left.length ? `left behind:\n  - ${left.join("\n  - ")}` : "clean");
    break;
  }
  case "images": {
    const images = await buildImages({ repoRoot, log });
    for (const [name, image] of Object.entries(images) as [string, ImageSpec][]) {
      log(`${name}: ${image.layers.map((l) => `${l.name} ${l.digest.slice(7, 19)} ${(l.size / 1e6).toFixed(1)} MB`).join(" + ")}`);
    }
    log(`cache: ${join(e2eCacheDir(), "layers")}`);
    break;
  }
  case "check": {
    const missing = missingPrerequisites({ binDir: kubeBinDir(repoRoot), net: defaultNetwork, needDebootstrap: true });
    log(missing.length ? `missing:\n  - ${missing.join("\n  - ")}` : "all prerequisites present");
    process.exitCode = missing.length ? 1 : 0;
    break;
  }
  default:
    process.stderr.write("usage: node test/e2e/support/cluster-cli.ts up|down|images|check\n");
    process.exitCode = command === "help" ? 0 : 2;
}
