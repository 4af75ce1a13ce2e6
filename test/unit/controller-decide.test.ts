// decide() is the reconciler's pure brain: observed state + now -> actions, status, requeueAfter.
// Every branch is driven here with a fixed `now`, no timers and no API server.
import { describe, expect, it } from "vitest";
import type { NixImage, NixImageStatus } from "../../src/api/niximage.ts";
import { buildReasons, detectors } from "../../src/controller/build-reasons.ts";
import { builderHash, specHash } from "../../src/controller/build-inputs.ts";
import { decide as decideOnly, type Action, type Decision, type Observed } from "../../src/controller/decide.ts";
import { summarize } from "../../src/controller/summarize.ts";
import type { JobView } from "../../src/controller/job-outcome.ts";
import { mergePatch } from "../../src/controller/status-patch.ts";
import type { WarmSlot, WarmState } from "../../src/controller/warm-schedule.ts";
import { leaseGraceMs } from "../../src/controller/store-pool.ts";
import { digest1, imageJob, now, nowIso, observe, pushResultFor, repository, rev1, rev2, testConfig, testImage, volume } from "./controller-fixtures.ts";

const config = testConfig();

/** decide, with the status the reconciler writes when every action succeeds (conditions folded in). */
function decide(observed: Observed): Decision {
  const d = decideOnly(observed);
  const previous = observed.image.status ?? {};
  return { ...d, status: summarize({ previous, decision: d, generation: observed.image.metadata.generation ?? 0, now: observed.now }).status };
}

const conditionOf = (d: Decision, type: string) => d.status.conditions?.find((c) => c.type === type);
const ofType = <T extends Action["type"]>(d: Decision, type: T) => d.actions.filter((a): a is Extract<Action, { type: T }> => a.type === type);
const createdJobs = (d: Decision) => ofType(d, "createJob");
const createdJob = (d: Decision) => {
  const jobs = createdJobs(d);
  expect(jobs).toHaveLength(1);
  return jobs[0]!;
};
const state = (d: Decision) => {
  const ready = conditionOf(d, "Ready");
  const reconciling = conditionOf(d, "Reconciling");
  const stalled = conditionOf(d, "Stalled");
  return `Ready=${ready?.status}/${ready?.reason} Reconciling=${reconciling?.status} Stalled=${stalled?.status}`;
};

