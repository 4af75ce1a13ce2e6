// The help texts of the CLI's commands, apart from the commands: `<command> --help` loads only this
// file, not the command's dependencies (zod, the registry client, ...), so it starts in a few
// milliseconds. Plain strings, no imports.

/** The push target's flags (build and push-step). */
const pushFlagsHelp = `  --image REPO            registry host and repository, e.g. registry.example.com/acme/web (required)
  --tag T                 an extra tag (repeatable); an immutable rev-<commit>-<out hash> tag is always pushed
  --auth-file FILE        dockerconfigjson with credentials for the registry (e.g. ~/.docker/config.json)
  --plain-http            talk plain HTTP to the registry (local test registries only)
  --ca-file FILE          PEM CA bundle to trust for the registry's TLS certificate
  --max-layers N          upper bound on image layers, 1..125 (default 100); the app's paths are last
  --compression C         layer compression: none (default; digests equal diff_ids) or gzip
  --image-config JSON     image settings as spec.image.config: {"entrypoint":[..],"cmd":[..],
                          "env":[{"name":..,"value":..}],"workingDir":..,"user":..,"exposedPorts":[..],"labels":{..}}
  --layer-cache DIR       cache of store-path set -> layer digest (unchanged layers are not re-read;
                          build: default $NIX_IMAGE_OPERATOR_CACHE or ~/.cache/nix-image-operator/layers)
  --on-cache-miss M       upload (default: stream new layers straight to the registry) or hash-first
                          (hash, ask the registry, upload only what it lacks: reads new layers twice)
  --config FILE           operator config (flakeRefPolicy, registries[].plainHttp/caFile)
  --json                  print the result as JSON instead of the image reference
  --no-sbom               attach no SBOM (default: a CycloneDX 1.6 SBOM of the closure, as an OCI referrer)
  --no-provenance         attach no provenance (default: a SLSA v1 in-toto statement, as an OCI referrer)
  --sign-key FILE         ECDSA P-256 private key PEM (plain, or cosign's encrypted format): sign the
                          image (cosign .sig) and the SBOM/provenance (cosign .att, DSSE in-toto)
  --sign-key-password-file FILE
                          password of an encrypted --sign-key (else $COSIGN_PASSWORD)
  --builder-image REF     the builder image, recorded in the provenance
  --job NAME              the builder Job's name, recorded in the provenance`;

export const buildHelp = `Usage: nix-image-operator build <flake-ref>[#<attribute>] --image <registry>/<repository> [flags]

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
  -h, --help              this help`;

export const buildStepHelp = `Usage: nix-image-operator build-step --flake REF --attribute ATTR --out DIR [flags]

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
  -h, --help                   this help`;

export const cacheStepHelp = `Usage: nix-image-operator cache-step --from DIR --to STORE-URL --secret-key-file FILE [flags]

The optional cache step of the builder Job (config.binaryCache): copies the closure of the build
step's result to a Nix binary cache with \`nix copy --to\`, signed with the key from
\`nix key generate-secret\`. It runs no flake code and is the only step that holds the signing key
and the upload credentials. Paths the cache has are skipped by Nix.

A failed copy is reported (stderr, and "copied": false with the error in the result) but exits 0:
the image is pushed either way; a cache is an optimisation. Usage errors exit 1.

Result (stdout and --termination-message):
  {"cache","outPath","closurePaths","copied","seconds","error"?}

Flags:
  --from DIR                   the build step's directory (required)
  --to STORE-URL               file://, https://, s3:// or http:// binary cache (store parameters allowed,
                               e.g. ?compression=zstd) (required)
  --secret-key-file FILE       the signing key (required)
  --aws-credentials-file FILE  AWS shared credentials for s3:// (AWS_SHARED_CREDENTIALS_FILE)
  --netrc-file FILE            netrc with credentials for https:// uploads
  --timeout DURATION           give up on the copy after this long (e.g. 10m)
  --termination-message PATH   where the JSON result goes (Kubernetes: /dev/termination-log)
  -h, --help                   this help`;

export const controllerHelp = `Usage: nix-image-operator controller [--config FILE] [--kubeconfig FILE] [--metrics-address HOST:PORT]

Watches NixImages, runs builder Jobs on leased Nix store volumes, records results in status.
With leader election on (the default), only one replica acts; the others keep warm caches and
take over within the lease duration when the leader goes away.

Configuration comes from the file named by --config or NIX_IMAGE_OPERATOR_CONFIG (YAML), with
LOG_LEVEL, WATCH_NAMESPACES, METRICS_ADDRESS and LEADER_ELECTION_NAMESPACE overriding single
settings. Every setting and its default: README, section "Operator configuration".

Flags:
  --config FILE              operator config (YAML)
  --kubeconfig FILE          kubeconfig to use (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
  --metrics-address H:P      serve /healthz, /readyz and /metrics here (default from config: 0.0.0.0:8080)
  -h, --help                 this help

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a lost lease or a failed shutdown.`;

