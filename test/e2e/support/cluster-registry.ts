// The e2e cluster's registry: Debian's docker-registry (distribution 2.8) over plain HTTP on the
// node IP, so the kubelet (containerd, on the host) and the builder pods' push step reach it at
// the same address, which is the address in every image reference.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { freePort, httpGet, startDaemon, type Daemon } from "../../support/process.ts";

export interface ClusterRegistry {
  /** host:port as in image references. */
  host: string;
  url: string;
  rootDir: string;
  daemon: Daemon;
}

export async function startClusterRegistry(opts: { dir: string; address: string; logFile: string; signal?: AbortSignal }): Promise<ClusterRegistry> {
  const rootDir = join(opts.dir, "storage");
  await mkdir(rootDir, { recursive: true });
  const port = await freePort();
  const host = `${opts.address}:${port}`;
  const config = {
    version: 0.1,
    log: { level: "info", formatter: "text", fields: { service: "registry" } },
    storage: { filesystem: { rootdirectory: rootDir }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: host, secret: randomBytes(16).toString("hex"), draintimeout: "1s" },
    health: { storagedriver: { enabled: false } },
  };
  const configFile = join(opts.dir, "config.yml");
  await writeFile(configFile, stringify(config));
  const url = `http://${host}`;
  const daemon = await startDaemon({
    name: "registry",
    command: "docker-registry",
    args: ["serve", configFile],
    logFile: opts.logFile,
    signal: opts.signal,
    missingHint: "apt-get install docker-registry, or run scripts/setup.sh",
    timeoutMs: 20_000,
    ready: async () => (await httpGet(`${url}/v2/`, { timeoutMs: 1000 })).status === 200,
  });
  return { host, url, rootDir, daemon };
}
