import { runCacheStep } from "../builder/cache-step.ts";
import { NixCommand } from "../nix/nix-command.ts";
import { UsageError } from "./command.ts";
import { cacheStepHelp } from "./command-help.ts";
import { durationFlag } from "./builder-flags.ts";
import { stepCommand } from "./run-step.ts";

export const cacheStepCommand = stepCommand({
  name: "cache-step",
  help: cacheStepHelp,
  flags: {
    from: { type: "string" },
    to: { type: "string" },
    "secret-key-file": { type: "string" },
    "aws-credentials-file": { type: "string" },
    "netrc-file": { type: "string" },
    timeout: { type: "string" },
  },
  required: ["from", "to", "secret-key-file"],
  async run({ values, context, log, signal }) {
    if (!/^(file|https|http|s3):\/\/[^\s@]+$/.test(values.to!))
      throw new UsageError("cache-step: --to must be a file://, https://, http:// or s3:// URL without credentials");
    const timeoutMs = durationFlag("--timeout", values.timeout);
    const aws = values["aws-credentials-file"];
    const nix = new NixCommand({ baseEnv: context.env, logger: log, ...(aws !== undefined ? { extraEnv: { AWS_SHARED_CREDENTIALS_FILE: aws } } : {}) });
    const result = await runCacheStep({
      from: values.from!,
      to: values.to!,
      secretKeyFile: values["secret-key-file"]!,
      ...(values["netrc-file"] !== undefined ? { netrcFile: values["netrc-file"] } : {}),
      nix,
      logger: log,
      signal,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    });
    if (!result.copied) context.stderr.write(`cache-step: the closure was not copied: ${result.error ?? "unknown error"}\n`);
    return { terminationMessage: JSON.stringify(result) };
  },
});
