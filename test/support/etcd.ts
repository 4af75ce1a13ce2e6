// etcd for the test bed: Debian's etcd-server (3.4) on loopback, no fsync, data in a temp dir.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { freePort, httpGet, startDaemon, type Daemon } from "./process.ts";

export interface EtcdOptions {
  /** Directory for the data dir. */
  stateDir: string;
  logFile: string;
  /** etcd binary; default `etcd` from PATH (Debian package etcd-server). */
  binary?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Etcd {
  url: string;
  dataDir: string;
  daemon: Daemon;
}

export async function startEtcd(opts: EtcdOptions): Promise<Etcd> {
  const [clientPort, peerPort] = await Promise.all([freePort(), freePort()]);
  const dataDir = join(opts.stateDir, `etcd-${clientPort}`);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const url = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const binary = opts.binary ?? "etcd";
  const daemon = await startDaemon({
    name: "etcd",
    command: binary,
    args: [
      "--name=testbed",
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=testbed=${peer}`,
      "--initial-cluster-state=new",
      "--unsafe-no-fsync",
      "--quota-backend-bytes=2147483648",
      "--snapshot-count=100000",
      "--logger=zap",
      "--log-level=warn",
    ],
    logFile: opts.logFile,
    signal: opts.signal,
    timeoutMs: opts.timeoutMs ?? 20_000,
    missingHint: "apt-get install etcd-server, or run scripts/setup.sh",
    ready: async () => {
      const r = await httpGet(`${url}/health`, { timeoutMs: 1000 });
      return r.status === 200 && /"health"\s*:\s*"true"/.test(r.body);
    },
  });
  return { url, dataDir, daemon };
}
