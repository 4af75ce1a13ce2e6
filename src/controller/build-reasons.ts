import type { BuildRecord } from "../api/niximage.ts";

/**
 * Why a build is needed, as a list of named detectors. Each looks at one input and compares it
 * with what the last image build was made from; the reasons go on the Job and into status.
 * A failed build counts as "made from" its inputs too, so a broken revision is not rebuilt in
 * a loop: a new commit, a spec change or the rebuild annotation starts the next attempt.
 */
export interface BuildInputs {
  specHash: string;
  builderHash: string;
  rebuildToken: string | undefined;
  polledRevision: string | undefined;
  last: BuildRecord | undefined;
}

export type BuildReason = "SpecChanged" | "RevisionChanged" | "RebuildRequested" | "BuilderImageChanged";

type Detector = (inputs: BuildInputs) => BuildReason | undefined;

const revisionOf = (last: BuildRecord) =>
  last.revision?.rev ??
  /[?&/]rev=([0-9a-f]{40})|\/([0-9a-f]{40})(?:[?]|$)/
    .exec(last.flake ?? "")
    ?.slice(1)
    .find(Boolean);

export const detectors: Record<BuildReason, Detector> = {
  SpecChanged: ({ specHash, last }) => (!last || last.specHash !== specHash ? "SpecChanged" : undefined),
  RevisionChanged: ({ polledRevision, last }) => (last && polledRevision && revisionOf(last) !== polledRevision ? "RevisionChanged" : undefined),
  RebuildRequested: ({ rebuildToken, last }) =>
    rebuildToken !== undefined && rebuildToken !== "" && rebuildToken !== last?.rebuildToken ? "RebuildRequested" : undefined,
  BuilderImageChanged: ({ builderHash, last }) => (last?.builderHash !== undefined && last.builderHash !== builderHash ? "BuilderImageChanged" : undefined),
};

export function buildReasons(inputs: BuildInputs): BuildReason[] {
  return Object.values(detectors)
    .map((detect) => detect(inputs))
    .filter((reason): reason is BuildReason => reason !== undefined);
}
