import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Logger } from "../log/logger.ts";

/** What every subcommand gets: its arguments, the output streams and the root logger. */
export interface CommandContext {
  argv: string[];
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  logger: Logger;
  env: NodeJS.ProcessEnv;
  cwd: string;
  signal: AbortSignal;
}

export interface Command {
  name: string;
  /** Full help: usage line, description, flags. */
  help: string;
  /** Resolves to the process exit code. */
  run(context: CommandContext): Promise<number>;
}

/** A mistake in how the command was called: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * Strict flag parsing: unknown flags, missing values and stray positionals are usage errors
 * with a message naming the flag, instead of being silently ignored.
 */
export function parseFlags<O extends Options>(argv: string[], options: O, command: string, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, strict: true, allowPositionals });
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify a positional argument.*$/s, "");
    throw new UsageError(`${command}: ${message}`);
  }
}
