import { runBuildStep } from "../builder/build-step.ts";
import { readFetchResult } from "../builder/step-files.ts";
import { ProgressReporter } from "../builder/progress-reporter.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseDuration } from "../api/duration.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { checkRefAllowed, nixFromFlags, parseFormat, pipelineLogger, positiveInt, reportFailure } from "./builder-flags.ts";

export const buildStepCommand: Command = {
  name: "build-step",
  help: `Usage: nix-image-operator build-step --flake REF --attribute ATTR --out DIR [flags]

The build step of the builder Job. Locks the flake ref (nix flake metadata), builds the attribute
from the locked URL (nix build, argv only, with safety options: no flake nixConfig, no flake
registry, no sandbox fallback, no import-from-derivation unless allowed), detects the image format,
reads the closure and writes into DIR:

  result.json   {version, flake, attribute, revision: {url, rev, lastModified, narHash}, system,
                 drvPath, outPaths, outPath, format, formatReason, archiveCompression?,
                 mainProgram?, pname?, name?, closure: {paths, narSize}, extraAttributes,
                 gcRoots, seconds}
  closure.json  nix path-info --json --recursive of outPath: [{path, narSize, narHash, references}]
  locked-closure.json
                with --update-inputs: the same for the attribute built from the committed
                flake.lock (closure.json is then the build against the updated inputs)

Untrusted flake code runs in this step: it gets no secrets. The ref is not checked against the
flake ref policy here (the controller did that); give --config to check it again.

Exit code 0 on success; 1 with a message on stderr (and in --termination-message) on failure.

Flags:
  --flake REF                  flake ref without #attribute (required)
  --attribute ATTR             flake output attribute, e.g. default or packages.x86_64-linux.web (required)
  --out DIR                    directory for result.json and closure.json (required)
  --format F                   auto (default), package, docker-archive, stream-layered, nix2container
  --gc-root-dir DIR            per-image GC root directory; one generation of roots per build
  --keep N                     generations of GC roots kept in --gc-root-dir (default 5)
  --gc-threshold-percent P     after rooting, collect garbage when the store's filesystem is over P% full
  --generation N               generation number of this build's roots (default: next)
  --substituter URL            extra https:// binary cache (repeatable)
  --trusted-public-key KEY     its public key, name:base64 (repeatable)
  --cluster-cache URL          the operator's binary cache (https://, s3:// or http://; its key via
                               --trusted-public-key); unreachable, it is skipped and Nix builds
  --allow-import-from-derivation
                               allow IFD for this flake
  --extra-attribute ATTR       warm builds: another attribute to build and keep alive (repeatable)
  --require-build-users        as root: refuse to build unless Nix runs builders as build users
                               (build-users-group set); the builder Job passes it
  --ca-file FILE               CA bundle for TLS (Nix ssl-cert-file, git): substituters, sources
  --fetched FILE               the fetch step's fetch.json: build from the source it fetched into the
                               store (with its locked inputs), needing no source credential
  --update-inputs              build against freshly locked inputs (--recreate-lock-file, never
                               written back) and also from the committed lock file
  --timeout DURATION           give up after this long, e.g. 45m (default: no limit)
  --termination-message PATH   write a short error here on failure (Kubernetes: /dev/termination-log)
  --config FILE                operator config: check the ref against its flakeRefPolicy too
  -h, --help                   this help`,
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
