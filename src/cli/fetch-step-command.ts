import { join } from "node:path";
import { credentialEnvironment, readCredentialDirs, runFetchStep } from "../builder/fetch-step.ts";
import { ProgressReporter } from "../builder/progress-reporter.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseDuration } from "../api/duration.ts";
import { NixCommand } from "../nix/nix-command.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { checkRefAllowed, pipelineLogger, reportFailure } from "./builder-flags.ts";

export const fetchStepCommand: Command = {
  name: "fetch-step",
  help: `Usage: nix-image-operator fetch-step --flake REF --out DIR [--credentials-dir DIR]... [flags]

The fetch step of the builder Job: the only step that holds the source credential. Locks the flake
ref (nix flake metadata) and fetches the locked source and all its locked inputs into the store
(nix flake archive), then writes DIR/fetch.json:

  {version, flake, revision: {url, rev, lastModified, narHash}, revCount, sourcePath, inputPaths, seconds}

The build step (build-step --fetched DIR/fetch.json) then builds from sourcePath without any
credential. No flake outputs are evaluated and nothing is built here.

A credentials directory (a mounted Secret) may hold, each optional:
  netrc            for git+https, https and tarball+https sources (git reads it as $HOME/.netrc,
                   Nix as netrc-file)
  access-tokens    Nix's access-tokens value: host=token words (github.com=..., gitlab.example.com=PAT:...)
  ssh-privatekey   for git+ssh sources; needs known_hosts (StrictHostKeyChecking=yes)
  known_hosts

Flags:
  --flake REF                  flake ref without #attribute (required)
  --out DIR                    directory for fetch.json (required)
  --credentials-dir DIR        a directory with the files above (repeatable)
  --home DIR                   this step's own HOME (git cache, .netrc link); default $HOME
  --ca-file FILE               CA bundle for TLS (Nix ssl-cert-file, git's CA file)
  --timeout DURATION           give up after this long, e.g. 10m
  --termination-message PATH   write a short error here on failure (Kubernetes: /dev/termination-log)
  --config FILE                operator config: check the ref against its flakeRefPolicy too
  -h, --help                   this help`,
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
      return reportFailure(context, error, { terminationMessage, progress });
    }
  },
};
