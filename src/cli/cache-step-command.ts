import { runCacheStep } from "../builder/cache-step.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseDuration } from "../api/duration.ts";
import { NixCommand } from "../nix/nix-command.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { cacheStepHelp } from "./command-help.ts";
import { pipelineLogger, reportFailure } from "./builder-flags.ts";

export const cacheStepCommand: Command = {
  name: "cache-step",
  help: cacheStepHelp,
  async run(context) {
    const { values, positionals } = parseFlags(
      context.argv,
      {
        from: { type: "string" },
        to: { type: "string" },
        "secret-key-file": { type: "string" },
        "aws-credentials-file": { type: "string" },
        "netrc-file": { type: "string" },
        timeout: { type: "string" },
        "termination-message": { type: "string" },
      },
      "cache-step",
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const terminationMessage = values["termination-message"];
    const log = pipelineLogger(context);
    try {
      if (positionals.length > 0) throw new UsageError(`cache-step: unexpected argument ${JSON.stringify(positionals[0])}`);
      for (const f of ["from", "to", "secret-key-file"] as const) if (values[f] === undefined) throw new UsageError(`cache-step: --${f} is required`);
      if (!/^(file|https|http|s3):\/\/[^\s@]+$/.test(values.to!))
        throw new UsageError("cache-step: --to must be a file://, https://, http:// or s3:// URL without credentials");
      let timeoutMs: number | undefined;
      if (values.timeout !== undefined) {
        try {
          timeoutMs = parseDuration(values.timeout);
        } catch (e) {
          throw new UsageError(`--timeout: ${(e as Error).message}`);
        }
      }
      const aws = values["aws-credentials-file"];
      const nix = new NixCommand({ baseEnv: context.env, logger: log, ...(aws !== undefined ? { extraEnv: { AWS_SHARED_CREDENTIALS_FILE: aws } } : {}) });
      const result = await runCacheStep({
        from: values.from!,
        to: values.to!,
        secretKeyFile: values["secret-key-file"]!,
        ...(values["netrc-file"] !== undefined ? { netrcFile: values["netrc-file"] } : {}),
        nix,
        logger: log,
        signal: context.signal,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      });
      const json = JSON.stringify(result);
      await writeTerminationMessage(terminationMessage, json);
      context.stdout.write(`${json}\n`);
      if (!result.copied) context.stderr.write(`cache-step: the closure was not copied: ${result.error ?? "unknown error"}\n`);
      return 0;
    } catch (error) {
      return reportFailure(context, error, { terminationMessage });
    }
  },
};
