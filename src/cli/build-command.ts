import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runBuildStep } from "../builder/build-step.ts";
import { ProgressReporter } from "../builder/progress-reporter.ts";
import type { PushStepResult } from "../builder/step-results.ts";
import { runPushStep } from "../builder/push-step.ts";
import { openRegistryTarget, type RegistryTarget } from "../builder/registry-target.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { checkAttribute } from "../flake/flake-ref-policy.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { buildHelp } from "./command-help.ts";
import {
  checkRefAllowed,
  defaultLayerCacheDir,
  imageConfigFromFlags,
  attestFromFlags,
  layerCacheFrom,
  oneOf,
  parseCompression,
  parseFormat,
  pipelineLogger,
  positiveInt,
  pushFlags,
  nixFromFlags,
  reportFailure,
} from "./builder-flags.ts";

/** `ref#attr` -> [ref, attr]; the attribute defaults to `default`. */
export function splitInstallable(text: string): { flake: string; attribute: string } {
  const hash = text.indexOf("#");
  if (hash < 0) return { flake: text, attribute: "default" };
  return { flake: text.slice(0, hash), attribute: text.slice(hash + 1) || "default" };
}

export const buildCommand: Command = {
  name: "build",
  help: buildHelp,
  async run(context) {
    const { values, positionals } = parseFlags(
      context.argv,
      {
        ...pushFlags,
        format: { type: "string" },
        entrypoint: { type: "string", multiple: true },
        cmd: { type: "string", multiple: true },
        env: { type: "string", multiple: true },
        workdir: { type: "string" },
        user: { type: "string" },
        expose: { type: "string", multiple: true },
        label: { type: "string", multiple: true },
        out: { type: "string" },
        "gc-root-dir": { type: "string" },
        keep: { type: "string" },
        substituter: { type: "string", multiple: true },
        "trusted-public-key": { type: "string", multiple: true },
        "allow-import-from-derivation": { type: "boolean" },
        "no-layer-cache": { type: "boolean" },
      },
      "build",
      true,
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError(`build: give exactly one <flake-ref>#<attribute> (got ${positionals.length} arguments)`);
    if (values.image === undefined) throw new UsageError("build: --image <registry>/<repository> is required");
    const { flake, attribute } = splitInstallable(positionals[0]!);
    const format = parseFormat(values.format);
    const maxLayers = positiveInt("--max-layers", values["max-layers"], 1, 125);
    const keep = positiveInt("--keep", values.keep, 1, 100);
    const compression = parseCompression(values.compression);
    const onCacheMiss = oneOf("--on-cache-miss", values["on-cache-miss"], ["upload", "hash-first"] as const);
    const imageConfig = imageConfigFromFlags(values);
    const config = await loadOperatorConfig({ file: values.config, env: {} });

    const log = pipelineLogger(context);
    const progress = new ProgressReporter({ stream: context.stderr, logger: log });
    let target: RegistryTarget | undefined;
    let workDir: string | undefined;
    const started = performance.now();
    try {
      checkRefAllowed(flake, config.flakeRefPolicy);
      const attributeProblem = checkAttribute(attribute);
      if (attributeProblem !== undefined) throw new UsageError(`build: attribute ${JSON.stringify(attribute.slice(0, 200))}: ${attributeProblem}`);
      target = await openRegistryTarget({
        image: values.image,
        ...(values["auth-file"] !== undefined ? { authFile: values["auth-file"] } : {}),
        ...(values["plain-http"] ? { plainHttp: true } : {}),
        ...(values["ca-file"] !== undefined ? { caFile: values["ca-file"] } : {}),
        config,
        logger: log,
      });
      // Before a long build: a readable signing key, a registry that answers and takes our credentials.
      const attest = await attestFromFlags(values, context.env);
      progress.phase("registry", target.host);
      await target.client.ping();

      const nix = nixFromFlags(values, context.env, log);
      workDir = values.out ?? (await mkdtemp(join(tmpdir(), "nix-image-build-")));
      await runBuildStep({
        nix,
        flake,
        attribute,
        format,
        outDir: workDir,
        ...(values["gc-root-dir"] !== undefined ? { gcRootDir: values["gc-root-dir"] } : {}),
        ...(keep !== undefined ? { keep } : {}),
        signal: context.signal,
        progress,
        logger: log,
      });
      const pushed = await runPushStep({
        from: workDir,
        registry: target.client,
        repository: target.repository,
        tags: [...(target.tag !== undefined ? [target.tag] : []), ...(values.tag ?? [])],
        ...(maxLayers !== undefined ? { maxLayers } : {}),
        ...(compression !== undefined ? { compression } : {}),
        ...(onCacheMiss !== undefined ? { onCacheMiss } : {}),
        imageConfig,
        cache: layerCacheFrom(values["no-layer-cache"] ? undefined : (values["layer-cache"] ?? defaultLayerCacheDir(context.env))),
        attest,
        progress,
        logger: log,
        signal: context.signal,
      });
      progress.done();
      // push-step already reports the build step's phases with its own (push = its total).
      const result: PushStepResult = { ...pushed.result, seconds: { ...pushed.result.seconds, total: Math.round(performance.now() - started) / 1000 } };
      context.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : `${result.image}\n`);
      return 0;
    } catch (error) {
      return await reportFailure(context, error, { progress, secrets: target?.secrets ?? [] });
    } finally {
      target?.client.close();
      if (workDir !== undefined && values.out === undefined) await rm(workDir, { recursive: true, force: true });
    }
  },
};
