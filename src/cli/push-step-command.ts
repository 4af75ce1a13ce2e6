import { loadOperatorConfig } from "../config/operator-config.ts";
import { ProgressReporter } from "../builder/progress-reporter.ts";
import { fitResult, writeTerminationMessage } from "../builder/push-result.ts";
import { TRANSIENT_EXIT_CODE } from "../builder/step-results.ts";
import { classifyRegistryFailure } from "../oci/registry-error.ts";
import { runPushStep } from "../builder/push-step.ts";
import { DirectoryLayerCache } from "../image/layer-cache.ts";
import { markExited, PUSH_EXITED } from "../builder/stream-handoff.ts";
import { openRegistryTarget, type RegistryTarget } from "../builder/registry-target.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import {
  attestFromFlags,
  layerCacheFrom,
  oneOf,
  parseCompression,
  parseImageConfigJson,
  pipelineLogger,
  positiveInt,
  pushFlags,
  pushFlagsHelp,
  reportFailure,
} from "./builder-flags.ts";

export const pushStepCommand: Command = {
  name: "push-step",
  help: `Usage: nix-image-operator push-step --from DIR --image REPO [flags]

The push step of the builder Job. Reads ONLY the build step's directory (result.json,
closure.json) and the Nix store, makes the image for the detected format and pushes it:
layers straight from the store (one pass: tar -> sha256 -> upload, no temp files), blobs the
registry has are skipped, then config, manifest and tags; then the SBOM and provenance as OCI
referrers and, with --sign-key, cosign signatures (.sig, .att).

On success it prints the pushed reference (repository@sha256:...; with --json the result) and
writes the result as JSON (at most 4096 bytes) to --termination-message:

  {"image","digest","tags","format","revision":{"url","rev","lastModified","narHash"},
   "layers":{"total","pushed","skipped","mounted"},"bytesPushed","seconds":{...},
   "attestations":{"sbom","provenance","signature","attestations"}}

On failure: a short message there, the full one on stderr, exit code 1.

A streamLayeredImage script (code from the flake) runs with a clean environment, as uid/gid
65534 when this step runs as root; it is refused when it could read the --auth-file or the
--sign-key (or its password file).

Flags:
  --from DIR                   the build step's directory (required)
${pushFlagsHelp}
  --unchanged-out-path P       with --unchanged-digest D: the image in use D was made from the Nix output P (same spec,
  --unchanged-digest D         same builder images); when this build's output is P too, nothing is pushed and the
                               result says "unchanged": true with digest D
  --stream-socket PATH         take a streamLayeredImage script's output from the stream step (stream-step
                               --socket PATH) through this Unix socket instead of running the script here
  --sortable-tag-time RFC3339  also push the tag <YYYYMMDDHHMMSS>-<12 hex of the commit> of this (UTC) time, which
                               image updaters can order (the controller passes it with rollout.policy Disabled)
  --termination-message PATH   where the JSON result (or the failure) goes (Kubernetes: /dev/termination-log)
  -h, --help                   this help`,
  async run(context) {
    const { values, positionals } = parseFlags(
      context.argv,
      {
        ...pushFlags,
        from: { type: "string" },
        "termination-message": { type: "string" },
        "sortable-tag-time": { type: "string" },
        "stream-socket": { type: "string" },
        "unchanged-out-path": { type: "string" },
        "unchanged-digest": { type: "string" },
      },
      "push-step",
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const terminationMessage = values["termination-message"];
    const log = pipelineLogger(context);
    const progress = new ProgressReporter({ stream: context.stderr, logger: log });
    let target: RegistryTarget | undefined;
    try {
      if (positionals.length > 0) throw new UsageError(`push-step: unexpected argument ${JSON.stringify(positionals[0])}`);
      if (values.from === undefined) throw new UsageError("push-step: --from is required");
      if (values.image === undefined) throw new UsageError("push-step: --image is required");
      const maxLayers = positiveInt("--max-layers", values["max-layers"], 1, 125);
      const compression = parseCompression(values.compression);
      const onCacheMiss = oneOf("--on-cache-miss", values["on-cache-miss"], ["upload", "hash-first"] as const);
      const imageConfig = parseImageConfigJson(values["image-config"]);
      if ((values["unchanged-out-path"] === undefined) !== (values["unchanged-digest"] === undefined)) {
        throw new UsageError("push-step: --unchanged-out-path and --unchanged-digest go together");
      }
      if (values["unchanged-digest"] !== undefined && !/^sha256:[a-f0-9]{64}$/.test(values["unchanged-digest"])) {
        throw new UsageError("push-step: --unchanged-digest must be sha256:<64 hex>");
      }
      const unchangedIf =
        values["unchanged-out-path"] !== undefined ? { outPath: values["unchanged-out-path"], digest: values["unchanged-digest"]! } : undefined;
      const config = values.config !== undefined ? await loadOperatorConfig({ file: values.config, env: {} }) : undefined;
      target = await openRegistryTarget({
        image: values.image,
        ...(values["auth-file"] !== undefined ? { authFile: values["auth-file"] } : {}),
        ...(values["plain-http"] ? { plainHttp: true } : {}),
        ...(values["ca-file"] !== undefined ? { caFile: values["ca-file"] } : {}),
        ...(config ? { config } : {}),
        logger: log,
      });
      const cache = layerCacheFrom(values["layer-cache"]);
      // The layer cache's MAC key exists before any flake code runs, so that a streamLayeredImage
      // script that could read it (and forge cache entries) is refused like one that could read the Secret.
      const cacheKeyFile = cache instanceof DirectoryLayerCache ? (await cache.ensureKey(), cache.keyFile) : undefined;
      // Credentials a streamLayeredImage script (flake code) must not be able to read.
      const protectedFiles = [values["auth-file"], cacheKeyFile, values["sign-key"], values["sign-key-password-file"]].filter(
        (f): f is string => f !== undefined,
      );
      const out = await runPushStep({
        from: values.from,
        registry: target.client,
        repository: target.repository,
        tags: [...(target.tag !== undefined ? [target.tag] : []), ...(values.tag ?? [])],
        ...(values["sortable-tag-time"] !== undefined ? { sortableTagTime: values["sortable-tag-time"] } : {}),
        ...(unchangedIf !== undefined ? { unchangedIf } : {}),
        ...(maxLayers !== undefined ? { maxLayers } : {}),
        ...(compression !== undefined ? { compression } : {}),
        ...(onCacheMiss !== undefined ? { onCacheMiss } : {}),
        imageConfig,
        cache,
        attest: await attestFromFlags(values, context.env),
        ...(protectedFiles.length > 0 ? { protectedFiles } : {}),
        ...(values["stream-socket"] !== undefined ? { streamSocket: values["stream-socket"] } : {}),
        progress,
        logger: log,
        signal: context.signal,
      });
      const json = fitResult(out.result);
      await writeTerminationMessage(terminationMessage, json);
      context.stdout.write(values.json ? `${JSON.stringify(out.result, null, 2)}\n` : `${out.result.image}\n`);
      return 0;
    } catch (error) {
      const code = await reportFailure(context, error, { terminationMessage, progress, secrets: target?.secrets ?? [] });
      // A failure that may pass (registry 5xx/429, timeout, network): the controller retries the build.
      return classifyRegistryFailure(error).retryable ? TRANSIENT_EXIT_CODE : code;
    } finally {
      target?.client.close();
      // The stream step stops waiting for a push that will never ask for the image.
      if (values["stream-socket"] !== undefined) await markExited(values["stream-socket"], PUSH_EXITED);
    }
  },
};
