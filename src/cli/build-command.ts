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
  pushFlagsHelp,
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
  help: `Usage: nix-image-operator build <flake-ref>[#<attribute>] --image <registry>/<repository> [flags]

Builds a flake output with the local Nix and pushes it as an OCI image straight from the Nix
store: the build step and the push step of the builder Job, in one process with the same code.

  1. checks the ref against the flake ref policy (the operator config's flakeRefPolicy; --config
     to widen it), and that the registry answers and accepts the credentials
  2. locks the ref (nix flake metadata) and builds <locked url>#<attribute> (argv, never a shell)
  3. detects what the attribute is (--format to force it): a plain package (the image is made
     from its closure: layers by popularity, the app's own paths last), a docker-archive
     tarball (dockerTools.buildImage/buildLayeredImage), a streamLayeredImage script (run, its
     output consumed while it runs), or a nix2container image JSON
  4. pushes: blobs the registry has are skipped, new layers go tar -> sha256 -> upload in one
     pass; then config, manifest, and the tags: rev-<commit>-<out hash> (immutable) + --tag ones
  5. attaches a CycloneDX SBOM of the closure and a SLSA provenance to the digest as OCI
     referrers (--no-sbom, --no-provenance to skip); with --sign-key, cosign-compatible
     signatures of the image (.sig) and of both documents (.att)
  6. prints <registry>/<repository>@sha256:<digest> (with --json: image, digest, tags, revision,
     layers pushed/skipped/mounted, bytesPushed, seconds per phase, attestation digests)

Progress goes to stderr: one updating line on a terminal, JSON log lines otherwise.
Exit code 0 on success, 1 on a failure (one message on stderr), 2 on a usage error.

Examples:
  nix-image-operator build github:acme/shop#web --image registry.example.com/acme/web --tag latest
  nix-image-operator build 'git+https://git.example.com/shop?ref=main#web' --image 127.0.0.1:5000/web \\
    --plain-http --entrypoint /bin/web --env PORT=8080 --json

Flags:
${pushFlagsHelp}
  --format F              auto (default), package, docker-archive, stream-layered, nix2container
  --entrypoint ARG        image entrypoint, one argv element per flag (repeatable; write
                          --entrypoint=-c for an element starting with a dash);
                          default for a package: <out>/bin/<meta.mainProgram or pname or name>
  --cmd ARG               image cmd, one argv element per flag (repeatable)
  --env NAME=VALUE        image environment (repeatable); PATH and SSL_CERT_FILE get defaults
  --workdir DIR           image working directory
  --user USER[:GROUP]     image user
  --expose PORT[/PROTO]   exposed port (repeatable)
  --label KEY=VALUE       image label (repeatable; the only setting applied to prebuilt images)
  --no-layer-cache        use no layer cache (every new layer is uploaded; see --on-cache-miss)
  --out DIR               keep the build step's result.json and closure.json in DIR
  --gc-root-dir DIR       register GC roots for the build under DIR (kept: --keep generations)
  --keep N                generations of GC roots kept (default 5)
  --substituter URL       extra https:// binary cache (repeatable)
  --trusted-public-key K  its public key (repeatable)
  --allow-import-from-derivation
                          allow IFD for this flake
  -h, --help              this help`,
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
