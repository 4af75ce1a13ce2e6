import { join } from "node:path";
import { credentialEnvironment, isTransientFetchFailure, readCredentialDirs, runFetchStep } from "../builder/fetch-step.ts";
import { NixCommand } from "../nix/nix-command.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { fetchStepHelp } from "./command-help.ts";
import { checkRefAllowed, durationFlag } from "./builder-flags.ts";
import { stepCommand } from "./run-step.ts";

export const fetchStepCommand = stepCommand({
  name: "fetch-step",
  help: fetchStepHelp,
  flags: {
    flake: { type: "string" },
    out: { type: "string" },
    "credentials-dir": { type: "string", multiple: true },
    home: { type: "string" },
    "ca-file": { type: "string" },
    timeout: { type: "string" },
    config: { type: "string" },
  },
  required: ["flake", "out"],
  progress: true,
  // This step runs no flake outputs: its word that the server or network failed is taken, and the build retried.
  transient: (error) => isTransientFetchFailure((error as Error).message ?? ""),
  async run({ values, context, log, progress, signal, secrets }) {
    const timeoutMs = durationFlag("--timeout", values.timeout);
    if (values.config !== undefined) {
      checkRefAllowed(values.flake!, (await loadOperatorConfig({ file: values.config, env: {} })).flakeRefPolicy);
    }
    const credentials = await readCredentialDirs(values["credentials-dir"] ?? []);
    secrets.push(...credentials.secrets);
    const home = values.home ?? context.env.HOME ?? join(values.out!, "..", "fetch-home");
    let baseConfig = context.env.NIX_CONFIG ?? "";
    const ca = values["ca-file"];
    if (ca !== undefined) baseConfig += `\nssl-cert-file = ${ca}\n`;
    // The credential reaches only this step's Nix (and the git/ssh it runs), never a log line.
    const extraEnv = await credentialEnvironment(credentials, home, baseConfig);
    if (ca !== undefined) Object.assign(extraEnv, { GIT_SSL_CAINFO: ca, NIX_SSL_CERT_FILE: ca, SSL_CERT_FILE: ca });
    const fetched = await runFetchStep({
      nix: new NixCommand({ baseEnv: context.env, extraEnv, logger: log }),
      flake: values.flake!,
      outDir: values.out!,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      signal,
      progress: progress!,
      logger: log,
    });
    return { terminationMessage: JSON.stringify({ revision: fetched.revision, sourcePath: fetched.sourcePath, inputs: fetched.inputPaths.length }) };
  },
});
