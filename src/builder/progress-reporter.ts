// Progress of a build and push, for people and for log collectors:
//   - on a terminal (stderr is a TTY): ONE line, rewritten in place, with the phase, the bytes
//     and the elapsed time, e.g. `[  12.4s] push: layers 3/12, 45.1 MB / 300.2 MB`;
//   - otherwise: structured JSON log lines (pino), on every phase change and at most every few
//     seconds in between.
import type { Logger } from "../log/logger.ts";
import type { NixProgress } from "../nix/nix-log.ts";
import type { PushProgress } from "../image/push-closure.ts";

export interface ProgressSink {
  /** A new phase (lock, build, closure, push, ...). */
  phase(name: string, detail?: string): void;
  nix(progress: NixProgress): void;
  push(progress: PushProgress): void;
  /** Clears the terminal line (before printing the result or an error). */
  done(): void;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

export interface ProgressReporterOptions {
  stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  logger: Logger;
  /** Milliseconds; injectable for tests. */
  now?: () => number;
  /** Minimum time between two log lines of the same phase (non-TTY). Default 5 s. */
  logIntervalMs?: number;
  /** Minimum time between two redraws (TTY). Default 100 ms. */
  redrawIntervalMs?: number;
}

/** PURE: the text of the progress line. */
export function describeProgress(phase: string, detail: string, elapsedMs: number): string {
  return `[${(elapsedMs / 1000).toFixed(1).padStart(6)}s] ${phase}${detail ? `: ${detail}` : ""}`;
}

function nixDetail(p: NixProgress): string {
  const parts: string[] = [p.phase];
  if (p.builds.expected > 0) parts.push(`${p.builds.done}/${p.builds.expected} built`);
  if (p.substitutions.expected > 0) parts.push(`${p.substitutions.done}/${p.substitutions.expected} substituted`);
  if (p.downloadedBytes > 0) parts.push(`${formatBytes(p.downloadedBytes)} downloaded`);
  if (p.runningBuilds.length > 0) parts.push(`running ${p.runningBuilds.slice(0, 3).join(", ")}${p.runningBuilds.length > 3 ? ", …" : ""}`);
  return parts.join(", ");
}

function pushDetail(p: PushProgress, layersDone: number, layerCount: number): string {
  const parts: string[] = [p.phase];
  if (layerCount > 0) parts.push(`${layersDone}/${layerCount} layers`);
  parts.push(p.bytesTotal > 0 ? `${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}` : formatBytes(p.bytesDone));
  return parts.join(", ");
}

export class ProgressReporter implements ProgressSink {
  readonly #stream: ProgressReporterOptions["stream"];
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #tty: boolean;
  readonly #logIntervalMs: number;
  readonly #redrawIntervalMs: number;
  readonly #start: number;
  #phase = "";
  #detail = "";
  #lastDraw = 0;
  #lastLog = 0;
  #drawn = false;
  #layersDone = 0;
  #layerCount = 0;
  #fields: Record<string, unknown> = {};

  constructor(options: ProgressReporterOptions) {
    this.#stream = options.stream;
    this.#log = options.logger;
    this.#now = options.now ?? (() => performance.now());
    this.#tty = options.stream.isTTY === true;
    this.#logIntervalMs = options.logIntervalMs ?? 5000;
    this.#redrawIntervalMs = options.redrawIntervalMs ?? 100;
    this.#start = this.#now();
  }

  get tty(): boolean {
    return this.#tty;
  }

  phase(name: string, detail = ""): void {
    this.#phase = name;
    this.#detail = detail;
    this.#fields = {};
    this.#emit(true);
  }

  nix(p: NixProgress): void {
    this.#detail = nixDetail(p);
    this.#fields = {
      nixPhase: p.phase,
      built: p.builds.done,
      toBuild: p.builds.expected,
      downloadedBytes: p.downloadedBytes,
      running: p.runningBuilds.slice(0, 5),
    };
    this.#emit(false);
  }

  push(p: PushProgress): void {
    if (p.layer) {
      this.#layerCount = p.layer.count;
      if (p.layer.status === "pushed" || p.layer.status === "skipped" || p.layer.status === "mounted") this.#layersDone++;
    }
    this.#detail = pushDetail(p, this.#layersDone, this.#layerCount);
    this.#fields = { pushPhase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, layersDone: this.#layersDone, layers: this.#layerCount };
    this.#emit(p.phase === "done");
  }

  done(): void {
    if (this.#tty && this.#drawn) this.#stream.write("\r\u001b[2K");
    this.#drawn = false;
  }

  #emit(force: boolean): void {
    const now = this.#now();
    const elapsed = now - this.#start;
    if (this.#tty) {
      if (!force && now - this.#lastDraw < this.#redrawIntervalMs) return;
      this.#lastDraw = now;
      let line = describeProgress(this.#phase, this.#detail, elapsed);
      const columns = this.#stream.columns;
      const width = columns !== undefined && columns >= 20 ? columns : 120;
      if (line.length > width - 1) line = `${line.slice(0, Math.max(10, width - 2))}…`;
      this.#stream.write(`\r\u001b[2K${line}`);
      this.#drawn = true;
      return;
    }
    if (!force && now - this.#lastLog < this.#logIntervalMs) return;
    this.#lastLog = now;
    this.#log.info(
      { phase: this.#phase, elapsedSeconds: Math.round(elapsed / 100) / 10, ...this.#fields },
      this.#detail ? `${this.#phase}: ${this.#detail}` : this.#phase,
    );
  }
}

/** A sink that reports nothing (library use, tests). */
export const silentProgress: ProgressSink = {
  phase: () => undefined,
  nix: () => undefined,
  push: () => undefined,
  done: () => undefined,
};
