// The builder steps' shared runner (src/cli/run-step.ts): exit codes (0, 1, 2 for usage, 75 for a
// failure that may pass or a stop signal), the termination message written exactly once per run
// with what failed and why, and SIGTERM aborting the step's work (also work that ignores it).
import { PassThrough } from "node:stream";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { UsageError, type CommandContext } from "../../src/cli/command.ts";
import { stepCommand, stoppedMessage, type StepOutput, type StepRun } from "../../src/cli/run-step.ts";
import { TRANSIENT_EXIT_CODE } from "../../src/builder/step-results.ts";

const flags = { from: { type: "string" }, secret: { type: "string" } } as const;
type Run = (step: StepRun<typeof flags>) => Promise<StepOutput>;

let dir = "";
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "run-step-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs a test step; every termination message write is recorded (the real writer runs too). */
async function runTestStep(
  argv: string[],
  run: Run,
  options: { transient?: (e: unknown) => boolean; controller?: AbortController; stopGraceMs?: number } = {},
) {
  const writes: string[] = [];
  const command = stepCommand(
    { name: "test-step", help: "Usage: test-step --from DIR", flags, required: ["from"], run, ...(options.transient ? { transient: options.transient } : {}) },
    {
      stopGraceMs: options.stopGraceMs ?? 60_000,
      writeMessage: async (path, text) => {
        writes.push(text);
        const { writeTerminationMessage } = await import("../../src/builder/push-result.ts");
        await writeTerminationMessage(path, text);
      },
    },
  );
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d: Buffer) => (out += d.toString()));
  stderr.on("data", (d: Buffer) => (err += d.toString()));
  const messageFile = join(dir, "termination-log");
  const context: CommandContext = {
    argv: [...argv, "--termination-message", messageFile],
    stdout,
    stderr,
    logger: pino({ level: "silent" }),
    env: {},
    cwd: dir,
    signal: (options.controller ?? new AbortController()).signal,
  };
  let code: number | undefined;
  let thrown: unknown;
  try {
    code = await command.run(context);
  } catch (e) {
    thrown = e;
  }
  const message = await readFile(messageFile, "utf8").catch(() => undefined);
  return { code, thrown, out, err, writes, message };
}

describe("step runner", () => {
  it("success: exit 0, the step's termination message written once, stdout as the step says", async () => {
    const r = await runTestStep(["--from", "x"], async ({ values }) => ({ terminationMessage: JSON.stringify({ from: values.from }), stdout: "done" }));
    expect(r.code).toBe(0);
    expect(r.writes).toEqual(['{"from":"x"}']);
    expect(r.message).toBe('{"from":"x"}');
    expect(r.out).toBe("done\n");
  });

  it("stdout defaults to the termination message", async () => {
    const r = await runTestStep(["--from", "x"], async () => ({ terminationMessage: "streamed 3 bytes" }));
    expect(r.out).toBe("streamed 3 bytes\n");
  });

  it("a failure: exit 1, what failed and why in the message (once) and on stderr, secrets scrubbed", async () => {
    const r = await runTestStep(["--from", "x"], async ({ secrets }) => {
      secrets.push("hunter2-token");
      throw new Error("cannot read /work/result/result.json (ENOENT) with hunter2-token: did the build step finish successfully?");
    });
    expect(r.code).toBe(1);
    expect(r.writes).toHaveLength(1);
    expect(r.message).toContain("cannot read /work/result/result.json (ENOENT)");
    expect(r.message).toContain("did the build step finish successfully?");
    expect(r.message).not.toContain("hunter2-token");
    expect(r.err).toMatch(/^error: cannot read/);
    expect(r.err).not.toContain("hunter2-token");
  });

  it("a failure the step calls transient exits 75; others still 1", async () => {
    const transient = (e: unknown) => (e as Error).message.includes("503");
    expect((await runTestStep(["--from", "x"], async () => Promise.reject(new Error("registry answered 503")), { transient })).code).toBe(TRANSIENT_EXIT_CODE);
    expect((await runTestStep(["--from", "x"], async () => Promise.reject(new Error("manifest invalid")), { transient })).code).toBe(1);
  });

  it("usage errors: thrown (exit 2 in main) after the message is written once; the step does not run", async () => {
    let ran = false;
    const run: Run = async () => {
      ran = true;
      return { terminationMessage: "ran" };
    };
    const missing = await runTestStep([], run);
    expect(missing.thrown).toBeInstanceOf(UsageError);
    expect((missing.thrown as Error).message).toBe("test-step: --from is required");
    expect(missing.writes).toEqual(["test-step: --from is required"]);
    const stray = await runTestStep(["--from", "x", "extra"], run);
    expect((stray.thrown as Error).message).toMatch(/^test-step: Unexpected argument 'extra'/);
    expect(ran).toBe(false);
    const own = await runTestStep(["--from", "x"], async () => Promise.reject(new UsageError("test-step: --from must be a directory")));
    expect(own.thrown).toBeInstanceOf(UsageError);
    expect(own.writes).toEqual(["test-step: --from must be a directory"]);
  });

  it("--help prints the help and runs nothing", async () => {
    const r = await runTestStep(["--help"], async () => Promise.reject(new Error("must not run")));
    expect(r.code).toBe(0);
    expect(r.out).toBe("Usage: test-step --from DIR\n");
    expect(r.writes).toEqual([]);
  });

  it("SIGTERM: the step's signal aborts its work; exit 75 with one message saying what happened and what follows", async () => {
    const controller = new AbortController();
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const result = runTestStep(
      ["--from", "x"],
      ({ signal }) =>
        new Promise<StepOutput>((_, reject) => {
          started();
          signal.addEventListener("abort", () => reject(new Error("The operation was aborted")), { once: true });
        }),
      { controller, transient: () => false },
    );
    await running;
    controller.abort(new Error("SIGTERM"));
    const r = await result;
    expect(r.code).toBe(TRANSIENT_EXIT_CODE);
    expect(r.writes).toEqual([stoppedMessage("test-step", new Error("SIGTERM"))]);
    expect(r.message).toContain("test-step was stopped by SIGTERM before it finished");
    expect(r.message).toContain("the build is retried");
    expect(r.err).toContain("stopped by SIGTERM");
  });

  it("SIGTERM: work that ignores the signal is abandoned after the grace period, exit 75", async () => {
    const controller = new AbortController();
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const result = runTestStep(
      ["--from", "x"],
      () =>
        new Promise<StepOutput>(() => {
          started(); // never settles, like an upload whose socket stalls
        }),
      { controller, stopGraceMs: 0 },
    );
    await running;
    controller.abort(new Error("SIGTERM"));
    const r = await result;
    expect(r.code).toBe(TRANSIENT_EXIT_CODE);
    expect(r.writes).toHaveLength(1);
    expect(r.message).toContain("stopped by SIGTERM");
  });

  it("a step that finishes despite the signal keeps its result (exit 0)", async () => {
    const controller = new AbortController();
    controller.abort(new Error("SIGTERM"));
    const r = await runTestStep(["--from", "x"], async () => ({ terminationMessage: "ok" }), { controller });
    expect(r.code).toBe(0);
    expect(r.writes).toEqual(["ok"]);
  });
});
