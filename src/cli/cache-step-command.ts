import { runCacheStep } from "../builder/cache-step.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseDuration } from "../api/duration.ts";
import { NixCommand } from "../nix/nix-command.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { pipelineLogger, reportFailure } from "./builder-flags.ts";

export const cacheStepCommand: Command = {
  name: "cache-step",
  help: `Usage: nix-image-operator cache-step --from DIR --to STORE-URL --secret-key-file FILE [flags]

The optional cache step of the builder Job (config.binaryCache): copies the closure of the build
step's result to a Nix binary cache with \`nix copy --to\`, signed with the key from
\`nix key generate-secret\`. It runs no flake code and is the only step that holds the signing key
and the upload credentials. Paths the cache has are skipped by Nix.

A failed copy is reported (stderr, and "copied": false with the error in the result) but exits 0:
the image is pushed either way; a cache is an optimisation. Usage errors exit 1.

Result (stdout and --termination-message):
  {"cache","outPath","closurePaths","copied","seconds","error"?}

Flags:
  --from DIR                   the build step's directory (required)
  --to STORE-URL               file://, https://, s3:// or http:// binary cache (store parameters allowed,
                               e.g. ?compression=zstd) (required)
  --secret-key-file FILE       the signing key (required)
  --aws-credentials-file FILE  AWS shared credentials for s3:// (AWS_SHARED_CREDENTIALS_FILE)
  --netrc-file FILE            netrc with credentials for https:// uploads
  --timeout DURATION           give up on the copy after this long (e.g. 10m)
  --termination-message PATH   where the JSON result goes (Kubernetes: /dev/termination-log)
  -h, --help                   this help`,
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
