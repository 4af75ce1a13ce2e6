import { runBuildStep } from "../builder/build-step.ts";
import { readFetchResult } from "../builder/step-files.ts";
import { ProgressReporter } from "../builder/progress-reporter.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseDuration } from "../api/duration.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { buildStepHelp } from "./command-help.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { checkRefAllowed, nixFromFlags, parseFormat, pipelineLogger, positiveInt, reportFailure } from "./builder-flags.ts";

export const buildStepCommand: Command = {
  name: "build-step",
  help: buildStepHelp,
  async run(context) {
    const { values, positionals } = parseFlags(
      context.argv,
      {
        flake: { type: "string" },
        attribute: { type: "string" },
        out: { type: "string" },
        format: { type: "string" },
        "gc-root-dir": { type: "string" },
        keep: { type: "string" },
        "require-build-users": { type: "boolean" },
        "gc-threshold-percent": { type: "string" },
        generation: { type: "string" },
        substituter: { type: "string", multiple: true },
        "trusted-public-key": { type: "string", multiple: true },
        "cluster-cache": { type: "string", multiple: true },
        "allow-import-from-derivation": { type: "boolean" },
        "extra-attribute": { type: "string", multiple: true },
        "update-inputs": { type: "boolean" },
        fetched: { type: "string" },
        "ca-file": { type: "string" },
        timeout: { type: "string" },
        "termination-message": { type: "string" },
        config: { type: "string" },
      },
      "build-step",
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const terminationMessage = values["termination-message"];
    const log = pipelineLogger(context);
    const progress = new ProgressReporter({ stream: context.stderr, logger: log });
    try {
      if (positionals.length > 0) throw new UsageError(`build-step: unexpected argument ${JSON.stringify(positionals[0])}`);
      for (const f of ["flake", "attribute", "out"] as const) if (values[f] === undefined) throw new UsageError(`build-step: --${f} is required`);
      const format = parseFormat(values.format);
      const keep = positiveInt("--keep", values.keep, 1, 100);
      const gcThresholdPercent = positiveInt("--gc-threshold-percent", values["gc-threshold-percent"], 1, 100);
      const generation = positiveInt("--generation", values.generation, 0, 999_999_999);
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
      const ca = values["ca-file"];
      // Nix takes NIX_SSL_CERT_FILE as its ssl-cert-file; git (fetchers) GIT_SSL_CAINFO.
      const env = ca === undefined ? context.env : { ...context.env, NIX_SSL_CERT_FILE: ca, SSL_CERT_FILE: ca, GIT_SSL_CAINFO: ca };
      const nix = nixFromFlags(values, env, log);
      const out = await runBuildStep({
        nix,
        flake: values.flake!,
        attribute: values.attribute!,
        format,
        outDir: values.out!,
        ...(values["gc-root-dir"] !== undefined ? { gcRootDir: values["gc-root-dir"] } : {}),
        ...(keep !== undefined ? { keep } : {}),
        ...(gcThresholdPercent !== undefined ? { gcThresholdPercent } : {}),
        ...(generation !== undefined ? { generation } : {}),
        ...(values["extra-attribute"] ? { extraAttributes: values["extra-attribute"] } : {}),
        ...(values["update-inputs"] ? { updateInputs: true } : {}),
        ...(values.fetched !== undefined ? { fetched: await readFetchResult(values.fetched) } : {}),
        ...(values["require-build-users"] ? { requireBuildUsers: true } : {}),
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        signal: context.signal,
        progress,
        logger: log,
      });
      progress.done();
      const r = out.result;
      const summary = { outPath: r.outPath, format: r.format, revision: r.revision, closure: r.closure };
      await writeTerminationMessage(terminationMessage, JSON.stringify(summary));
      context.stdout.write(`${JSON.stringify(summary)}\n`);
      return 0;
    } catch (error) {
      return reportFailure(context, error, { terminationMessage, progress });
    }
  },
};
