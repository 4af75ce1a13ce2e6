// A git-over-ssh server for tests of private git+ssh flake sources: the Debian sshd (package
// openssh-server, installed by scripts/setup.sh) on a free port of `address`, with its own host
// key, one authorized client key and no passwords. Repositories are served from their absolute
// paths: `git+ssh://<user>@<address>:<port><root>/<name>.git`.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { userInfo } from "node:os";
import { run } from "./process.ts";

export interface SshGitServer {
  /** `ssh://user@address:port` (append the repository's absolute path). */
  baseUrl: string;
  /** The client's private key (OpenSSH format, mode 0600) and its known_hosts line for this server. */
  clientKeyFile: string;
  knownHosts: string;
  stop(): Promise<void>;
}

async function freePort(address: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, address, () => resolve());
  });
  const a = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof a === "object" && a ? a.port : 0;
}

async function accepts(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: address, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

export async function startSshGitServer(opts: { dir: string; address?: string; logFile: string }): Promise<SshGitServer> {
  const address = opts.address ?? "127.0.0.1";
  const sshd = "/usr/sbin/sshd";
  await run(sshd, ["-V"]).catch((e: unknown) => {
    // sshd -V prints its version on stderr and exits 1 on some releases: only a missing binary matters.
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new Error(`${sshd} not found: apt-get install openssh-server, or run scripts/setup.sh`);
  });
  await mkdir(opts.dir, { recursive: true });
  // Privilege separation directory sshd insists on.
  await mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  const hostKey = join(opts.dir, "host_ed25519");
  const clientKey = join(opts.dir, "client_ed25519");
  for (const key of [hostKey, clientKey]) await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "nio-test", "-f", key]);
  const authorized = join(opts.dir, "authorized_keys");
  await writeFile(authorized, await readFile(`${clientKey}.pub`), { mode: 0o600 });
  await chmod(clientKey, 0o600);
  const port = await freePort(address);
  const config = join(opts.dir, "sshd_config");
  await writeFile(
    config,
    [
      `ListenAddress ${address}:${port}`,
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorized}`,
      `PidFile ${join(opts.dir, "sshd.pid")}`,
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "PermitRootLogin prohibit-password",
      "X11Forwarding no",
      "AllowTcpForwarding no",
      "PrintMotd no",
      "",
    ].join("\n"),
  );
  const log = createWriteStream(opts.logFile, { flags: "a" });
  const child: ChildProcess = spawn(sshd, ["-D", "-e", "-f", config], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let i = 0; i < 200 && !(await accepts(address, port)); i++) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}; see ${opts.logFile}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const hostPub = (await readFile(`${hostKey}.pub`, "utf8")).trim().split(/\s+/).slice(0, 2).join(" ");
  return {
    baseUrl: `ssh://${userInfo().username}@${address}:${port}`,
    clientKeyFile: clientKey,
    knownHosts: `[${address}]:${port} ${hostPub}\n`,
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
      log.end();
    },
  };
}
