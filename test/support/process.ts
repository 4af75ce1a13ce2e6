// Generic daemon handling for the test bed: spawn a process in its own process group with its
// output in a log file, wait until a readiness probe passes, stop it (and everything it spawned)
// on teardown, and never leak it: every live daemon is killed synchronously when this process
// exits or receives SIGINT/SIGTERM/SIGHUP. Also: free-port allocation on 127.0.0.1, a log tail
// for error messages, and a small HTTP(S) GET helper for probes.
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync, statSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";

export interface Daemon {
  readonly name: string;
  readonly pid: number;
  readonly command: string;
  readonly logFile: string;
  /** Resolves with the exit code or signal name once the process has exited. */
  readonly exited: Promise<string>;
  /** SIGTERM to the process group, SIGKILL after graceMs; resolves once the leader exited. */
  stop(graceMs?: number): Promise<void>;
}

export interface DaemonOptions {
  name: string;
  command: string;
  args: string[];
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Resolves true when the daemon is ready; thrown errors count as "not yet". */
  ready: () => Promise<boolean>;
  timeoutMs?: number;
  intervalMs?: number;
  /** Aborts the readiness wait (the daemon is stopped and start rejects). */
  signal?: AbortSignal;
  /** How to get the binary when it is missing, e.g. "apt-get install etcd-server, or run scripts/setup.sh". */
  missingHint?: string;
}

export interface LiveDaemon {
  pid: number;
  name: string;
  command: string;
}

const live = new Set<LiveDaemon>();

/** Daemons started by this process and not stopped yet. */
export function liveDaemons(): LiveDaemon[] {
  return [...live];
}

const liveListeners = new Set<() => void>();

/** Calls `fn` whenever a daemon is spawned or has stopped (e.g. to record pids for a watchdog). */
export function onLiveDaemonsChanged(fn: () => void): () => void {
  liveListeners.add(fn);
  return () => liveListeners.delete(fn);
}

function liveChanged(): void {
  for (const fn of liveListeners) {
    try {
      fn();
    } catch {
      // a listener's problem must not break start/stop
    }
  }
}
let hooksInstalled = false;

