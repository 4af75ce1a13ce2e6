// The builder Job's `stream` step (issue 12, item 4): when the build made a streamLayeredImage
// script, run it here — a container with the store read-only, no Secret, no token and no layer
// cache, as an unprivileged uid — and copy its stdout to the push step through the socket of
// stream-handoff.ts. For every other format it has nothing to do and exits at once.
import { spawn } from "node:child_process";
import { pipeline } from "node:stream/promises";
import type { Logger } from "../log/logger.ts";
import { connectStream } from "./stream-handoff.ts";
import { readStepFiles } from "./step-files.ts";

class StreamStepError extends Error {
  override name = "StreamStepError";
}

export interface StreamStepOptions {
  /** The build step's directory. */
  from: string;
  socket: string;
  /** The script's whole environment (default PATH only). */
  env?: Record<string, string>;
  signal?: AbortSignal;
  logger?: Logger;
}

export interface StreamStepOutput {
  streamed: boolean;
  /** Why nothing was streamed. */
  reason?: string;
  bytes?: number;
}

export async function runStreamStep(options: StreamStepOptions): Promise<StreamStepOutput> {
  const { result } = await readStepFiles(options.from);
  if (result.format !== "stream-layered") return { streamed: false, reason: `the build made a ${result.format}, not a streamLayeredImage script` };
  const socket = await connectStream(options.socket, options.signal ? { signal: options.signal } : {});
  if (!socket) return { streamed: false, reason: "the push step exited without asking for the image (nothing to push, or it failed)" };

  options.logger?.info({ script: result.outPath }, "running the streamLayeredImage script");
  const child = spawn(result.outPath, [], { env: options.env ?? { PATH: "/usr/bin:/bin" }, cwd: "/", stdio: ["ignore", "pipe", "pipe"] });
  const tail: string[] = [];
  let rest = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => {
    rest += s;
    const lines = rest.split("\n");
    rest = lines.pop() ?? "";
    for (const l of lines) {
      tail.push(l.slice(0, 500));
      if (tail.length > 20) tail.shift();
    }
    if (rest.length > 4096) rest = rest.slice(-4096);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once("error", (error) => resolve({ code: null, signal: null, error }));
    child.once("close", (code, sig) => resolve({ code, signal: sig }));
  });
  const onAbort = () => child.kill("SIGKILL");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  let bytes = 0;
  child.stdout.on("data", (b: Buffer) => (bytes += b.length));
  let copyError: Error | undefined;
  try {
    await pipeline(child.stdout, socket);
  } catch (e) {
    copyError = e as Error;
    child.kill("SIGKILL");
  }
  const r = await exited;
  options.signal?.removeEventListener("abort", onAbort);
  if (r.error || r.code !== 0) {
    const why = r.error ? r.error.message : r.signal ? `signal ${r.signal}` : `exit code ${r.code}`;
    throw new StreamStepError(`the streamLayeredImage script ${result.outPath} failed (${why})${tail.length ? `; its last output:\n${tail.join("\n")}` : ""}`);
  }
  if (copyError)
    throw new StreamStepError(`the push step stopped reading the image after ${bytes} bytes (${copyError.message}): its termination message says why`);
  return { streamed: true, bytes };
}
