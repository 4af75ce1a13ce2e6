import { loadOperatorConfig } from "../config/operator-config.ts";
import { classifyRegistryFailure } from "../oci/registry-error.ts";
import { fitResult } from "../builder/push-result.ts";
import { runPushStep } from "../builder/push-step.ts";
import { DirectoryLayerCache } from "../image/layer-cache.ts";
import { markExited, PUSH_EXITED } from "../builder/stream-handoff.ts";
import { openRegistryTarget, type RegistryTarget } from "../builder/registry-target.ts";
import { UsageError } from "./command.ts";
import { pushStepHelp } from "./command-help.ts";
import { attestFromFlags, layerCacheFrom, oneOf, parseCompression, parseImageConfigJson, positiveInt, pushFlags } from "./builder-flags.ts";
import { stepCommand } from "./run-step.ts";

export const pushStepCommand = stepCommand({
  name: "push-step",
  help: pushStepHelp,
  flags: {
    ...pushFlags,
    from: { type: "string" },
    "sortable-tag-time": { type: "string" },
    "stream-socket": { type: "string" },
    "unchanged-out-path": { type: "string" },
    "unchanged-digest": { type: "string" },
  },
  required: ["from", "image"],
  progress: true,
  // A failure that may pass (registry 5xx/429, timeout, network): the controller retries the build.
  transient: (error) => classifyRegistryFailure(error).retryable,
  async run({ values, context, log, progress, signal, secrets }) {
    let target: RegistryTarget | undefined;
    try {
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
        image: values.image!,
        ...(values["auth-file"] !== undefined ? { authFile: values["auth-file"] } : {}),
        ...(values["plain-http"] ? { plainHttp: true } : {}),
        ...(values["ca-file"] !== undefined ? { caFile: values["ca-file"] } : {}),
        ...(config ? { config } : {}),
        logger: log,
        signal,
      });
      secrets.push(...target.secrets);
      const cache = layerCacheFrom(values["layer-cache"]);
      // The layer cache's MAC key exists before any flake code runs, so that a streamLayeredImage
      // script that could read it (and forge cache entries) is refused like one that could read the Secret.
      const cacheKeyFile = cache instanceof DirectoryLayerCache ? (await cache.ensureKey(), cache.keyFile) : undefined;
      // Credentials a streamLayeredImage script (flake code) must not be able to read.
      const protectedFiles = [values["auth-file"], cacheKeyFile, values["sign-key"], values["sign-key-password-file"]].filter(
        (f): f is string => f !== undefined,
      );
      const out = await runPushStep({
        from: values.from!,
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
        progress: progress!,
        logger: log,
        signal,
      });
      return {
        terminationMessage: fitResult(out.result),
        stdout: values.json ? JSON.stringify(out.result, null, 2) : out.result.image,
      };
    } finally {
      target?.client.close();
      // The stream step stops waiting for a push that will never ask for the image.
      if (values["stream-socket"] !== undefined) await markExited(values["stream-socket"], PUSH_EXITED);
    }
  },
});