function killGroupSync(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

const exitCleanups = new Set<() => void>();

/** Runs `fn` (synchronously) after the daemons were killed when this process exits or is interrupted. */
export function addExitCleanup(fn: () => void): () => void {
  installHooks();
  exitCleanups.add(fn);
  return () => exitCleanups.delete(fn);
}

/** Kills every daemon still running (SIGKILL to its process group). Safe to call any time. */
export function killAllDaemonsSync(): void {
  for (const d of live) killGroupSync(d.pid, "SIGKILL");
  live.clear();
  for (const fn of exitCleanups) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
  exitCleanups.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", killAllDaemonsSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      killAllDaemonsSync();
      // Keep the default behaviour (terminate) when nobody else handles the signal; vitest
      // handles SIGINT/SIGTERM itself and exits.
      if (process.listenerCount(sig) <= 1) process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The last `lines` lines of a log file, for error messages. */
function logTail(file: string, lines = 30): string {
  try {
    const size = statSync(file).size;
    const text = readFileSync(file, "utf8").slice(Math.max(0, size - 64 * 1024));
    const all = text.trimEnd().split("\n");
    return all.slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export class StartError extends Error {
  override name = "StartError";
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `signal ${signal}` : `exit code ${code}`;
}

/** Spawns a daemon and waits until `ready()` passes. On failure the error includes the log tail. */
export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  installHooks();
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const intervalMs = opts.intervalMs ?? 100;
  const fd = openSync(opts.logFile, "a");
  let child: ChildProcess;
  try {
    child = spawn(opts.command, opts.args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["ignore", fd, fd],
      detached: true, // own process group, so stop() reaches grandchildren too
    });
  } finally {
    closeSync(fd);
  }
  const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
  const exited = new Promise<string>((resolve) => child.once("exit", (code, signal) => resolve(describeExit(code, signal))));
  // spawn() reports ENOENT asynchronously; give it a tick.
  const early = await Promise.race([spawnError, sleep(0).then(() => undefined)]);
  if (early || child.pid === undefined) {
    const enoent = (early as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
    throw new StartError(
      enoent
        ? `${opts.name} not found (${opts.command})${opts.missingHint ? `: ${opts.missingHint}` : ""}`
        : `${opts.name}: cannot run ${opts.command}: ${early?.message ?? "no pid"}`,
    );
  }
  const pid = child.pid;
  const entry: LiveDaemon = { pid, name: opts.name, command: opts.command };
  live.add(entry);
  liveChanged();
  let done = false;
  void exited.then(() => {
    done = true;
  });

  const stop = async (graceMs = 3000): Promise<void> => {
    if (!done) {
      killGroupSync(pid, "SIGTERM");
      const t = setTimeout(() => killGroupSync(pid, "SIGKILL"), graceMs);
      await exited;
      clearTimeout(t);
    }
    // Children that ignored SIGTERM or outlived the leader.
    killGroupSync(pid, "SIGKILL");
    if (live.delete(entry)) liveChanged();
  };
  const daemon: Daemon = { name: opts.name, pid, command: opts.command, logFile: opts.logFile, exited, stop };

  const started = Date.now();
  let lastError = "";
  for (;;) {
    if (done) {
      const how = await exited;
      if (live.delete(entry)) liveChanged();
      throw new StartError(`${opts.name} exited during start-up (${how}). Last lines of ${opts.logFile}:\n${logTail(opts.logFile)}`);
    }
    if (opts.signal?.aborted) {
      await stop(500);
      throw new StartError(`${opts.name}: start aborted`);
    }
    try {
      if (await opts.ready()) return daemon;
    } catch (e) {
      lastError = e instanceof Error ? e.message : String(e);
    }
    if (Date.now() - started > timeoutMs) {
      await stop(500);
      throw new StartError(
        `${opts.name} not ready after ${Math.round(timeoutMs / 1000)}s` +
          (lastError ? ` (last probe error: ${lastError})` : "") +
          `. Last lines of ${opts.logFile}:\n${logTail(opts.logFile)}`,
      );
    }
    await sleep(intervalMs);
  }
}

const handedOut = new Set<number>();

/** A port on 127.0.0.1 that was free a moment ago and was not handed out before in this process. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.unref();
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => {
        const addr = srv.address();
        const p = typeof addr === "object" && addr ? addr.port : 0;
        srv.close(() => resolve(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** True when a start failure looks like a lost race for a port (worth a retry with new ports). */
function isPortConflict(e: unknown): boolean {
  return e instanceof Error && /address already in use|EADDRINUSE/i.test(e.message);
}

/** Runs `start` again with fresh ports when it failed because a port was taken meanwhile. */
export async function retryOnPortConflict<T>(start: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await start();
    } catch (e) {
      if (i >= attempts || !isPortConflict(e)) throw e;
    }
  }
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface GetOptions {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  headers?: Record<string, string>;
  rejectUnauthorized?: boolean;
  timeoutMs?: number;
}

/** A GET with a timeout; any HTTP status resolves, network errors reject. */
export function httpGet(url: string, opts: GetOptions = {}): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const common = { method: "GET", headers: opts.headers, timeout: opts.timeoutMs ?? 2000 };
    const req =
      u.protocol === "https:"
        ? httpsRequest(u, {
            ...common,
            ca: opts.ca,
            cert: opts.cert,
            key: opts.key,
            rejectUnauthorized: opts.rejectUnauthorized ?? true,
            agent: false,
          })
        : httpRequest(u, { ...common, agent: false });
    req.once("timeout", () => req.destroy(new Error(`timeout after ${common.timeout}ms`)));
    req.once("error", reject);
    req.once("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.once("error", reject);
      res.once("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.end();
  });
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a short-lived command; rejects with its stderr when it fails. */
export function run(
  command: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: unknown };
          const what = e.code === "ENOENT" ? "not found" : e.message.split("\n")[0];
          reject(new Error(`${command} ${args.join(" ")} failed (${what})${stderr ? `:\n${stderr.trim()}` : ""}`));
        } else resolve({ stdout, stderr });
      },
    );
    // Always close stdin, so a command that reads it never waits forever. A command that exits
    // before reading it gives EPIPE here; its exit status already says whether it worked.
    child.stdin?.on("error", () => {});
    child.stdin?.end(opts.input ?? "");
  });
}
