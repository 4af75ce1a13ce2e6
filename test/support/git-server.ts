// A smart-HTTP git server for the test bed: a tiny node:http server in the test runner's process
// that runs `git http-backend` as a CGI program per request (fetch and push, protocol v0/v2,
// gzip request bodies). Repositories are bare repos `<root>/<name>.git`, served at
// `<baseUrl>/<name>.git`.
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import { run } from "./process.ts";

export interface GitServerOptions {
  root: string;
  logFile: string;
  /** A private server: every request without these basic-auth credentials gets 401. */
  basicAuth?: { user: string; password: string };
  /** Serve HTTPS with this certificate (PEM files) instead of plain HTTP. */
  tls?: { certFile: string; keyFile: string };
}

export interface GitServer {
  baseUrl: string;
  root: string;
  stop(): Promise<void>;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

export async function startGitServer(opts: GitServerOptions): Promise<GitServer> {
  await run("git", ["--version"]).catch((e: unknown) => {
    throw new Error(`git not found: apt-get install git, or run scripts/setup.sh (${(e as Error).message})`);
  });
  await mkdir(opts.root, { recursive: true });
  const log = createWriteStream(opts.logFile, { flags: "a" });
  const write = (line: string) => log.write(`${new Date().toISOString()} ${line}\n`);

  const expected = opts.basicAuth ? `Basic ${Buffer.from(`${opts.basicAuth.user}:${opts.basicAuth.password}`).toString("base64")}` : undefined;
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (expected !== undefined && header(req, "authorization") !== expected) {
      write(`${req.method} ${req.url} -> 401 (${header(req, "authorization") === undefined ? "no" : "wrong"} credentials)`);
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="private"' });
      res.end("authentication required\n");
      return;
    }
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      GIT_PROJECT_ROOT: opts.root,
      GIT_HTTP_EXPORT_ALL: "1",
      // http-backend enables receive-pack (push) only for an authenticated user.
      REMOTE_USER: "testbed",
      REMOTE_ADDR: req.socket.remoteAddress ?? "127.0.0.1",
      GATEWAY_INTERFACE: "CGI/1.1",
      SERVER_PROTOCOL: `HTTP/${req.httpVersion}`,
      REQUEST_METHOD: req.method ?? "GET",
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.replace(/^\?/, ""),
      CONTENT_TYPE: header(req, "content-type") ?? "",
      GIT_HTTP_MAX_REQUEST_BUFFER: "1000M",
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
    };
    const len = header(req, "content-length");
    if (len !== undefined) env.CONTENT_LENGTH = len;
    const enc = header(req, "content-encoding");
    if (enc) env.HTTP_CONTENT_ENCODING = enc;
    const proto = header(req, "git-protocol");
    if (proto) env.HTTP_GIT_PROTOCOL = proto;

    const child = spawn("git", ["http-backend"], { env, stdio: ["pipe", "pipe", "pipe"] });
    req.pipe(child.stdin);
    child.stdin.on("error", () => {}); // backend may exit before reading everything
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    let head = Buffer.alloc(0);
    let headersDone = false;
    let status = 200;
    child.stdout.on("data", (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const crlf = head.indexOf("\r\n\r\n");
      const lf = head.indexOf("\n\n");
      const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf : lf;
      if (end < 0) return;
      const sep = end === crlf ? 4 : 2;
      const lines = head.subarray(0, end).toString("latin1").split(/\r?\n/);
      for (const line of lines) {
        const i = line.indexOf(":");
        if (i < 0) continue;
        const name = line.slice(0, i).trim();
        const value = line.slice(i + 1).trim();
        if (name.toLowerCase() === "status") status = Number.parseInt(value, 10) || 500;
        else res.setHeader(name, value);
      }
      res.statusCode = status;
      headersDone = true;
      const rest = head.subarray(end + sep);
      if (rest.length) res.write(rest);
    });
    child.on("error", (e) => {
      write(`${req.method} ${req.url} -> spawn error ${e.message}`);
      if (!res.headersSent) res.statusCode = 500;
      res.end();
    });
    child.on("close", (code) => {
      write(`${req.method} ${req.url} -> ${headersDone ? status : 502} (exit ${code})${stderr ? ` ${stderr.trim()}` : ""}`);
      if (!headersDone) {
        res.statusCode = 502;
        res.end(stderr);
      } else res.end();
    });
  };

  const server = opts.tls ? createTlsServer({ cert: await readFile(opts.tls.certFile), key: await readFile(opts.tls.keyFile) }, handle) : createServer(handle);
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      resolve(typeof a === "object" && a ? a.port : 0);
    });
  });
  const baseUrl = `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`;
  write(`serving ${opts.root} at ${baseUrl}`);
  return {
    baseUrl,
    root: opts.root,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => log.end(() => resolve()));
      }),
  };
}