export const crdHelp = `Usage: nix-image-operator crd [--config FILE]

Prints the NixImage CRD as YAML. Its CEL rules carry the flake ref policy of the operator
config (defaults: github, gitlab, sourcehut, git+https, git+ssh, tarball+https, https), so a
cluster whose operator allows more schemes applies the CRD made from the same config:

  nix-image-operator crd --config operator.yaml | kubectl apply --server-side -f -

Flags:
  --config FILE   operator config whose flakeRefPolicy the CRD enforces
  -h, --help      this help`;

export const fetchStepHelp = `Usage: nix-image-operator fetch-step --flake REF --out DIR [--credentials-dir DIR]... [flags]

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
  -h, --help                   this help`;

export const prepareStoreHelp = `Usage: nix-image-operator prepare-store --volume DIR [--nix-root DIR] [--termination-message PATH]

The prepare step of the builder Job. The store volume is mounted at DIR while the builder
image's own /nix is still visible (later steps mount the volume at /nix):

  - a volume without a Nix database gets a copy of the image's /nix (store, database, var),
    preserving modes, symlinks, hard links and mtimes; the copy is moved into place at the end,
    the database last, so an interrupted copy is redone on the next run;
  - a volume with a database must have the same Nix database schema version
    (var/nix/db/schema) as the image's Nix; otherwise the step fails with a message saying so.

With --layer-cache DIR --layer-cache-owner UID, the layer cache directory (a separate
sub-directory of the volume, which the build step does not mount) is handed to that user: the
push step runs as non-root (65532) and keeps its store-path-set -> layer digest cache there.

Prints {"action":"seeded"|"checked","schema":...} on success. Exit code 1 on failure.

Flags:
  --volume DIR                 where the store volume is mounted in this step (required)
  --nix-root DIR               the image's own Nix root (default /nix)
  --layer-cache DIR            the push step's layer cache directory (created if missing)
  --layer-cache-owner UID      owner of --layer-cache (the push step's uid)
  --termination-message PATH   write a short error here on failure (Kubernetes: /dev/termination-log)
  -h, --help                   this help`;

export const pushStepHelp = `Usage: nix-image-operator push-step --from DIR --image REPO [flags]

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
  -h, --help                   this help`;

export const streamStepHelp = `Usage: nix-image-operator stream-step --from DIR --socket PATH [--termination-message PATH]

The builder Job's stream step. When the build step's result (DIR/result.json) is a
streamLayeredImage script, runs it (argv only, environment PATH=/usr/bin:/bin, HOME and TMPDIR
/tmp) and copies its stdout to the push step, which listens on the Unix socket PATH
(push-step --stream-socket PATH). This step holds no Secret, no token and no layer cache: the
script is code from the flake. For any other format it exits 0 at once.

Exit code 0 when the image was streamed or nothing was to stream; 1 with a message on stderr (and
in --termination-message) when the script failed.

Flags:
  --from DIR                   the build step's directory (required)
  --socket PATH                the push step's socket, in a directory both steps share (required)
  --termination-message PATH   where the outcome goes (Kubernetes: /dev/termination-log)
  -h, --help                   this help`;

export const validateHelp = `Usage: nix-image-operator validate [--config FILE] [--json] <glob>... [!<glob>]...

Loads every YAML file matching the globs (multi-document files are fine; other kinds are
ignored), validates each NixImage with the same schema and flake ref policy the API server and
the controller use, and prints every problem as

  file:document: field: message

Exit code 0 when all NixImages are valid, 1 when any is not, 2 on a usage error.
A glob starting with ! excludes files (quote it in the shell).

Examples:
  nix-image-operator validate 'deploy/**/*.yaml'
  nix-image-operator validate 'apps/**/*.yaml' '!apps/**/kustomization.yaml'

Flags:
  --config FILE   operator config whose flakeRefPolicy applies (default: the built-in policy)
  --json          print a JSON report instead of lines
  -h, --help      this help`;

export const warmReportHelp = `Usage: nix-image-operator warm-report --from DIR [--termination-message PATH]

The last step of a warm build's Job (which pushes nothing). Reads the build step's directory
(result.json, closure.json and, when the build step ran with --update-inputs, locked-closure.json)
and writes the result as JSON (at most 4096 bytes) to --termination-message, where the controller
reads it into status.lastWarmBuild:

  {"revision":{"url","rev","lastModified","narHash"},
   "closureDiff":{"added":[{"name","to"}],"removed":[{"name","from"}],"changed":[{"name","from","to"}]},
   "seconds":{...}}

closureDiff compares the closure built from the committed lock file with the one built against the
updated inputs, by package name and version; it is there only with --update-inputs. Long lists are
cut to fit; the full diff (with totals) is printed on stdout.

Exit code 0 on success; 1 with a message on stderr (and in --termination-message) on failure.

Flags:
  --from DIR                   the build step's directory (required)
  --termination-message PATH   where the JSON result (or the failure) goes (Kubernetes: /dev/termination-log)
  -h, --help                   this help`;
