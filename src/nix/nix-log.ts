// PURE: parses what Nix writes to stderr with `--log-format internal-json` into progress and
// error information.
//
// Each structured line is `@nix <json>` with `action` = "start" | "stop" | "result" | "msg".
// Lines without the prefix (git's own output while fetching, a builder writing straight to the
// terminal) are kept as plain text. Seen with Nix 2.8.0 (and unchanged in later releases):
//
//   @nix {"action":"start","id":..,"level":0,"text":"","type":102}                  realise
//   @nix {"action":"start","id":..,"type":104}                                      builds
//   @nix {"action":"result","fields":[done,expected,running,failed],"id":..,"type":105}   progress
//   @nix {"action":"result","fields":[101,bytes],"id":..,"type":106}               set-expected
//   @nix {"action":"start","fields":["/nix/store/..drv","",1,1],"type":105,"text":"building '..'"}
//   @nix {"action":"result","fields":["a log line"],"id":<build>,"type":101}      build log line
//   @nix {"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m ...","raw_msg":"..."}
//
// With the internal-json format the error message of a failed build does NOT repeat the builder's
// last log lines (the human format does), so they are kept here per derivation.

/** Nix's ActivityType numbers (src/libutil/logging.hh). */
const ActivityType = {
  Unknown: 0,
  CopyPath: 100,
  FileTransfer: 101,
  Realise: 102,
  CopyPaths: 103,
  Builds: 104,
  Build: 105,
  OptimiseStore: 106,
  VerifyPaths: 107,
  Substitute: 108,
  QueryPathInfo: 109,
  PostBuildHook: 110,
  BuildWaiting: 111,
} as const;

/** Nix's ResultType numbers. */
const ResultType = {
  FileLinked: 100,
  BuildLogLine: 101,
  UntrustedPath: 102,
  CorruptedPath: 103,
  SetPhase: 104,
  Progress: 105,
  SetExpected: 106,
  PostBuildLogLine: 107,
} as const;

type NixPhase = "evaluating" | "fetching" | "realising" | "substituting" | "building";

export interface NixCounter {
  done: number;
  expected: number;
  running: number;
  failed: number;
}

/** A snapshot of what Nix is doing; every field is cumulative for one command. */
export interface NixProgress {
  phase: NixPhase;
  /** Derivations built / to build (Nix's own "[1/3 built]"). */
  builds: NixCounter;
  /** Store paths copied from substituters / to copy. */
  substitutions: NixCounter;
  /** Bytes downloaded by file transfers (substituter NARs, tarball flake sources). */
  downloadedBytes: number;
  /** Bytes Nix expects to download in total (0 when unknown). */
  expectedDownloadBytes: number;
  /** Names (`<name>` of `/nix/store/<hash>-<name>.drv`) of derivations being built now, sorted. */
  runningBuilds: string[];
  /** The last build phase a builder announced (stdenv's `unpackPhase`, `buildPhase`, ...). */
  buildPhase?: string;
  /** The last human-readable line: an activity text, a log line, or a message. */
  lastLine?: string;
}

export type NixLogEvent =
  | { kind: "progress" }
  | { kind: "build-log"; drvPath: string | undefined; line: string }
  | { kind: "message"; level: number; text: string }
  | { kind: "text"; line: string }
  | { kind: "ignored" };

interface Activity {
  type: number;
  text: string;
  drvPath?: string;
  parent: number;
}

// Matches CSI sequences such as ESC[31;1m, and OSC sequences terminated by BEL or ESC\.
// eslint-disable-next-line no-control-regex
const ansiPattern = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)/g;

/** Removes terminal colour and cursor escapes (Nix adds them even in JSON messages). */
export function stripAnsi(text: string): string {
  return text.replace(ansiPattern, "");
}

/** `/nix/store/<32 chars>-hello-1.0.drv` -> `hello-1.0`. */
export function drvName(drvPath: string): string {
  const base = drvPath.slice(drvPath.lastIndexOf("/") + 1);
  const name = base.replace(/^[0-9a-z]{32}-/, "");
  return name.endsWith(".drv") ? name.slice(0, -4) : name;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0;
}

function emptyCounter(): NixCounter {
  return { done: 0, expected: 0, running: 0, failed: 0 };
}

