// Builders for the controller's unit tests: a defaulted NixImage, operator config, JobViews and
// store volumes, all with fixed names and times so decisions are deterministic.
import type { NixImage, NixImageInput, NixImageStatus } from "../../src/api/niximage.ts";
import { nixImageSchema } from "../../src/api/niximage.ts";
import { parseOperatorConfig, type OperatorConfig, type OperatorConfigInput } from "../../src/config/operator-config.ts";
import { builderHash, specHash } from "../../src/controller/build-inputs.ts";
import type { Observed } from "../../src/controller/decide.ts";
import type { JobView } from "../../src/controller/job-outcome.ts";
import type { StoreVolumeView } from "../../src/controller/store-pool.ts";

export const now = new Date("2026-11-22T10:00:00.000Z");
export const nowIso = "2026-11-22T10:00:00Z";
export const rev1 = "1".repeat(40);
export const rev2 = "2".repeat(40);
export const digest1 = `sha256:${"a".repeat(64)}`;
export const repository = "registry.example.com/acme/web";

export function testConfig(overrides: OperatorConfigInput = {}): OperatorConfig {
  return parseOperatorConfig({
    ...overrides,
    builder: { nixImage: "nix.test/nix:2.28", pushImage: "operator.test/nio:0.1.0", ...overrides.builder },
  });
}

type SpecInput = Partial<NixImageInput["spec"]>;

export function testImage(spec: SpecInput = {}, extra: { status?: NixImageStatus; annotations?: Record<string, string>; generation?: number } = {}): NixImage {
  return nixImageSchema.parse({
    apiVersion: "niximage.io/v1alpha1",
    kind: "NixImage",
    metadata: {
      name: "web",
      namespace: "shop",
      uid: "0b6a4c52-7f1e-4a57-9a38-000000000001",
      generation: extra.generation ?? 1,
      resourceVersion: "100",
      ...(extra.annotations ? { annotations: extra.annotations } : {}),
    },
    spec: { flake: "github:acme/shop?ref=main", image: { repository }, ...spec },
    ...(extra.status ? { status: extra.status } : {}),
  });
}

/** A finished or running image build of `image` under `config`, made from the current inputs. */
export function imageJob(image: NixImage, config: OperatorConfig, view: Partial<JobView> & { number: number }): JobView {
  return {
    name: `web-build-${view.number}`,
    kind: "Image",
    state: "Succeeded",
    reasons: ["SpecChanged"],
    specHash: specHash(image),
    builderHash: builderHash(config),
    flake: image.spec.flake,
    storeVolume: "niximage-store-0",
    startTime: "2026-11-22T09:00:00Z",
    ...view,
  };
}

export function pushResultFor(digest = digest1, rev = rev1): NonNullable<JobView["result"]> {
  return {
    image: `${repository}@${digest}`,
    digest,
    tags: [`rev-${rev.slice(0, 12)}`],
    format: "package",
    revision: { url: `github:acme/shop/${rev}`, rev, lastModified: 1_763_000_000, narHash: "sha256-AAAA" },
    layers: { total: 42, pushed: 2, skipped: 40, mounted: 0 },
    bytesPushed: 4096,
    seconds: { build: 12, push: 3 },
  };
}

export function volume(name: string, holder?: string, leasedAt?: string, resourceVersion = "7"): StoreVolumeView {
  return { name, resourceVersion, ...(holder ? { holder } : {}), ...(leasedAt ? { leasedAt } : {}) };
}

export function observe(image: NixImage, over: Partial<Observed> = {}): Observed {
  return {
    image,
    now,
    config: testConfig(),
    jobs: [],
    namespaceJobs: new Map(),
    runningBuildsEverywhere: 0,
    storeVolumes: [],
    ...over,
  };
}