/** The status a controller would have written after `web-build-1` succeeded with `rev1`. */
function builtStatus(image: NixImage, job: JobView): NixImageStatus {
  const first = decide(observe(image, { jobs: [job] }));
  expect(state(first)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
  return first.status;
}

/** An image whose build of record (web-build-1) succeeded from the current spec, and that Job. */
function builtImage(spec: Parameters<typeof testImage>[0] = {}, annotations?: Record<string, string>) {
  const bare = testImage(spec, annotations ? { annotations } : {});
  const job = imageJob(bare, config, {
    number: 1,
    flake: `github:acme/shop/${rev1}`,
    result: pushResultFor(digest1, rev1),
    completionTime: "2026-11-22T09:10:00Z",
  });
  const status = builtStatus(bare, job);
  const image = testImage(spec, { status, ...(annotations ? { annotations } : {}) });
  return { image, job, status };
}

describe("decide: first build", () => {
  it("starts build 1 on a new store volume, records it as Running, and says InProgress/Building", () => {
    const d = decide(observe(testImage()));
    const create = createdJob(d);
    expect(create.job.metadata?.name).toBe("web-build-1");
    expect(create.job.metadata?.annotations?.["niximage.io/reasons"]).toBe("SpecChanged");
    expect(create.lease).toEqual({ create: expect.objectContaining({ metadata: expect.objectContaining({ name: "niximage-store-0" }) }) });
    expect(create.job.spec?.template.spec?.volumes?.find((v) => v.name === "store")?.persistentVolumeClaim?.claimName).toBe("niximage-store-0");
    expect(ofType(d, "event")).toEqual([expect.objectContaining({ eventType: "Normal", reason: "BuildStarted" })]);
    expect(d.status).toMatchObject({
      buildCount: 1,
      observedGeneration: 1,
      lastBuild: {
        job: "web-build-1",
        number: 1,
        kind: "Image",
        reasons: ["SpecChanged"],
        result: "Running",
        specHash: specHash(testImage()),
        builderHash: builderHash(config),
      },
    });
    expect(d.status.latestImage).toBeUndefined();
    expect(state(d)).toBe("Ready=Unknown/Building Reconciling=True Stalled=False");
    for (const c of d.status.conditions ?? []) expect(c).toMatchObject({ lastTransitionTime: nowIso, observedGeneration: 1 });
    expect(d.requeueAfterMs).toBeUndefined();
  });

  it("pins the build to the polled revision", () => {
    const image = testImage({ triggers: { interval: "5m" } });
    const d = decide(observe(image, { polledRevision: rev1, nextPollInMs: 300_000 }));
    expect(createdJob(d).job.metadata?.annotations?.["niximage.io/revision"]).toBe(`github:acme/shop/${rev1}`);
    expect(d.status.lastBuild?.flake).toBe(`github:acme/shop/${rev1}`);
    expect(d.requeueAfterMs).toBe(300_000);
  });

  it("with a push Secret: asks for the Secret check first and acts on nothing until then", () => {
    const image = testImage({ image: { repository, pushSecretRef: { name: "regcred" } } });
    const unknown = decide(observe(image));
    expect(unknown.needsPushSecretCheck).toBe(true);
    expect(unknown.actions).toEqual([]);
    const found = decide(observe(image, { pushSecretFound: true }));
    expect(found.needsPushSecretCheck).toBeUndefined();
    expect(createdJob(found).job.metadata?.name).toBe("web-build-1");
  });
});

describe("decide: steady state", () => {
  it("records a succeeded build once (event), then does nothing: Ready, no actions, an identical status", () => {
    const bare = testImage();
    const attestations = { sbom: `sha256:${"a".repeat(64)}`, signature: `sha256:${"c".repeat(64)}` };
    const job = imageJob(bare, config, { number: 1, result: { ...pushResultFor(), attestations }, completionTime: "2026-11-22T09:10:00Z" });
    const first = decide(observe(bare, { jobs: [job] }));
    expect(first.status).toMatchObject({
      latestImage: `${repository}@${digest1}`,
      latestRevision: { rev: rev1 },
      lastBuild: {
        job: "web-build-1",
        result: "Succeeded",
        digest: digest1,
        layers: { pushed: 2, skipped: 40 },
        bytesPushed: 4096,
        attestations,
        durations: { build: 12, push: 3 },
      },
    });
    expect(ofType(first, "event")).toEqual([expect.objectContaining({ reason: "BuildSucceeded", eventType: "Normal" })]);
    expect(ofType(first, "event")[0]!.message).toContain(`${repository}@${digest1}`);

    const image = testImage({}, { status: first.status });
    const again = decide(observe(image, { jobs: [job], now: new Date(now.getTime() + 3_600_000) }));
    expect(again.actions).toEqual([]);
    expect(state(again)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
    expect(mergePatch(first.status, again.status)).toBeUndefined();
    expect(again.requeueAfterMs).toBeUndefined();
  });

  it("keeps the status of a build whose Job was pruned or lost", () => {
    const { image, status } = builtImage();
    const d = decide(observe(image, { jobs: [] }));
    expect(d.actions).toEqual([]);
    expect(mergePatch(status, d.status)).toBeUndefined();
  });

  it("a running build: InProgress/Building, no second Job", () => {
    const image = testImage(
      {},
      { status: { buildCount: 1, lastBuild: { job: "web-build-1", number: 1, kind: "Image", reasons: ["SpecChanged"], result: "Running" } } },
    );
    const running = imageJob(image, config, { number: 1, state: "Running" });
    const d = decide(
      observe(image, { jobs: [running], namespaceJobs: new Map([["web-build-1", true]]), storeVolumes: [volume("niximage-store-0", "web-build-1", nowIso)] }),
    );
    expect(createdJobs(d)).toEqual([]);
    expect(state(d)).toBe("Ready=Unknown/Building Reconciling=True Stalled=False");
    expect(conditionOf(d, "Reconciling")?.message).toContain("web-build-1 is running (SpecChanged)");
  });

  it("a running build that cannot progress: stays Running (Ready=Unknown, Reconciling=True) with the blocker's reason, warns once, looks again", () => {
    const image = testImage(
      {},
      { status: { buildCount: 1, lastBuild: { job: "web-build-1", number: 1, kind: "Image", reasons: ["SpecChanged"], result: "Running" } } },
    );
    const blocked = imageJob(image, config, {
      number: 1,
      state: "Running",
      blocked: { reason: "BuilderImagePullFailed", message: "step prepare cannot pull its image nix.test/nix:2.28" },
      recheckInMs: 5000,
    });
    const observed = observe(image, {
      jobs: [blocked],
      namespaceJobs: new Map([["web-build-1", true]]),
      storeVolumes: [volume("niximage-store-0", "web-build-1", nowIso)],
    });
    const d = decide(observed);
    expect(createdJobs(d)).toEqual([]);
    expect(state(d)).toBe("Ready=Unknown/BuilderImagePullFailed Reconciling=True Stalled=False");
    expect(conditionOf(d, "Reconciling")?.message).toContain("web-build-1 is running but cannot progress: step prepare cannot pull");
    expect(d.status.lastBuild?.result).toBe("Running");
    expect(d.requeueAfterMs).toBe(5000);
    expect(ofType(d, "event")).toEqual([expect.objectContaining({ eventType: "Warning", reason: "BuilderImagePullFailed" })]);
    // The next reconcile, with the condition written: no second Event.
    const again = decide({ ...observed, image: testImage({}, { status: d.status }) });
    expect(ofType(again, "event")).toEqual([]);
    expect(state(again)).toBe("Ready=Unknown/BuilderImagePullFailed Reconciling=True Stalled=False");
    // Unblocked (the image was pushed): back to Building.
    const unblocked = decide({
      ...observed,
      image: testImage({}, { status: again.status }),
      jobs: [{ ...blocked, blocked: undefined, recheckInMs: undefined }],
    });
    expect(state(unblocked)).toBe("Ready=Unknown/Building Reconciling=True Stalled=False");
  });

  it("a blocked warm build warns once (per process) and leaves the image's conditions as they are", () => {
    const { image } = builtImage();
    const warm: JobView = {
      ...imageJob(image, config, { number: 1, state: "Running" }),
      name: "web-warm-1",
      kind: "Warm",
      blocked: { reason: "StoreVolumePending", message: "store volume niximage-store-1 is still Pending" },
    };
    const d = decide(observe(image, { jobs: [warm] }));
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
    expect(ofType(d, "event")).toEqual([expect.objectContaining({ reason: "StoreVolumePending", once: "web-warm-1:StoreVolumePending" })]);
  });

  it("a running build started by a controller that crashed before its status write is adopted", () => {
    // No status at all, but the Job exists: record it, start nothing.
    const image = testImage();
    const d = decide(observe(image, { jobs: [imageJob(image, config, { number: 1, state: "Running" })] }));
    expect(createdJobs(d)).toEqual([]);
    expect(d.status.lastBuild).toMatchObject({ job: "web-build-1", result: "Running" });
    expect(d.status.buildCount).toBe(1);
  });
});

describe("decide: build reasons", () => {
  const table: { name: string; change: (b: ReturnType<typeof builtImage>) => { image: NixImage; over?: Partial<Observed> }; reasons: string[] }[] = [
    { name: "spec changed (attribute)", change: ({ status }) => ({ image: testImage({ attribute: "web" }, { status }) }), reasons: ["SpecChanged"] },
    {
      name: "spec changed (image config)",
      change: ({ status }) => ({ image: testImage({ image: { repository, config: { cmd: ["--port", "80"] } } }, { status }) }),
      reasons: ["SpecChanged"],
    },
    { name: "new revision polled", change: ({ image }) => ({ image, over: { polledRevision: rev2 } }), reasons: ["RevisionChanged"] },
    {
      name: "rebuild annotation",
      change: ({ status }) => ({ image: testImage({}, { status, annotations: { "niximage.io/rebuild": "now" } }) }),
      reasons: ["RebuildRequested"],
    },
    {
      name: "builder image changed",
      change: ({ image }) => ({ image, over: { config: testConfig({ builder: { nixImage: "nix.test/nix:2.29" } }) } }),
      reasons: ["BuilderImageChanged"],
    },
    {
      name: "several at once, in detector order",
      change: ({ status }) => ({
        image: testImage({ attribute: "web" }, { status, annotations: { "niximage.io/rebuild": "x" } }),
        over: { polledRevision: rev2 },
      }),
      reasons: ["SpecChanged", "RevisionChanged", "RebuildRequested"],
    },
  ];
  it.each(table)("$name -> build 2 with $reasons", ({ change, reasons }) => {
    const built = builtImage();
    const { image, over } = change(built);
    const d = decide(observe(image, { jobs: [built.job], ...over }));
    const job = createdJob(d).job;
    expect(job.metadata?.name).toBe("web-build-2");
    expect(job.metadata?.annotations?.["niximage.io/reasons"]).toBe(reasons.join(","));
    expect(d.status.lastBuild).toMatchObject({ job: "web-build-2", number: 2, reasons, result: "Running" });
    // The previous image stays the latest until the new one is pushed.
    expect(d.status.latestImage).toBe(`${repository}@${digest1}`);
  });

  it("nothing changed: no detector fires", () => {
    const built = builtImage({}, { "niximage.io/rebuild": "" });
    expect(decide(observe(built.image, { jobs: [built.job], polledRevision: rev1 })).actions).toEqual([]);
  });

  it("fields that only steer the controller do not rebuild", () => {
    const built = builtImage();
    for (const spec of [
      { triggers: { interval: "10m" } },
      { historyLimit: { successful: 1, failed: 1 } },
      { build: { timeout: "2h" } },
      { rollout: { policy: "Disabled" as const } },
    ]) {
      const image = testImage(spec, { status: built.status });
      expect(createdJobs(decide(observe(image, { jobs: [built.job], polledRevision: rev1 })))).toEqual([]);
    }
  });

  describe("detectors", () => {
    const last = { job: "web-build-1", number: 1, reasons: [], result: "Succeeded" as const, specHash: "s", builderHash: "b", rebuildToken: "t1" };
    const base = { specHash: "s", builderHash: "b", rebuildToken: "t1", polledRevision: undefined, last };
    const table: [string, Partial<Parameters<typeof buildReasons>[0]>, string[]][] = [
      ["no build yet", { last: undefined, rebuildToken: undefined }, ["SpecChanged"]],
      ["no build yet, with a token and a revision", { last: undefined, rebuildToken: "t", polledRevision: rev1 }, ["SpecChanged", "RebuildRequested"]],
      ["same inputs", {}, []],
      ["spec hash differs", { specHash: "s2" }, ["SpecChanged"]],
      ["revision from the result", { polledRevision: rev2, last: { ...last, revision: { url: "u", rev: rev1 } } }, ["RevisionChanged"]],
      ["same revision from the result", { polledRevision: rev1, last: { ...last, revision: { url: "u", rev: rev1 } } }, []],
      ["revision from a pinned github ref (a failed build has no result)", { polledRevision: rev1, last: { ...last, flake: `github:acme/shop/${rev1}` } }, []],
      ["revision from a pinned git ref", { polledRevision: rev1, last: { ...last, flake: `git+https://example.com/x.git?ref=main&rev=${rev1}` } }, []],
      [
        "other revision than the pinned ref",
        { polledRevision: rev2, last: { ...last, flake: `git+https://example.com/x.git?rev=${rev1}` } },
        ["RevisionChanged"],
      ],
      ["unpinned last build and a polled revision", { polledRevision: rev1, last: { ...last, flake: "github:acme/shop" } }, ["RevisionChanged"]],
      ["no poll", { polledRevision: undefined, last: { ...last, flake: `github:acme/shop/${rev1}` } }, []],
      ["rebuild token changed", { rebuildToken: "t2" }, ["RebuildRequested"]],
      ["rebuild token removed", { rebuildToken: undefined }, []],
      ["empty rebuild token", { rebuildToken: "" }, []],
      ["builder changed", { builderHash: "b2" }, ["BuilderImageChanged"]],
      ["last build without a builder hash", { builderHash: "b2", last: { ...last, builderHash: undefined } }, []],
    ];
    it.each(table)("%s", (_name, inputs, expected) => {
      expect(buildReasons({ ...base, ...inputs })).toEqual(expected);
    });
    it("has one detector per reason", () => {
      expect(Object.keys(detectors).sort()).toEqual(["BuilderImageChanged", "RebuildRequested", "RevisionChanged", "SpecChanged"]);
    });
  });
});

describe("decide: failed builds", () => {
  function failedImage() {
    const built = builtImage({ triggers: { interval: "5m" } });
    const failedJob = imageJob(built.image, config, {
      number: 2,
      state: "Failed",
      reasons: ["RevisionChanged"],
      flake: `github:acme/shop/${rev2}`,
      failure: { step: "build", exitCode: 1, reason: "Error", message: "error: builder for '/nix/store/x-web.drv' failed with exit code 2" },
    });
    const first = decide(observe(built.image, { jobs: [built.job, failedJob], polledRevision: rev2 }));
    return { built, failedJob, first, image: testImage({ triggers: { interval: "5m" } }, { status: first.status }) };
  }

  it("records the failure with details, warns once, keeps the previous image, and is Stalled", () => {
    const { first } = failedImage();
    expect(first.status.lastBuild).toMatchObject({ job: "web-build-2", result: "Failed", failure: { step: "build", exitCode: 1 } });
    expect(first.status.latestImage).toBe(`${repository}@${digest1}`);
    expect(state(first)).toBe("Ready=False/BuildFailed Reconciling=False Stalled=True");
    expect(conditionOf(first, "Stalled")?.message).toContain("stays in use");
    expect(conditionOf(first, "Stalled")?.message).toContain("niximage.io/rebuild");
    expect(createdJobs(first)).toEqual([]);
    const events = ofType(first, "event");
    expect(events).toEqual([expect.objectContaining({ eventType: "Warning", reason: "BuildFailed" })]);
    expect(events[0]!.message).toContain("failed in step build (exit 1)");
  });

  it("is not retried with the same inputs (and warns no more)", () => {
    const { image, failedJob, built, first } = failedImage();
    const again = decide(observe(image, { jobs: [built.job, failedJob], polledRevision: rev2 }));
    expect(again.actions).toEqual([]);
    expect(mergePatch(first.status, again.status)).toBeUndefined();
  });

  const retries: [string, (image: NixImage, status: NixImageStatus) => { image: NixImage; over?: Partial<Observed> }, string][] = [
    ["a new revision", (image) => ({ image, over: { polledRevision: "3".repeat(40) } }), "RevisionChanged"],
    ["a spec change", (_image, status) => ({ image: testImage({ triggers: { interval: "5m" }, attribute: "fixed" }, { status }) }), "SpecChanged"],
    [
      "a rebuild token",
      (_image, status) => ({ image: testImage({ triggers: { interval: "5m" } }, { status, annotations: { "niximage.io/rebuild": "retry" } }) }),
      "RebuildRequested",
    ],
  ];
  it.each(retries)("is retried on %s", (_name, change, reason) => {
    const { image, failedJob, built } = failedImage();
    const next = change(image, image.status!);
    const d = decide(observe(next.image, { jobs: [built.job, failedJob], polledRevision: rev2, ...next.over }));
    expect(createdJob(d).job.metadata?.name).toBe("web-build-3");
    expect(d.status.lastBuild).toMatchObject({ job: "web-build-3", reasons: [reason] });
  });

  it("a failure of the very first build: Stalled without an image to keep", () => {
    const image = testImage();
    const failed = imageJob(image, config, { number: 1, state: "Failed", failure: { step: "push", exitCode: 1, message: "unauthorized" } });
    const d = decide(observe(image, { jobs: [failed] }));
    expect(state(d)).toBe("Ready=False/BuildFailed Reconciling=False Stalled=True");
    expect(conditionOf(d, "Stalled")?.message).not.toContain("stays in use");
  });
});

describe("decide: suspend, push Secret", () => {
  it("suspend: no new build even though one is called for, no polling requeue", () => {
    const built = builtImage();
    const image = testImage({ suspend: true, attribute: "other", triggers: { interval: "5m" } }, { status: built.status });
    const d = decide(observe(image, { jobs: [built.job], nextPollInMs: 1000 }));
    expect(d.actions).toEqual([]);
    expect(state(d)).toBe("Ready=Unknown/Suspended Reconciling=False Stalled=False");
    expect(d.requeueAfterMs).toBeUndefined();
  });

  it("suspend lets a running build finish (it is still shown as running)", () => {
    const image = testImage({ suspend: true });
    const d = decide(observe(image, { jobs: [imageJob(image, config, { number: 1, state: "Running" })] }));
    expect(createdJobs(d)).toEqual([]);
    expect(conditionOf(d, "Reconciling")?.reason).toBe("Building");
  });

  it("a build start the API server refused: no new try until the retry time, the refusal stays shown", () => {
    const rejected = { reason: "JobRejected" as const, message: "creating Job web-build-1 failed: 422", retryInMs: 42_000 };
    const d = decide(observe(testImage(), { rejected }));
    expect(createdJobs(d)).toEqual([]);
    expect(state(d)).toBe("Ready=False/JobRejected Reconciling=False Stalled=True");
    expect(conditionOf(d, "Stalled")?.message).toBe(rejected.message);
    expect(d.requeueAfterMs).toBe(42_000);
  });

  it("push Secret missing: Stalled/PushSecretNotFound, checked again in 30 s", () => {
    const image = testImage({ image: { repository, pushSecretRef: { name: "regcred" } } });
    const d = decide(observe(image, { pushSecretFound: false }));
    expect(d.actions).toEqual([]);
    expect(state(d)).toBe("Ready=False/PushSecretNotFound Reconciling=False Stalled=True");
    expect(conditionOf(d, "Stalled")?.message).toContain("Secret regcred");
    expect(conditionOf(d, "Stalled")?.message).toContain("namespace shop");
    expect(d.requeueAfterMs).toBe(30_000);
  });

  it("signing key Secret: checked before a build; missing -> Stalled/SigningKeySecretNotFound, checked again in 30 s", () => {
    const image = testImage({ image: { repository, attestations: { sbom: true, provenance: true, signingKeySecretRef: { name: "cosign" } } } });
    expect(decide(observe(image)).needsPushSecretCheck).toBe(true);
    const d = decide(observe(image, { signingKeySecretFound: false }));
    expect(d.actions).toEqual([]);
    expect(state(d)).toBe("Ready=False/SigningKeySecretNotFound Reconciling=False Stalled=True");
    expect(conditionOf(d, "Stalled")?.message).toContain("cosign generate-key-pair k8s://shop/cosign");
    expect(d.requeueAfterMs).toBe(30_000);
    expect(createdJob(decide(observe(image, { signingKeySecretFound: true }))).job.metadata?.name).toBe("web-build-1");
  });

  it("source credential Secret: checked before any build (warm too); missing -> Stalled/SourceSecretNotFound naming it, no Job", () => {
    const image = testImage({ sourceCredentialsSecretRef: { name: "git-token" } });
    expect(decide(observe(image)).needsPushSecretCheck).toBe(true);
    const d = decide(observe(image, { sourceSecretsMissing: ["git-token"] }));
    expect(d.actions).toEqual([]);
    expect(state(d)).toBe("Ready=False/SourceSecretNotFound Reconciling=False Stalled=True");
    expect(conditionOf(d, "Stalled")?.message).toContain("Secret git-token (spec.sshKeySecretRef / spec.sourceCredentialsSecretRef) does not exist");
    expect(d.requeueAfterMs).toBe(30_000);
    expect(createdJob(decide(observe(image, { sourceSecretsMissing: [] }))).job.metadata?.name).toBe("web-build-1");
  });

  it("a source that cannot be polled says so in the Ready condition instead of silently never polling", () => {
    const image = testImage({ triggers: { interval: "5m" } });
    const job = imageJob(image, config, { number: 1, result: pushResultFor(), completionTime: "2026-11-22T09:10:00Z" });
    const d = decide(observe(image, { jobs: [job], polledRevision: rev1, pollUnavailable: "git+ssh refs are not polled over HTTP" }));
    expect(conditionOf(d, "Ready")?.message).toBe(
      `${repository}@${digest1} is the latest build; spec.triggers.interval does not poll this source: git+ssh refs are not polled over HTTP`,
    );
  });

  it("push Secret not opted in to this NixImage: Stalled/PushSecretNotAllowed with the reason, no Job, checked again in 30 s", () => {
    const image = testImage({ image: { repository, pushSecretRef: { name: "regcred" } } });
    const d = decide(observe(image, { pushSecretFound: true, pushSecretRefused: "Secret regcred has not opted in" }));
    expect(d.actions).toEqual([]);
    expect(state(d)).toBe("Ready=False/PushSecretNotAllowed Reconciling=False Stalled=True");
    expect(conditionOf(d, "Stalled")?.message).toBe("Secret regcred has not opted in");
    expect(d.requeueAfterMs).toBe(30_000);
  });

  it("no Secret check while nothing is to be built", () => {
    const built = builtImage({ image: { repository, pushSecretRef: { name: "regcred" } } });
    const d = decide(observe(built.image, { jobs: [built.job] }));
    expect(d.needsPushSecretCheck).toBeUndefined();
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
  });
});

describe("decide: capacity and store volumes", () => {
  const storeOf = (d: Decision) => createdJob(d).job.spec?.template.spec?.volumes?.find((v) => v.name === "store")?.persistentVolumeClaim?.claimName;

  it("global cap reached: WaitingForCapacity, look again in 10 s", () => {
    const d = decide(observe(testImage(), { runningBuildsEverywhere: 4 }));
    expect(d.actions).toEqual([]);
    expect(conditionOf(d, "Reconciling")).toMatchObject({ status: "True", reason: "WaitingForCapacity" });
    expect(conditionOf(d, "Reconciling")?.message).toContain("limit (concurrency.builds) is 4");
    expect(d.requeueAfterMs).toBe(10_000);
    expect(d.status.lastBuild).toBeUndefined();
    expect(d.status.buildCount).toBe(0);
  });

  it("pool exhausted: WaitingForStoreVolume, look again in 10 s", () => {
    const d = decide(
      observe(testImage(), {
        config: testConfig({ store: { poolSize: 2 } }),
        storeVolumes: [volume("niximage-store-0", "api-build-3", nowIso), volume("niximage-store-1", "db-build-1", nowIso)],
        namespaceJobs: new Map([
          ["api-build-3", true],
          ["db-build-1", true],
        ]),
      }),
    );
    expect(d.actions).toEqual([]);
    expect(conditionOf(d, "Reconciling")).toMatchObject({ status: "True", reason: "WaitingForStoreVolume" });
    expect(d.requeueAfterMs).toBe(10_000);
  });

  it("leases a free volume with its resourceVersion as the precondition", () => {
    const d = decide(
      observe(testImage(), {
        storeVolumes: [volume("niximage-store-0", "api-build-3", "2026-11-22T08:00:00Z", "42")],
        namespaceJobs: new Map([["api-build-3", false]]),
      }),
    );
    expect(createdJob(d).lease).toEqual({
      volume: "niximage-store-0",
      resourceVersion: "42",
      annotations: { "niximage.io/lease-holder": "web-build-1", "niximage.io/lease-time": now.toISOString() },
    });
    expect(storeOf(d)).toBe("niximage-store-0");
  });

  it("creates the next volume of the pool when all existing ones are held", () => {
    const d = decide(
      observe(testImage(), { storeVolumes: [volume("niximage-store-0", "api-build-3", nowIso)], namespaceJobs: new Map([["api-build-3", true]]) }),
    );
    const lease = createdJob(d).lease;
    expect("create" in lease && lease.create.metadata).toMatchObject({
      name: "niximage-store-1",
      namespace: "shop",
      annotations: { "niximage.io/lease-holder": "web-build-1" },
      labels: { "niximage.io/store": "true" },
    });
    expect(storeOf(d)).toBe("niximage-store-1");
  });

  it("a lease younger than the grace period is honoured even when its Job is not visible yet", () => {
    const young = new Date(now.getTime() - leaseGraceMs + 1000).toISOString();
    const d = decide(
      observe(testImage(), { config: testConfig({ store: { poolSize: 1 } }), storeVolumes: [volume("niximage-store-0", "api-build-9", young)] }),
    );
    expect(conditionOf(d, "Reconciling")?.reason).toBe("WaitingForStoreVolume");
  });

  it("prefers the volume this image built on last (its store is warm)", () => {
    const built = builtImage({ attribute: "x" });
    const job = { ...built.job, storeVolume: "niximage-store-1" };
    const image = testImage({ attribute: "y" }, { status: built.status });
    const d = decide(
      observe(image, { jobs: [job], storeVolumes: [volume("niximage-store-0"), volume("niximage-store-1")], namespaceJobs: new Map([["web-build-1", false]]) }),
    );
    expect(storeOf(d)).toBe("niximage-store-1");
  });

  it("takes another free volume when the preferred one is held", () => {
    const built = builtImage({ attribute: "x" });
    const job = { ...built.job, storeVolume: "niximage-store-1" };
    const image = testImage({ attribute: "y" }, { status: built.status });
    const d = decide(
      observe(image, {
        jobs: [job],
        storeVolumes: [volume("niximage-store-0"), volume("niximage-store-1", "api-build-2", nowIso)],
        namespaceJobs: new Map([
          ["web-build-1", false],
          ["api-build-2", true],
        ]),
      }),
    );
    expect(storeOf(d)).toBe("niximage-store-0");
  });
});

describe("decide: history limits", () => {
  const finishedJobs = (image: NixImage, states: ("Succeeded" | "Failed")[]) =>
    states.map((s, i) =>
      imageJob(image, config, { number: i + 1, state: s, ...(s === "Succeeded" ? { result: pushResultFor() } : { failure: { step: "build", message: "x" } }) }),
    );
  const deleted = (d: Decision) => ofType(d, "deleteJob").map((a) => a.name);

  it("deletes the oldest finished Jobs beyond each limit", () => {
    const image = testImage({ historyLimit: { successful: 2, failed: 1 } });
    const jobs = finishedJobs(image, ["Succeeded", "Failed", "Succeeded", "Failed", "Succeeded", "Succeeded"]);
    expect(deleted(decide(observe(image, { jobs })))).toEqual(["web-build-3", "web-build-2", "web-build-1"]);
  });

  it("never deletes the build of record, even with limits of 0", () => {
    const image = testImage({ historyLimit: { successful: 0, failed: 0 } });
    const jobs = finishedJobs(image, ["Succeeded", "Failed", "Succeeded"]);
    const d = decide(observe(image, { jobs }));
    expect(d.status.lastBuild?.job).toBe("web-build-3");
    expect(deleted(d)).toEqual(["web-build-2", "web-build-1"]);
  });

  it("never deletes a failed build of record", () => {
    const image = testImage({ historyLimit: { successful: 1, failed: 0 } });
    const jobs = finishedJobs(image, ["Succeeded", "Failed"]);
    const d = decide(observe(image, { jobs }));
    expect(d.status.lastBuild?.job).toBe("web-build-2");
    expect(deleted(d)).toEqual([]);
  });

  it("counts warm builds on their own and keeps the warm build of record", () => {
    const image = testImage({ historyLimit: { successful: 1, failed: 0 } });
    const warm = (n: number, s: "Succeeded" | "Failed"): JobView => ({ name: `web-warm-${n}`, kind: "Warm", number: n, state: s, reasons: ["WarmSchedule"] });
    const jobs = [...finishedJobs(image, ["Succeeded", "Succeeded"]), warm(1, "Succeeded"), warm(2, "Succeeded"), warm(3, "Failed")];
    const d = decide(observe(image, { jobs }));
    expect(d.status.lastWarmBuild?.job).toBe("web-warm-3");
    expect(deleted(d)).toEqual(["web-build-1", "web-warm-1"]);
  });

  it("never deletes running Jobs", () => {
    const image = testImage({ historyLimit: { successful: 0, failed: 0 } });
    const d = decide(observe(image, { jobs: [imageJob(image, config, { number: 1, state: "Running" })] }));
    expect(deleted(d)).toEqual([]);
  });
});

/** A warm slot at `iso` with no spread and an hour's starting deadline. */
const warmSlot = (iso: string): WarmSlot => ({ slot: new Date(iso), startAt: new Date(iso), deadline: new Date(Date.parse(iso) + 3_600_000) });
/** Last night's slot is due; the next is tomorrow's. */
const dueWarm: WarmState = { due: warmSlot("2026-11-22T02:00:00Z"), upcoming: warmSlot("2026-11-23T02:00:00Z") };

describe("decide: warm builds", () => {
  const warm = { schedule: "0 3 * * *", timeZone: "Europe/Berlin", attributes: ["devShells.x86_64-linux.default"] };

  it("warm due: starts a Warm Job that builds the extra attributes and leaves lastBuild and latestImage alone", () => {
    const built = builtImage({ warm });
    const d = decide(observe(built.image, { jobs: [built.job], warm: dueWarm }));
    const job = createdJob(d).job;
    expect(job.metadata?.labels?.["niximage.io/build-kind"]).toBe("Warm");
    expect(job.metadata?.annotations?.["niximage.io/reasons"]).toBe("WarmSchedule");
    expect(job.spec?.template.spec?.containers.map((c) => c.name)).toEqual(["report"]);
    expect(job.spec?.template.spec?.initContainers?.[1]?.args).toEqual(expect.arrayContaining(["--extra-attribute", "devShells.x86_64-linux.default"]));
    expect(d.status.lastBuild).toEqual(built.status.lastBuild);
    expect(d.status.latestImage).toBe(built.status.latestImage);
    expect(d.status.lastWarmBuild).toMatchObject({ job: job.metadata?.name, kind: "Warm", reasons: ["WarmSchedule"], result: "Running" });
    expect(d.status.nextWarmBuild).toBe("2026-11-23T02:00:00Z");
    // Starting it is no change to the image: Ready stays, with its transition time.
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
    expect(mergePatch(built.status.conditions, d.status.conditions)).toBeUndefined();
  });

  it("a due warm build waiting for capacity or a volume leaves the conditions alone and looks again", () => {
    const built = builtImage({ warm });
    const capped = decide(observe(built.image, { jobs: [built.job], warm: dueWarm, runningBuildsEverywhere: 4 }));
    const noVolume = decide(
      observe(built.image, {
        jobs: [built.job],
        warm: dueWarm,
        config: testConfig({ store: { poolSize: 1 } }),
        storeVolumes: [volume("niximage-store-0", "api-build-1", nowIso)],
        namespaceJobs: new Map([["api-build-1", true]]),
      }),
    );
    for (const d of [capped, noVolume]) {
      expect(d.actions).toEqual([]);
      expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
      expect(d.requeueAfterMs).toBe(10_000);
      expect(d.status.lastWarmBuild).toBeUndefined();
    }
  });

  it("a warm build is numbered on its own: the first one is warm-1, after image builds too", () => {
    const built = builtImage({ warm });
    const d = decide(observe(built.image, { jobs: [built.job], warm: dueWarm }));
    expect(createdJob(d).job.metadata?.name).toBe("web-warm-1");
    expect(d.status.lastWarmBuild).toMatchObject({ job: "web-warm-1", number: 1 });
    expect(d.status.buildCount).toBe(1);
  });

  it("records when it started the warm build (the schedule counts from there), on the Job too", () => {
    const built = builtImage({ warm });
    const d = decide(observe(built.image, { jobs: [built.job], warm: dueWarm }));
    expect(d.status.lastWarmBuild?.startTime).toBe(nowIso);
    expect(createdJob(d).job.metadata?.annotations?.["niximage.io/requested-at"]).toBe(nowIso);
  });

  it("the warm build's start stays the controller's time when the Job reports its own (later or earlier) startTime", () => {
    const built = builtImage({ warm });
    const started = decide(observe(built.image, { jobs: [built.job], warm: dueWarm }));
    const image = testImage({ warm }, { status: started.status });
    // The API server's clock is 3 s behind: its startTime lies before the 03:00 slot.
    const job: JobView = {
      name: "web-warm-1",
      kind: "Warm",
      number: 1,
      state: "Succeeded",
      reasons: ["WarmSchedule"],
      requestedAt: nowIso,
      startTime: "2026-11-22T09:59:57.000Z",
    };
    const d = decide(observe(image, { jobs: [built.job, job], now: new Date(now.getTime() + 600_000) }));
    expect(d.status.lastWarmBuild).toMatchObject({ job: "web-warm-1", result: "Succeeded", startTime: nowIso });
  });

  it("the next warm build gets the next warm number, also when the old warm Jobs were pruned", () => {
    const built = builtImage({ warm });
    const status = {
      ...built.status,
      lastWarmBuild: {
        job: "web-warm-4",
        number: 4,
        kind: "Warm" as const,
        reasons: ["WarmSchedule"],
        result: "Succeeded" as const,
        startTime: "2026-11-21T02:00:00Z",
      },
    };
    const d = decide(observe(testImage({ warm }, { status }), { jobs: [built.job], warm: dueWarm }));
    expect(createdJob(d).job.metadata?.name).toBe("web-warm-5");
    expect(d.status.buildCount).toBe(1);
  });

  it("an image build after warm builds keeps counting image builds", () => {
    const built = builtImage({ warm });
    const warmJob: JobView = {
      name: "web-warm-3",
      kind: "Warm",
      number: 3,
      state: "Succeeded",
      reasons: ["WarmSchedule"],
      requestedAt: "2026-11-22T09:30:00Z",
      storeVolume: "niximage-store-1",
    };
    const image = testImage({ warm, attribute: "changed" }, { status: built.status });
    const d = decide(observe(image, { jobs: [built.job, warmJob], storeVolumes: [volume("niximage-store-0"), volume("niximage-store-1")] }));
    const job = createdJob(d).job;
    expect(job.metadata?.name).toBe("web-build-2");
    // The warm build ran after web-build-1: its volume is the warmest.
    expect(job.spec?.template.spec?.volumes?.find((v) => v.name === "store")?.persistentVolumeClaim?.claimName).toBe("niximage-store-1");
  });

  it("a failed warm build: recorded with its failure and a Warning event, the image stays Ready", () => {
    const built = builtImage({ warm });
    const failed: JobView = {
      name: "web-warm-1",
      kind: "Warm",
      number: 1,
      state: "Failed",
      reasons: ["WarmSchedule"],
      requestedAt: "2026-11-22T02:00:00Z",
      failure: { step: "build", exitCode: 1, message: "error: cannot update input nixpkgs" },
    };
    const d = decide(observe(built.image, { jobs: [built.job, failed] }));
    expect(d.status.lastWarmBuild).toMatchObject({ job: "web-warm-1", result: "Failed", failure: { step: "build", exitCode: 1 } });
    expect(ofType(d, "event")).toEqual([expect.objectContaining({ eventType: "Warning", reason: "WarmBuildFailed" })]);
    expect(ofType(d, "event")[0]!.message).toContain("cannot update input nixpkgs");
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
    expect(createdJobs(d)).toEqual([]);
  });

  it("an image build comes before a due warm build", () => {
    const built = builtImage({ warm });
    const image = testImage({ warm, attribute: "changed" }, { status: built.status });
    const d = decide(observe(image, { jobs: [built.job], warm: dueWarm }));
    expect(createdJob(d).job.metadata?.labels?.["niximage.io/build-kind"]).toBe("Image");
  });

  it("a finished warm build fills lastWarmBuild with its closure diff, not lastBuild", () => {
    const built = builtImage({ warm: { ...warm, updateInputs: true } });
    const warmJob: JobView = {
      name: "web-warm-1",
      kind: "Warm",
      number: 1,
      state: "Succeeded",
      reasons: ["WarmSchedule"],
      startTime: "2026-11-22T02:00:05Z",
      completionTime: "2026-11-22T02:20:00Z",
      storeVolume: "niximage-store-0",
      warmResult: {
        revision: { url: `github:acme/shop/${rev2}`, rev: rev2, lastModified: 1_763_000_000, narHash: "sha256-BBBB" },
        closureDiff: { added: [{ name: "libfoo", to: "1.0" }], removed: [], changed: [{ name: "openssl", from: "3.0.1", to: "3.0.2" }] },
        seconds: { build: 900 },
      },
    };
    const d = decide(observe(built.image, { jobs: [built.job, warmJob] }));
    expect(ofType(d, "event")).toEqual([expect.objectContaining({ eventType: "Normal", reason: "WarmBuildSucceeded" })]);
    expect(ofType(d, "event")[0]!.message).toContain("1 packages would be added, 0 removed, 1 changed");
    expect(d.status.lastWarmBuild).toMatchObject({
      job: "web-warm-1",
      result: "Succeeded",
      revision: { rev: rev2 },
      durations: { build: 900 },
      closureDiff: { added: [{ name: "libfoo", to: "1.0" }], removed: [], changed: [{ name: "openssl", from: "3.0.1", to: "3.0.2" }] },
    });
    expect(d.status.lastBuild).toEqual(built.status.lastBuild);
    expect(d.status.latestImage).toBe(built.status.latestImage);
    expect(d.status.latestRevision).toEqual(built.status.latestRevision);
    expect(createdJobs(d)).toEqual([]);
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
  });

  it("a warm build's diff cut to fit: status keeps the full counts, the Event says how many are listed and where the rest is", () => {
    const built = builtImage({ warm: { ...warm, updateInputs: true } });
    const closureDiff = {
      added: [{ name: "libfoo", to: "1.0" }],
      removed: [],
      changed: [{ name: "openssl", from: "3.0.1", to: "3.0.2" }],
      totals: { added: 300, removed: 0, changed: 41 },
    };
    const warmJob: JobView = {
      name: "web-warm-1",
      kind: "Warm",
      number: 1,
      state: "Succeeded",
      reasons: ["WarmSchedule"],
      startTime: "2026-11-22T02:00:05Z",
      completionTime: "2026-11-22T02:20:00Z",
      warmResult: { revision: { url: `github:acme/shop/${rev2}`, rev: rev2, lastModified: 1_763_000_000, narHash: "sha256-BBBB" }, closureDiff },
    };
    const d = decide(observe(built.image, { jobs: [built.job, warmJob] }));
    expect(d.status.lastWarmBuild?.closureDiff).toEqual(closureDiff);
    expect(ofType(d, "event")[0]!.message).toContain(
      "300 packages would be added, 0 removed, 41 changed (status.lastWarmBuild.closureDiff lists 1/0/1 of them; the full diff: kubectl logs -n shop job/web-warm-1 -c report)",
    );
  });

  it("a running warm build does not make the image un-Ready, and is not started twice", () => {
    const built = builtImage({ warm });
    const running: JobView = { name: "web-warm-1", kind: "Warm", number: 1, state: "Running", reasons: ["WarmSchedule"] };
    const d = decide(observe(built.image, { jobs: [built.job, running], warm: dueWarm }));
    expect(createdJobs(d)).toEqual([]);
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
  });

  it("an image build waits for a running warm build of the same image", () => {
    const built = builtImage({ warm });
    const image = testImage({ warm, attribute: "changed" }, { status: built.status });
    const running: JobView = { name: "web-warm-1", kind: "Warm", number: 1, state: "Running", reasons: ["WarmSchedule"] };
    const d = decide(observe(image, { jobs: [built.job, running] }));
    expect(createdJobs(d)).toEqual([]);
    expect(conditionOf(d, "Reconciling")).toMatchObject({ status: "True", reason: "Building" });
    expect(conditionOf(d, "Reconciling")?.message).toContain("web-warm-1");
  });

  it("a due warm build that waits for capacity keeps announcing its slot, so the next reconcile still finds it due", () => {
    const built = builtImage({ warm });
    const d = decide(observe(built.image, { jobs: [built.job], warm: dueWarm, runningBuildsEverywhere: 4 }));
    expect(createdJobs(d)).toEqual([]);
    expect(d.status.nextWarmBuild).toBe("2026-11-22T02:00:00Z");
  });

  it("a missed slot (its starting deadline passed unseen): no warm build, one Warning naming the slot, the next slot announced", () => {
    const built = builtImage({ warm });
    const missed: WarmState = { missed: warmSlot("2026-11-22T02:00:00Z"), upcoming: warmSlot("2026-11-23T02:00:00Z") };
    const d = decide(observe(built.image, { jobs: [built.job], warm: missed }));
    expect(createdJobs(d)).toEqual([]);
    expect(d.status.nextWarmBuild).toBe("2026-11-23T02:00:00Z");
    expect(ofType(d, "event")).toEqual([
      expect.objectContaining({
        eventType: "Warning",
        reason: "WarmBuildSkipped",
        message: expect.stringContaining("warm build for the slot 2026-11-22T02:00:00Z skipped") as string,
        once: expect.stringContaining("WarmBuildSkipped") as string,
      }),
    ]);
    expect(ofType(d, "event")[0]!.message).toContain("config.warm.startingDeadline 1h");
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
  });

  it("warm due but suspended: nothing", () => {
    const built = builtImage({ warm });
    const image = testImage({ warm, suspend: true }, { status: built.status });
    expect(createdJobs(decide(observe(image, { jobs: [built.job], warm: dueWarm })))).toEqual([]);
  });
});

describe("decide: requeueAfter", () => {
  const table: [string, number | undefined, string | undefined, number | undefined][] = [
    ["neither", undefined, undefined, undefined],
    ["poll only", 300_000, undefined, 300_000],
    ["warm only", undefined, "2026-11-22T11:00:00Z", 3_600_000],
    ["poll sooner", 60_000, "2026-11-22T11:00:00Z", 60_000],
    ["warm sooner", 300_000, "2026-11-22T10:01:00Z", 60_000],
    ["warm in the past counts as now", 300_000, "2026-11-22T09:00:00Z", 0],
  ];
  it.each(table)("%s", (_name, poll, warmAt, expected) => {
    const built = builtImage({ triggers: { interval: "5m" }, warm: { schedule: "0 3 * * *" } });
    const d = decide(
      observe(built.image, {
        jobs: [built.job],
        polledRevision: rev1,
        ...(poll !== undefined ? { nextPollInMs: poll } : {}),
        ...(warmAt ? { warm: { upcoming: warmSlot(warmAt) } } : {}),
      }),
    );
    expect(d.actions).toEqual([]);
    expect(d.requeueAfterMs).toBe(expected);
  });

  it("a poll error keeps the image and warns", () => {
    const built = builtImage({ triggers: { interval: "5m" } });
    const d = decide(observe(built.image, { jobs: [built.job], pollError: "git ref discovery: HTTP 503", nextPollInMs: 30_000 }));
    expect(ofType(d, "event")).toEqual([
      expect.objectContaining({ eventType: "Warning", reason: "RevisionUnavailable", message: "git ref discovery: HTTP 503" }),
    ]);
    expect(state(d)).toBe("Ready=True/Succeeded Reconciling=False Stalled=False");
    expect(d.requeueAfterMs).toBe(30_000);
  });
});

describe("decide: failure taxonomy and retries", () => {
  const failedAt = "2026-11-22T09:59:50Z"; // 10 s before `now`
  const transient = { step: "push", exitCode: 75, reason: "Error", message: "registry: HTTP 503", transient: true };
  const failedBuild = (number: number, failure: JobView["failure"], attempt = 1) => {
    const bare = testImage();
    const job = imageJob(bare, config, { number, state: "Failed", failure, failedAt, attempt });
    return { image: bare, job };
  };
  const at = (ms: number) => new Date(now.getTime() + ms);

  it.each([
    // attempt that failed, ms after `now`, expected state, expected next attempt (or none)
    [1, 0, "Ready=False/RetryingBuild Reconciling=True Stalled=False", undefined, 20_000],
    [1, 20_000, "Ready=Unknown/Building Reconciling=True Stalled=False", 2, undefined],
    [2, 0, "Ready=False/RetryingBuild Reconciling=True Stalled=False", undefined, 50_000],
    [2, 50_000, "Ready=Unknown/Building Reconciling=True Stalled=False", 3, undefined],
    [3, 110_000, "Ready=Unknown/Building Reconciling=True Stalled=False", 4, undefined],
    [4, 3_600_000, "Ready=False/BuildFailed Reconciling=False Stalled=True", undefined, undefined],
  ])("a transient failure of attempt %i, %i ms later: %s, next attempt %s", (attempt, later, want, next, requeue) => {
    const { image, job } = failedBuild(attempt, transient, attempt);
    const d = decide(observe(image, { jobs: [job], now: at(later) }));
    expect(state(d)).toBe(want);
    if (next === undefined) expect(createdJobs(d)).toEqual([]);
    else {
      const created = createdJob(d).job;
      expect(created.metadata?.annotations?.["niximage.io/reasons"]).toBe("Retry");
      expect(created.metadata?.annotations?.["niximage.io/attempt"]).toBe(String(next));
      expect(d.status.lastBuild).toMatchObject({ result: "Running", attempt: next, reasons: ["Retry"] });
    }
    if (requeue !== undefined) expect(d.requeueAfterMs).toBe(requeue);
    if (attempt === 4) expect(conditionOf(d, "Ready")?.message).toContain("failed 4 times");
  });

  it("the retry limit, delays and cap come from the operator config", () => {
    const { image, job } = failedBuild(1, transient);
    const quick = testConfig({ build: { retry: { limit: 0 } } });
    const noRetries = decide(observe(image, { jobs: [job], config: quick }));
    expect(state(noRetries)).toBe("Ready=False/BuildFailed Reconciling=False Stalled=True");
    expect(conditionOf(noRetries, "Ready")?.message).toContain("It failed once for reasons that may pass");
    const slow = testConfig({ build: { retry: { baseDelay: "1h", maxDelay: "2m" } } });
    expect(decide(observe(image, { jobs: [job], config: slow })).requeueAfterMs).toBe(110_000);
  });

  it.each([
    ["an eval/build error", { step: "build", exitCode: 1, message: "error: attribute 'web' missing" }],
    ["OOMKilled", { step: "build", exitCode: 137, reason: "OOMKilled", message: "killed: more memory than its limit (2Gi)" }],
    ["a registry 401 in the push step", { step: "push", exitCode: 1, message: "HTTP 401 Unauthorized" }],
  ])("%s is not retried with the same inputs", (_what, failure) => {
    const { image, job } = failedBuild(1, failure);
    const d = decide(observe(image, { jobs: [job], now: at(3_600_000) }));
    expect(createdJobs(d)).toEqual([]);
    expect(state(d)).toBe("Ready=False/BuildFailed Reconciling=False Stalled=True");
  });

  it("a store volume refused by the prepare step: Stalled with StoreIncompatible and what to do, not retried", () => {
    const failure = {
      step: "prepare",
      exitCode: 78,
      reason: "StoreIncompatible",
      message: "the prepare step refused store volume niximage-store-0 (PVC default/niximage-store-0): schema",
    };
    const { image, job } = failedBuild(1, failure);
    const d = decide(observe(image, { jobs: [job], now: at(3_600_000) }));
    expect(createdJobs(d)).toEqual([]);
    expect(state(d)).toBe("Ready=False/StoreIncompatible Reconciling=False Stalled=True");
    expect(conditionOf(d, "Ready")?.message).toMatch(/niximage-store-0.*Delete that PVC.*niximage\.io\/rebuild=<new value>/);
  });

  it("a lost result never leaves the old image Ready: Retrying while the retry waits", () => {
    const built = builtImage();
    const lost = imageJob(built.image, config, {
      number: 2,
      state: "Failed",
      reasons: ["RebuildRequested"],
      failedAt,
      failure: { step: "push", reason: "ResultLost", message: "the builder pod was deleted before its result was read", transient: true },
    });
    const d = decide(observe(built.image, { jobs: [built.job, lost] }));
    expect(state(d)).toBe("Ready=False/RetryingBuild Reconciling=True Stalled=False");
    expect(d.status.latestImage).toBe(built.status.latestImage);
    expect(conditionOf(d, "Ready")?.message).toContain("stays in use");
  });

  it("a new commit after a transient failure builds at once, as attempt 1", () => {
    const bare = testImage({ triggers: { interval: "5m" } });
    const job = imageJob(bare, config, { number: 1, state: "Failed", failure: transient, failedAt, flake: `github:acme/shop/${rev1}` });
    const d = decide(observe(bare, { jobs: [job], polledRevision: rev2 }));
    const created = createdJob(d).job;
    expect(created.metadata?.annotations?.["niximage.io/reasons"]).toBe("RevisionChanged");
    expect(created.metadata?.annotations?.["niximage.io/attempt"]).toBeUndefined();
  });
});