function counterFrom(fields: unknown[]): NixCounter {
  return { done: num(fields[0]), expected: num(fields[1]), running: num(fields[2]), failed: num(fields[3]) };
}

export interface NixLogParserOptions {
  /** Log lines kept per derivation (for the error message of a failed build). Default 25. */
  logLinesPerBuild?: number;
  /** Derivations whose logs are kept (the most recent). Default 16. */
  buildsKept?: number;
  /** Plain text lines kept. Default 40. */
  textLinesKept?: number;
}

/**
 * Feed it stderr lines, one at a time; read `progress()`, `errors()` and the kept logs at any time.
 * Never throws on malformed input: a line that is not valid internal-json is kept as text.
 */
export class NixLogParser {
  private readonly activities = new Map<number, Activity>();
  private readonly buildLogs = new Map<string, string[]>();
  private readonly text: string[] = [];
  private readonly errorMessages: string[] = [];
  private readonly warnings: string[] = [];
  private readonly transfers = new Map<number, number>();
  private readonly limits: Required<NixLogParserOptions>;
  private builds = emptyCounter();
  private substitutions = emptyCounter();
  private expectedDownload = 0;
  private finishedTransferBytes = 0;
  private realiseStarted = false;
  private buildPhase: string | undefined;
  private lastLine: string | undefined;

  constructor(options: NixLogParserOptions = {}) {
    this.limits = {
      logLinesPerBuild: options.logLinesPerBuild ?? 25,
      buildsKept: options.buildsKept ?? 16,
      textLinesKept: options.textLinesKept ?? 40,
    };
  }

  /** Parses one stderr line (without its newline). */
  feed(rawLine: string): NixLogEvent {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (!line.startsWith("@nix ")) {
      const plain = stripAnsi(line);
      if (plain.trim() === "") return { kind: "ignored" };
      this.keepText(plain);
      this.lastLine = plain;
      return { kind: "text", line: plain };
    }
    let json: unknown;
    try {
      json = JSON.parse(line.slice(5));
    } catch {
      this.keepText(stripAnsi(line));
      return { kind: "text", line: stripAnsi(line) };
    }
    if (!isRecord(json)) return { kind: "ignored" };
    switch (json.action) {
      case "start":
        return this.start(json);
      case "stop":
        return this.stop(json);
      case "result":
        return this.result(json);
      case "msg":
        return this.message(json);
      default:
        return { kind: "ignored" };
    }
  }

  private keepText(line: string): void {
    this.text.push(line);
    if (this.text.length > this.limits.textLinesKept) this.text.shift();
  }

  private start(json: Record<string, unknown>): NixLogEvent {
    const id = num(json.id);
    const type = num(json.type);
    const fields = Array.isArray(json.fields) ? json.fields : [];
    const text = typeof json.text === "string" ? stripAnsi(json.text) : "";
    const activity: Activity = { type, text, parent: num(json.parent) };
    if (type === ActivityType.Build && typeof fields[0] === "string") {
      activity.drvPath = fields[0];
      // A rebuild of the same derivation starts with a fresh log.
      this.buildLogs.delete(fields[0]);
      this.touchBuildLog(fields[0]);
    }
    if (type === ActivityType.Realise) this.realiseStarted = true;
    if (type === ActivityType.FileTransfer) this.transfers.set(id, 0);
    this.activities.set(id, activity);
    if (text !== "") this.lastLine = text;
    return { kind: "progress" };
  }

  private stop(json: Record<string, unknown>): NixLogEvent {
    const id = num(json.id);
    const activity = this.activities.get(id);
    this.activities.delete(id);
    if (activity?.type === ActivityType.FileTransfer) {
      this.finishedTransferBytes += this.transfers.get(id) ?? 0;
      this.transfers.delete(id);
    }
    return { kind: "progress" };
  }

