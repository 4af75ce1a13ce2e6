#!/usr/bin/env node
// Only light imports here: everything a command needs is loaded with that command (and the logger
// after a possible re-exec), so `--help`, `--version` and small steps start quickly.
import { UsageError, type Command, type CommandContext } from "./command.ts";
import {
  controllerHelp,
  validateHelp,
  crdHelp,
  buildHelp,
  buildStepHelp,
  fetchStepHelp,
  cacheStepHelp,
  pushStepHelp,
  streamStepHelp,
  prepareStoreHelp,
  warmReportHelp,
} from "./command-help.ts";
import packageJson from "../../package.json" with { type: "json" };

/**
 * Commands load on demand: a builder step should not pay for the Kubernetes client the
 * controller needs (about a second of start-up on a small machine).
 */
const commands: { name: string; summary: string; help: string; load: () => Promise<Command> }[] = [
  {
    name: "controller",
    summary: "run the NixImage controller against the current kubeconfig or in-cluster config",
    help: controllerHelp,
    load: async () => (await import("./controller-command.ts")).controllerCommand,
  },
  {
    name: "validate",
    summary: "check NixImage manifests in YAML files (for CI of GitOps repos)",
    help: validateHelp,
    load: async () => (await import("./validate-command.ts")).validateCommand,
  },
  {
    name: "crd",
    summary: "print the NixImage CustomResourceDefinition (generated from the API schema)",
    help: crdHelp,
    load: async () => (await import("./crd-command.ts")).crdCommand,
  },
  {
    name: "build",
    summary: "build a flake output with the local Nix and push it as an OCI image",
    help: buildHelp,
    load: async () => (await import("./build-command.ts")).buildCommand,
  },
  {
    name: "build-step",
    summary: "builder Job step: lock and build a flake attribute, write result.json and closure.json",
    help: buildStepHelp,
    load: async () => (await import("./build-step-command.ts")).buildStepCommand,
  },
  {
    name: "fetch-step",
    summary: "builder Job step: fetch a flake and its inputs into the store with the source credential",
    help: fetchStepHelp,
    load: async () => (await import("./fetch-step-command.ts")).fetchStepCommand,
  },
  {
    name: "cache-step",
    summary: "builder Job step: copy a build's closure to the cluster binary cache (signed)",
    help: cacheStepHelp,
    load: async () => (await import("./cache-step-command.ts")).cacheStepCommand,
  },
  {
    name: "push-step",
    summary: "builder Job step: push the image of a build step's result to a registry",
    help: pushStepHelp,
    load: async () => (await import("./push-step-command.ts")).pushStepCommand,
  },
  {
    name: "stream-step",
    summary: "builder Job step: run a streamLayeredImage script (no Secret) and stream it to the push step",
    help: streamStepHelp,
    load: async () => (await import("./stream-step-command.ts")).streamStepCommand,
  },
  {
    name: "prepare-store",
    summary: "builder Job step: seed a store volume from the image's /nix, or check its Nix version",
    help: prepareStoreHelp,
    load: async () => (await import("./prepare-store-command.ts")).prepareStoreCommand,
  },
  {
    name: "warm-report",
    summary: "builder Job step of warm builds: report the revision, timings and closure diff",
    help: warmReportHelp,
    load: async () => (await import("./warm-report-command.ts")).warmReportCommand,
  },
];

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return `Usage: nix-image-operator <command> [flags]

Builds Nix flakes into OCI images and rolls them out on Kubernetes.

Commands:
${commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Run 'nix-image-operator <command> --help' for a command's flags.`;
}

/** The logger may come as a loader: pino is loaded only when a command runs, not for help or the version. */
type MainContext = Omit<CommandContext, "argv" | "logger"> & { logger: CommandContext["logger"] | (() => Promise<CommandContext["logger"]>) };

export async function main(argv: string[], context: MainContext): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    (name === undefined ? context.stderr : context.stdout).write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "version") {
    context.stdout.write(`${packageJson.version}\n`);
    return 0;
  }
  const entry = commands.find((c) => c.name === name);
  // `<command> --help` alone is answered from the help texts: the command and its dependencies are not loaded.
  if (entry && rest.length === 1 && (rest[0] === "--help" || rest[0] === "-h")) {
    context.stdout.write(`${entry.help}\n`);
    return 0;
  }
  const command = entry ? await entry.load() : undefined;
  try {
    if (!command) throw new UsageError(`unknown command "${name}"; commands: ${commands.map((c) => c.name).join(", ")}`);
    const logger = typeof context.logger === "function" ? await context.logger() : context.logger;
    return await command.run({ ...context, logger, argv: rest });
  } catch (error) {
    if (error instanceof UsageError) {
      context.stderr.write(`error: ${error.message}\nRun 'nix-image-operator ${command ? `${command.name} ` : ""}--help' for usage.\n`);
      return 2;
    }
    if (error instanceof (await import("../config/operator-config.ts")).ConfigError) {
      context.stderr.write(`error: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

/**
 * Node flags that NODE_OPTIONS refuses (V8's --lite-mode, which the chart sets for the controller to
 * save memory) come in NIO_NODE_FLAGS: the process replaces itself once with `node <flags> <script>
 * <args>` (execve: the same PID, so signals and the pod's lifecycle are unchanged).
 */
function reexecWithNodeFlags(env: NodeJS.ProcessEnv): void {
  const flags = env.NIO_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? [];
  if (flags.length === 0 || typeof process.execve !== "function") return;
  const { NIO_NODE_FLAGS: _applied, ...rest } = env;
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...flags, process.argv[1]!, ...process.argv.slice(2)], rest);
}

if (import.meta.main) {
  reexecWithNodeFlags(process.env);
  const controller = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => controller.abort(new Error(signal)));
  const code = await main(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    logger: async () => (await import("../log/logger.ts")).createLogger(),
    env: process.env,
    cwd: process.cwd(),
    signal: controller.signal,
  });
  process.exitCode = code;
  // Told to stop and done: a request or child process that ignored the signal must not keep the
  // process (and its pod, until SIGKILL) alive. stdout/stderr are synchronous for files and pipes on Linux.
  if (controller.signal.aborted) process.exit(code);
}
