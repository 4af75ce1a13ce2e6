// PURE: a SLSA v1 provenance statement (in-toto Statement v1) for a pushed image, from the build
// step's result: what was built (locked flake URL, attribute, system), from what (the source's
// revision and NAR hash, every flake.lock input with its NAR hash), by what (operator version,
// builder image, Nix version), when and in which Job.
import type { BuildResult } from "../builder/step-files.ts";
import { sha256Hex } from "./nix-hash.ts";

export const IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const IN_TOTO_MEDIA_TYPE = "application/vnd.in-toto+json";
export const SLSA_PROVENANCE_PREDICATE_TYPE = "https://slsa.dev/provenance/v1";
/** Names how this builder turns its parameters into an image (SLSA's buildType). */
const BUILD_TYPE = "https://github.com/nix-image-operator/nix-image-operator/build/v1";
const BUILDER_ID = "https://github.com/nix-image-operator/nix-image-operator";

export interface ProvenanceInput {
  /** `<host>/<repository>` and the manifest digest of the image. */
  subject: { name: string; digest: string };
  build: BuildResult;
  operatorVersion: string;
  /** The builder Job's image (`repo@sha256:…` when known). */
  builderImage?: string;
  /** The Job's name (SLSA's invocationId). */
  job?: string;
  /** RFC 3339: the build step's start (else the push step's) and the push's end. */
  startedOn?: string;
  finishedOn: string;
}

interface ResourceDescriptor {
  uri: string;
  name?: string;
  digest: Record<string, string>;
  annotations?: Record<string, string>;
}

// in-toto digest sets take lowercase hex; a NAR hash is the sha256 of the NAR serialisation,
// not of a file, so it gets its own key (and the Nix notation as an annotation).
function narDescriptor(uri: string, narHash: string, rev: string | undefined, name?: string): ResourceDescriptor {
  const hex = sha256Hex(narHash);
  return {
    uri,
    ...(name !== undefined ? { name } : {}),
    digest: { ...(rev ? { gitCommit: rev } : {}), ...(hex ? { narHash: hex } : {}) },
    annotations: { narHash },
  };
}

function digestSet(digest: string): Record<string, string> {
  const m = /^(sha256|sha512):([0-9a-f]+)$/.exec(digest);
  return m ? { [m[1]!]: m[2]! } : {};
}

/** A builder image reference's digest when it is pinned (`…@sha256:…`). */
function builderDependency(image: string): ResourceDescriptor {
  const at = image.lastIndexOf("@");
  return { uri: image, name: "builder-image", digest: at >= 0 ? digestSet(image.slice(at + 1)) : {} };
}

export function buildSlsaProvenance(input: ProvenanceInput): Record<string, unknown> {
  const b = input.build;
  const versions: Record<string, string> = { "nix-image-operator": input.operatorVersion };
  if (b.nixVersion) versions.nix = b.nixVersion;
  const startedOn = input.startedOn ?? b.startedAt;
  return {
    _type: IN_TOTO_STATEMENT_TYPE,
    subject: [{ name: input.subject.name, digest: digestSet(input.subject.digest) }],
    predicateType: SLSA_PROVENANCE_PREDICATE_TYPE,
    predicate: {
      buildDefinition: {
        buildType: BUILD_TYPE,
        externalParameters: { flake: b.flake, attribute: b.attribute },
        internalParameters: { system: b.system, format: b.format, outPath: b.outPath, ...(b.drvPath ? { drvPath: b.drvPath } : {}) },
        resolvedDependencies: [
          narDescriptor(b.revision.url, b.revision.narHash, b.revision.rev, "source"),
          ...(b.inputs ?? []).map((i) => narDescriptor(i.url, i.narHash, i.rev, i.name)),
        ],
      },
      runDetails: {
        builder: {
          id: BUILDER_ID,
          version: versions,
          ...(input.builderImage ? { builderDependencies: [builderDependency(input.builderImage)] } : {}),
        },
        metadata: {
          ...(input.job ? { invocationId: input.job } : {}),
          ...(startedOn ? { startedOn } : {}),
          finishedOn: input.finishedOn,
        },
      },
    },
  };
}
