import { join } from "node:path";
import { credentialEnvironment, isTransientFetchFailure, readCredentialDirs, runFetchStep } from "../builder/fetch-step.ts";
import { TRANSIENT_EXIT_CODE } from "../builder/step-results.ts";
import { ProgressReporter } from "../builder/progress-reporter.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseDuration } from "../api/duration.ts";
import { NixCommand } from "../nix/nix-command.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { fetchStepHelp } from "./command-help.ts";
import { checkRefAllowed, pipelineLogger, reportFailure } from "./builder-flags.ts";

export const fetchStepCommand: Command = {
  name: "fetch-step",
  help: fetchStepHelp,
  async run(context) {
    const { values, positionals } = parseFlags(
      context.argv,
      {
        flake: { type: "string" },
        out: { type: "string" },
        "credentials-dir": { type: "string", multiple: true },
        home: { type: "string" },
        "ca-file": { type: "string" },
        timeout: { type: "string" },
        "termination-message": { type: "string" },
        config: { type: "string" },
      },
      "fetch-step",
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const terminationMessage = values["termination-message"];
    const log = pipelineLogger(context);
    const progress = new ProgressReporter({ stream: context.stderr, logger: log });
    let secrets: string[] = [];
    try {
      if (positionals.length > 0) throw new UsageError(`fetch-step: unexpected argument ${JSON.stringify(positionals[0])}`);
      for (const f of ["flake", "out"] as const) if (values[f] === undefined) throw new UsageError(`fetch-step: --${f} is required`);
      let timeoutMs: number | undefined;
      if (values.timeout !== undefined) {
        try {
          timeoutMs = parseDuration(values.timeout);
        } catch (e) {
          throw new UsageError(`--timeout: ${(e as Error).message}`);
        }
      }
      if (values.config !== undefined) {
        checkRefAllowed(values.flake!, (await loadOperatorConfig({ file: values.config, env: {} })).flakeRefPolicy);
      }
      const credentials = await readCredentialDirs(values["credentials-dir"] ?? []);
      secrets = credentials.secrets;
      const home = values.home ?? context.env.HOME ?? join(values.out!, "..", "fetch-home");
      let baseConfig = context.env.NIX_CONFIG ?? "";
      const ca = values["ca-file"];
      if (ca !== undefined) baseConfig += `\nssl-cert-file = ${ca}\n`;
      // The credential reaches only this step's Nix (and the git/ssh it runs), never a log line.
      const extraEnv = await credentialEnvironment(credentials, home, baseConfig);
      if (ca !== undefined) Object.assign(extraEnv, { GIT_SSL_CAINFO: ca, NIX_SSL_CERT_FILE: ca, SSL_CERT_FILE: ca });
      const nix = new NixCommand({ baseEnv: context.env, extraEnv, logger: log });
      const fetched = await runFetchStep({
        nix,
        flake: values.flake!,
        outDir: values.out!,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        signal: context.signal,
        progress,
        logger: log,
      });
      progress.done();
      const summary = { revision: fetched.revision, sourcePath: fetched.sourcePath, inputs: fetched.inputPaths.length };
      await writeTerminationMessage(terminationMessage, JSON.stringify(summary));
      context.stdout.write(`${JSON.stringify(summary)}\n`);
      return 0;
    } catch (error) {
      const code = await reportFailure(context, error, { terminationMessage, progress, secrets });
      // This step runs no flake outputs: its word that the server or network failed is taken, and the build retried.
      return isTransientFetchFailure((error as Error).message ?? "") ? TRANSIENT_EXIT_CODE : code;
    }
  },
};
