import { runBuildStep } from "../builder/build-step.ts";
import { readFetchResult } from "../builder/step-files.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { buildStepHelp } from "./command-help.ts";
import { checkRefAllowed, durationFlag, nixFromFlags, parseFormat, positiveInt } from "./builder-flags.ts";
import { stepCommand } from "./run-step.ts";

export const buildStepCommand = stepCommand({
  name: "build-step",
  help: buildStepHelp,
  flags: {
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
    config: { type: "string" },
  },
  required: ["flake", "attribute", "out"],
  progress: true,
  async run({ values, context, log, progress, signal }) {
    const format = parseFormat(values.format);
    const keep = positiveInt("--keep", values.keep, 1, 100);
    const gcThresholdPercent = positiveInt("--gc-threshold-percent", values["gc-threshold-percent"], 1, 100);
    const generation = positiveInt("--generation", values.generation, 0, 999_999_999);
    const timeoutMs = durationFlag("--timeout", values.timeout);
    if (values.config !== undefined) {
      checkRefAllowed(values.flake!, (await loadOperatorConfig({ file: values.config, env: {} })).flakeRefPolicy);
    }
    const ca = values["ca-file"];
    // Nix takes NIX_SSL_CERT_FILE as its ssl-cert-file; git (fetchers) GIT_SSL_CAINFO.
    const env = ca === undefined ? context.env : { ...context.env, NIX_SSL_CERT_FILE: ca, SSL_CERT_FILE: ca, GIT_SSL_CAINFO: ca };
    const out = await runBuildStep({
      nix: nixFromFlags(values, env, log),
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
      signal,
      progress: progress!,
      logger: log,
    });
    const r = out.result;
    return { terminationMessage: JSON.stringify({ outPath: r.outPath, format: r.format, revision: r.revision, closure: r.closure }) };
  },
});