  private result(json: Record<string, unknown>): NixLogEvent {
    const id = num(json.id);
    const type = num(json.type);
    const fields = Array.isArray(json.fields) ? json.fields : [];
    const activity = this.activities.get(id);
    switch (type) {
      case ResultType.BuildLogLine:
      case ResultType.PostBuildLogLine: {
        const line = stripAnsi(typeof fields[0] === "string" ? fields[0] : "");
        const drvPath = this.drvOf(id);
        if (drvPath !== undefined) {
          const log = this.touchBuildLog(drvPath);
          log.push(line);
          if (log.length > this.limits.logLinesPerBuild) log.shift();
        }
        if (line.trim() !== "") this.lastLine = line;
        return { kind: "build-log", drvPath, line };
      }
      case ResultType.SetPhase:
        if (typeof fields[0] === "string") this.buildPhase = fields[0];
        return { kind: "progress" };
      case ResultType.Progress:
        if (activity?.type === ActivityType.Builds) this.builds = counterFrom(fields);
        else if (activity?.type === ActivityType.CopyPaths) this.substitutions = counterFrom(fields);
        else if (activity?.type === ActivityType.FileTransfer) this.transfers.set(id, num(fields[0]));
        return { kind: "progress" };
      case ResultType.SetExpected:
        if (num(fields[0]) === ActivityType.FileTransfer) this.expectedDownload = num(fields[1]);
        return { kind: "progress" };
      default:
        return { kind: "ignored" };
    }
  }

  private message(json: Record<string, unknown>): NixLogEvent {
    const level = typeof json.level === "number" ? json.level : 3;
    const raw = typeof json.msg === "string" ? json.msg : "";
    const text = stripAnsi(raw);
    if (level === 0) this.errorMessages.push(text.replace(/^error:\s*/, ""));
    else if (level === 1) this.warnings.push(text.replace(/^warning:\s*/, ""));
    if (text.trim() !== "" && level <= 3) this.lastLine = text;
    return { kind: "message", level, text };
  }

  /** The build activity an id belongs to: the activity itself or its nearest Build ancestor. */
  private drvOf(id: number): string | undefined {
    let current = this.activities.get(id);
    for (let depth = 0; current !== undefined && depth < 32; depth++) {
      if (current.drvPath !== undefined) return current.drvPath;
      current = current.parent ? this.activities.get(current.parent) : undefined;
    }
    return undefined;
  }

  private touchBuildLog(drvPath: string): string[] {
    let log = this.buildLogs.get(drvPath);
    if (log === undefined) {
      log = [];
    } else {
      this.buildLogs.delete(drvPath);
    }
    this.buildLogs.set(drvPath, log); // re-insert: Map order is recency
    while (this.buildLogs.size > this.limits.buildsKept) {
      const oldest = this.buildLogs.keys().next().value;
      if (oldest === undefined) break;
      this.buildLogs.delete(oldest);
    }
    return log;
  }

  progress(): NixProgress {
    const running: string[] = [];
    let substituting = false;
    let fetching = false;
    for (const a of this.activities.values()) {
      if (a.type === ActivityType.Build && a.drvPath !== undefined) running.push(drvName(a.drvPath));
      else if (a.type === ActivityType.Substitute || a.type === ActivityType.CopyPath) substituting = true;
      else if (a.type === ActivityType.FileTransfer || (a.type === ActivityType.Unknown && /^fetching\b/i.test(a.text))) fetching = true;
    }
    running.sort();
    let phase: NixPhase;
    if (running.length > 0) phase = "building";
    else if (substituting) phase = "substituting";
    else if (fetching) phase = "fetching";
    else if (this.realiseStarted) phase = "realising";
    else phase = "evaluating";
    let downloaded = this.finishedTransferBytes;
    for (const bytes of this.transfers.values()) downloaded += bytes;
    const out: NixProgress = {
      phase,
      builds: { ...this.builds },
      substitutions: { ...this.substitutions },
      downloadedBytes: downloaded,
      expectedDownloadBytes: this.expectedDownload,
      runningBuilds: running,
    };
    if (this.buildPhase !== undefined) out.buildPhase = this.buildPhase;
    if (this.lastLine !== undefined) out.lastLine = this.lastLine;
    return out;
  }

  /** Error messages (level 0) Nix printed, colour removed, without the `error: ` prefix. */
  errors(): string[] {
    return [...this.errorMessages];
  }

  warningsSeen(): string[] {
    return [...this.warnings];
  }

  /** Plain (non-JSON) stderr lines, the most recent last. */
  textTail(): string[] {
    return [...this.text];
  }

  /** The last log lines of a derivation's builder (empty when unknown). */
  buildLog(drvPath: string): string[] {
    return [...(this.buildLogs.get(drvPath) ?? [])];
  }

  /** Whether realisation (substitution/building) began, i.e. evaluation finished. */
  realised(): boolean {
    return this.realiseStarted;
  }
}
