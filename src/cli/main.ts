#!/usr/bin/env node
import { createLogger } from "../log/logger.ts";
import { UsageError, type Command, type CommandContext } from "./command.ts";
import { crdCommand } from "./crd-command.ts";
import { controllerCommand } from "./controller-command.ts";
import { validateCommand } from "./validate-command.ts";
import { buildCommand } from "./build-command.ts";
import { buildStepCommand } from "./build-step-command.ts";
import { pushStepCommand } from "./push-step-command.ts";
import { prepareStoreCommand } from "./prepare-store-command.ts";
import { warmReportCommand } from "./warm-report-command.ts";
import { ConfigError } from "../config/operator-config.ts";
import packageJson from "../../package.json" with { type: "json" };

const commands: Command[] = [controllerCommand, validateCommand, crdCommand, buildCommand, buildStepCommand, pushStepCommand, prepareStoreCommand, warmReportCommand];

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return `Usage: nix-image-operator <command> [flags]

Builds Nix flakes into OCI images and rolls them out on Kubernetes.

Commands:
${commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Run 'nix-image-operator <command> --help' for a command's flags.`;
}

export async function main(argv: string[], context: Omit<CommandContext, "argv">): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    (name === undefined ? context.stderr : context.stdout).write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "version") {
    context.stdout.write(`${packageJson.version}\n`);
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  try {
    if (!command) throw new UsageError(`unknown command "${name}"; commands: ${commands.map((c) => c.name).join(", ")}`);
    return await command.run({ ...context, argv: rest });
  } catch (error) {
    if (error instanceof UsageError) {
      context.stderr.write(`error: ${error.message}\nRun 'nix-image-operator ${command ? `${command.name} ` : ""}--help' for usage.\n`);
      return 2;
    }
    if (error instanceof ConfigError) {
      context.stderr.write(`error: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

if (import.meta.main) {
  const controller = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => controller.abort(new Error(signal)));
  const code = await main(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    logger: createLogger(),
    env: process.env,
    cwd: process.cwd(),
    signal: controller.signal,
  });
  process.exitCode = code;
}
