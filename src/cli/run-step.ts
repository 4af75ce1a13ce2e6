// The one way a builder Job step runs (fetch, build, push, stream, cache, prepare-store,
// warm-report): strict flags, the required ones checked, the pipeline logger and progress line,
// the termination message written exactly once, the exit code (0, 1, 2 for usage, 75 for a
// failure that may pass), and SIGTERM: the step's work is aborted through its signal and the
// process exits with the transient code instead of waiting for the kubelet's SIGKILL.
// Each step file then holds only what its step does.
import type { Logger } from "../log/logger.ts";
import { ProgressReporter } from "../builder/progress-reporter.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { TRANSIENT_EXIT_CODE } from "../builder/step-results.ts";
import { parseFlags, UsageError, type Command, type CommandContext } from "./command.ts";
import { pipelineLogger, reportFailure } from "./builder-flags.ts";

type Options = Parameters<typeof parseFlags>[1];
type Values<O extends Options> = ReturnType<typeof parseFlags<O>>["values"];

/** What a step's own code gets from the runner. */
export interface StepRun<O extends Options> {
  values: Values<O>;
  context: CommandContext;
  /** The pipeline logger (warnings only on a terminal, JSON lines otherwise). */
  log: Logger;
  /** The progress line (steps with `progress: true` only). */
  progress: ProgressReporter | undefined;
  /** Aborted on SIGTERM/SIGINT: pass it to everything that waits (requests, child processes). */
  signal: AbortSignal;
  /** Secret strings the step has read (e.g. credentials): scrubbed from every failure message. */
  secrets: string[];
}

/** A step's result: the termination message for the controller and what it prints on stdout. */
export interface StepOutput {
  terminationMessage: string;
  /** Defaults to the termination message. */
  stdout?: string;
}

export interface StepSpec<O extends Options> {
  name: string;
  help: string;
  flags: O;
  /** Flags without which the step cannot run (a usage error, exit code 2). */
  required?: readonly (keyof O & string)[];
  /** Whether the step draws a progress line. */
  progress?: boolean;
  /** A failure that may pass (a server or the network): exit code 75, the controller retries the build. */
  transient?: (error: unknown) => boolean;
  /** A failure's own exit code, when the controller must tell it from others (e.g. a refused store volume, 78). */
  exitCode?: (error: unknown) => number | undefined;
  run(step: StepRun<O>): Promise<StepOutput>;
}

export interface RunnerOptions {
  /** How long a stopped step may take to unwind before the runner stops waiting for it. */
  stopGraceMs?: number;
  /** Where the termination message goes (the file of --termination-message by default). */
  writeMessage?: (path: string | undefined, text: string) => Promise<void>;
}

const DEFAULT_STOP_GRACE_MS = 2_000;

/** Why a step stopped early, for its termination message: what happened, what it means, what happens next. */
export function stoppedMessage(name: string, reason: unknown): string {
  const signal = reason instanceof Error && /^SIG[A-Z]+$/.test(reason.message) ? reason.message : "a stop signal";
  return `${name} was stopped by ${signal} before it finished (the pod was deleted, evicted or its node is draining); nothing it did is used: the build is retried`;
}

/** A Command that runs `spec` as a builder step. */
export function stepCommand<const O extends Options>(spec: StepSpec<O>, options: RunnerOptions = {}): Command {
  return {
    name: spec.name,
    help: spec.help,
    run: (context) => runStep(spec, context, options),
  };
}

async function runStep<O extends Options>(spec: StepSpec<O>, context: CommandContext, options: RunnerOptions): Promise<number> {
  // The values' types are the step's (StepRun.values); here they are only looked at by name.
  // Unknown flags and stray arguments are usage errors here already (strict parsing).
  const { values } = parseFlags(context.argv, { ...spec.flags, "termination-message": { type: "string" } }, spec.name) as { values: Record<string, unknown> };
  if (values.help) {
    context.stdout.write(`${spec.help}\n`);
    return 0;
  }
  const path = values["termination-message"] as string | undefined;
  // One message per run: the first outcome written is the one the controller reads.
  let written = false;
  const write = async (text: string) => {
    if (written) return;
    written = true;
    await (options.writeMessage ?? writeTerminationMessage)(path, text);
  };
  const log = pipelineLogger(context);
  const progress = spec.progress ? new ProgressReporter({ stream: context.stderr, logger: log }) : undefined;
  const step: StepRun<O> = { values: values as Values<O>, context, log, progress, signal: context.signal, secrets: [] };

  const work = (async () => {
    for (const flag of spec.required ?? []) if (values[flag] === undefined) throw new UsageError(`${spec.name}: --${flag} is required`);
    return spec.run(step);
  })();
  const outcome = await settleOrStop(work, context.signal, options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS);

  if (outcome.kind === "done") {
    progress?.done();
    await write(outcome.output.terminationMessage);
    context.stdout.write(`${outcome.output.stdout ?? outcome.output.terminationMessage}\n`);
    return 0;
  }
  if (outcome.kind === "abandoned" || (context.signal.aborted && !(outcome.error instanceof UsageError))) {
    // Stopped from outside: whatever the step was doing is void, and it may pass on the next try.
    progress?.done();
    const message = stoppedMessage(spec.name, context.signal.reason);
    await write(message);
    context.stderr.write(`error: ${message}\n`);
    log.warn({ step: spec.name }, "stopped by a signal; exiting with the transient code");
    return TRANSIENT_EXIT_CODE;
  }
  const code = await reportFailure(context, outcome.error, { write, secrets: step.secrets, ...(progress ? { progress } : {}) });
  return spec.exitCode?.(outcome.error) ?? (spec.transient?.(outcome.error) ? TRANSIENT_EXIT_CODE : code);
}

type Outcome = { kind: "done"; output: StepOutput } | { kind: "failed"; error: unknown } | { kind: "abandoned" };

/**
 * The step's outcome; once `signal` is aborted, the step gets `graceMs` to unwind (its own work
 * sees the same signal) and is then abandoned: a request or child process that ignores the
 * signal must not keep the pod in Terminating until the kubelet kills it.
 */
async function settleOrStop(work: Promise<StepOutput>, signal: AbortSignal, graceMs: number): Promise<Outcome> {
  const settled = work.then(
    (output): Outcome => ({ kind: "done", output }),
    (error: unknown): Outcome => ({ kind: "failed", error }),
  );
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const abandoned = new Promise<Outcome>((resolve) => {
    onAbort = () => {
      timer = setTimeout(() => resolve({ kind: "abandoned" }), graceMs);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([settled, abandoned]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}
