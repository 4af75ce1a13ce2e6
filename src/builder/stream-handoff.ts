// The hand-off between the `stream` step (runs a streamLayeredImage script: flake code, no
// Secret, no token, no layer cache) and the `push` step (has those, runs no flake code), two
// containers of one builder pod sharing a small emptyDir (issue 12, item 4). The push step
// listens on a Unix socket in that directory and takes ONE connection; the stream step connects
// and copies the script's stdout into it. Each step leaves a marker file when it exits, so the
// other one stops waiting when its peer is gone (a push that has nothing to push, a stream step
// that failed before connecting) instead of hanging until the Job's deadline.
import { existsSync } from "node:fs";
import { chmod, unlink, writeFile } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { dirname, join } from "node:path";

export const PUSH_EXITED = "push-exited";
export const STREAM_EXITED = "stream-exited";

class StreamHandoffError extends Error {
  override name = "StreamHandoffError";
}

const POLL_MS = 200;

/** Leaves the marker that this side has exited (best effort: the directory may be gone). */
export async function markExited(socketPath: string, marker: typeof PUSH_EXITED | typeof STREAM_EXITED): Promise<void> {
  await writeFile(join(dirname(socketPath), marker), "").catch(() => undefined);
}

/**
 * Push side: listens on `socketPath` (mode 0666: the stream step runs as another uid) and resolves
 * with the first connection; later ones are refused. Rejects when the stream step's exit marker
 * appears first, or on `signal`.
 */
export async function acceptStream(socketPath: string, options: { signal?: AbortSignal } = {}): Promise<Socket> {
  await unlink(socketPath).catch(() => undefined);
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o666);
  const peerGone = join(dirname(socketPath), STREAM_EXITED);
  try {
    return await new Promise<Socket>((resolve, reject) => {
      const timer = setInterval(() => {
        if (existsSync(peerGone)) {
          finish();
          reject(new StreamHandoffError("the stream step exited without streaming the image: its termination message says why"));
        }
      }, POLL_MS);
      const onAbort = () => {
        finish();
        reject(options.signal?.reason ?? new Error("aborted"));
      };
      const finish = () => {
        clearInterval(timer);
        options.signal?.removeEventListener("abort", onAbort);
        server.removeAllListeners("connection");
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      server.once("connection", (socket: Socket) => {
        finish();
        resolve(socket);
      });
    });
  } finally {
    server.close();
    await unlink(socketPath).catch(() => undefined);
  }
}

/**
 * Stream side: waits until the push step listens on `socketPath` and connects. Resolves undefined
 * when the push step exited without listening (nothing to stream, or it failed).
 */
export async function connectStream(socketPath: string, options: { signal?: AbortSignal } = {}): Promise<Socket | undefined> {
  const peerGone = join(dirname(socketPath), PUSH_EXITED);
  for (;;) {
    options.signal?.throwIfAborted();
    if (existsSync(socketPath)) {
      const socket = await new Promise<Socket | undefined>((resolve) => {
        const s = connect(socketPath);
        s.once("connect", () => resolve(s));
        s.once("error", () => resolve(undefined));
      });
      if (socket) return socket;
    }
    if (existsSync(peerGone)) return undefined;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
