// The builder Job manifest is a pure function: its exact shape is pinned by snapshots, and the
// security properties that matter are asserted one by one, so a snapshot update cannot quietly
// give the untrusted build step a Secret or a token.
import type { V1Container, V1Job } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { builderJob, type BuilderJobInput } from "../../src/controller/builder-job.ts";
import { buildJobName } from "../../src/controller/names.ts";
import { testConfig, testImage, repository } from "./controller-fixtures.ts";

const config = testConfig({ registries: [{ host: "registry.example.com", plainHttp: true }] });

const fullImage = testImage({
  attribute: "packages.x86_64-linux.web",
  image: {
    repository,
    tags: ["latest", "stable"],
    pushSecretRef: { name: "regcred" },
    config: { cmd: ["--port", "8080"], env: [{ name: "MODE", value: "prod" }], exposedPorts: ["8080"] },
    maxLayers: 80,
  },
  build: {
    timeout: "45m",
    resources: { requests: { cpu: "2", memory: "4Gi" }, limits: { memory: "8Gi" } },
    nodeSelector: { "kubernetes.io/arch": "amd64" },
    tolerations: [{ key: "builders", operator: "Exists", effect: "NoSchedule" }],
    nixConfig: { substituters: ["https://cache.example.com"], trustedPublicKeys: ["cache.example.com-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="] },
  },
  warm: { schedule: "0 3 * * *", timeZone: "Europe/Berlin", attributes: ["devShells.x86_64-linux.default", "checks.x86_64-linux.unit"], updateInputs: true },
});

function input(kind: "Image" | "Warm", over: Partial<BuilderJobInput> = {}): BuilderJobInput {
  return {
    image: fullImage,
    kind,
    number: 7,
    reasons: kind === "Image" ? ["RevisionChanged", "RebuildRequested"] : ["WarmSchedule"],
    flake: `github:acme/shop/${"1".repeat(40)}`,
    storeVolume: "niximage-store-1",
    specHash: "0123456789abcdef",
    builderHash: "fedcba9876543210",
    rebuildToken: "2026-11-22",
    requestedAt: "2026-11-22T02:00:05Z",
    config,
    ...over,
  };
}

const podOf = (job: V1Job) => job.spec!.template.spec!;
const allContainers = (job: V1Job): V1Container[] => [...(podOf(job).initContainers ?? []), ...podOf(job).containers];
const container = (job: V1Job, name: string) => allContainers(job).find((c) => c.name === name)!;

describe("builderJob", () => {
  it("image build: snapshot", () => {
    expect(builderJob(input("Image"))).toMatchSnapshot();
  });

  it("warm build: snapshot", () => {
    expect(builderJob(input("Warm"))).toMatchSnapshot();
  });

  it("minimal spec: snapshot", () => {
    expect(
      builderJob(
        input("Image", {
          image: testImage(),
          rebuildToken: undefined,
          requestedAt: undefined,
          reasons: ["SpecChanged"],
          number: 1,
          flake: "github:acme/shop?ref=main",
        }),
      ),
    ).toMatchSnapshot();
  });

  describe("security", () => {
    for (const kind of ["Image", "Warm"] as const) {
      const job = builderJob(input(kind));
      const pod = podOf(job);

      it(`${kind}: no service account token, no service links, restartPolicy Never`, () => {
        expect(pod.automountServiceAccountToken).toBe(false);
        expect(pod.enableServiceLinks).toBe(false);
        expect(pod.restartPolicy).toBe("Never");
        expect(pod.securityContext?.seccompProfile?.type).toBe("RuntimeDefault");
      });

      it(`${kind}: the build step has no env from anything but literals, no envFrom and no Secret mount`, () => {
        const build = container(job, "build");
        expect(build.env).toEqual([{ name: "HOME", value: "/tmp" }]);
        expect(build.envFrom).toBeUndefined();
        const secretVolumes = new Set((pod.volumes ?? []).filter((v) => v.secret || v.projected).map((v) => v.name));
        expect((build.volumeMounts ?? []).filter((m) => secretVolumes.has(m.name))).toEqual([]);
        expect(build.securityContext?.allowPrivilegeEscalation).toBe(false);
      });

      it(`${kind}: the build step sees only the Nix tree of the store volume, not the push step's layer cache`, () => {
        const build = container(job, "build");
        expect((build.volumeMounts ?? []).filter((m) => m.name === "store")).toEqual([{ name: "store", mountPath: "/nix", subPath: "nix" }]);
      });

      it(`${kind}: every step runs argv, never a shell`, () => {
        for (const c of allContainers(job)) {
          const argv = [...(c.command ?? []), ...(c.args ?? [])];
          expect(argv[0], c.name).toBe("nix-image-operator");
          expect(
            argv.some((a) => /^(\/bin\/)?(ba)?sh$/.test(a) || a === "-c"),
            c.name,
          ).toBe(false);
        }
      });

      it(`${kind}: failed steps report their last log lines`, () => {
        for (const c of allContainers(job)) expect(c.terminationMessagePolicy, c.name).toBe("FallbackToLogsOnError");
      });

      it(`${kind}: never two pods, no blind retry, deadline from spec.build.timeout`, () => {
        expect(job.spec).toMatchObject({ backoffLimit: 0, podReplacementPolicy: "Failed", activeDeadlineSeconds: 45 * 60 });
        expect(job.spec?.podFailurePolicy?.rules).toEqual([{ action: "Ignore", onPodConditions: [{ type: "DisruptionTarget", status: "True" }] }]);
      });
    }

    it("only the push step mounts the push Secret, read-only, and it is the only Secret volume", () => {
      const job = builderJob(input("Image"));
      const secretVolumes = (podOf(job).volumes ?? []).filter((v) => v.secret);
      expect(secretVolumes).toEqual([{ name: "push-secret", secret: { secretName: "regcred", items: [{ key: ".dockerconfigjson", path: "config.json" }] } }]);
      const mounting = allContainers(job).filter((c) => (c.volumeMounts ?? []).some((m) => m.name === "push-secret"));
      expect(mounting.map((c) => c.name)).toEqual(["push"]);
      expect(container(job, "push").volumeMounts?.find((m) => m.name === "push-secret")?.readOnly).toBe(true);
      expect(container(job, "push").args).toEqual(expect.arrayContaining(["--auth-file", "/var/run/niximage/push/config.json"]));
    });

    it("the push step reads the store and the build result read-only, with a read-only root filesystem", () => {
      const push = container(builderJob(input("Image")), "push");
      expect(push.volumeMounts?.filter((m) => m.mountPath === "/nix" || m.mountPath === "/work").map((m) => m.readOnly)).toEqual([true, true]);
      expect(push.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } });
    });

    for (const kind of ["Image", "Warm"] as const) {
      const job = builderJob(input(kind));
      it(`${kind}: every step drops ALL capabilities, no privilege escalation, RuntimeDefault seccomp, read-only root`, () => {
        expect(podOf(job).securityContext?.seccompProfile?.type).toBe("RuntimeDefault");
        for (const c of allContainers(job)) {
          expect(c.securityContext, c.name).toMatchObject({
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            seccompProfile: { type: "RuntimeDefault" },
            capabilities: { drop: ["ALL"] },
          });
        }
      });

      it(`${kind}: capabilities added back: prepare CHOWN only, build the configured Nix build-user set, push/report none`, () => {
        const added = Object.fromEntries(allContainers(job).map((c) => [c.name, c.securityContext?.capabilities?.add ?? []]));
        expect(added).toEqual({
          prepare: ["CHOWN"],
          build: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"],
          ...(kind === "Image" ? { push: [], stream: [] } : { report: [] }),
        });
        const none = builderJob(input(kind, { config: testConfig({ builder: { buildCapabilities: [] } }) }));
        expect(container(none, "build").securityContext?.capabilities).toEqual({ drop: ["ALL"] });
      });

      it(`${kind}: the last step runs as uid 65532, non-root (Pod Security restricted)`, () => {
        const last = podOf(job).containers[0]!;
        expect(last.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 });
      });

      it(`${kind}: every step has requests and limits; spec.build.resources over the config's defaults`, () => {
        for (const c of allContainers(job)) {
          // The stream step runs beside push (main containers' requests add up): config defaults.
          const want =
            c.name === "stream"
              ? { requests: { cpu: "100m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } }
              : { requests: { cpu: "2", memory: "4Gi" }, limits: { cpu: "2", memory: "8Gi" } };
          expect(c.resources, c.name).toEqual(want);
        }
        const defaults = builderJob(input(kind, { image: testImage() }));
        for (const c of allContainers(defaults)) {
          expect(c.resources, c.name).toEqual({ requests: { cpu: "100m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } });
        }
      });

      it(`${kind}: emptyDirs have size limits`, () => {
        const emptyDirs = (podOf(job).volumes ?? []).filter((v) => v.emptyDir);
        expect(emptyDirs.map((v) => [v.name, v.emptyDir?.sizeLimit])).toEqual([
          ["work", "1Gi"],
          ["tmp", "10Gi"],
          ...(kind === "Image"
            ? [
                ["stream", "1Mi"],
                ["stream-tmp", "10Gi"],
              ]
            : []),
        ]);
      });
    }

    it("Image: a streamLayeredImage script runs in the stream step: no Secret, no layer cache, store read-only, uid 65534 (issue 12 item 4)", () => {
      const job = builderJob(input("Image"));
      const stream = container(job, "stream");
      expect(stream.command).toEqual([
        "nix-image-operator",
        "stream-step",
        "--from",
        "/work/result",
        "--socket",
        "/var/run/niximage/stream/archive.sock",
        "--termination-message",
        "/dev/termination-log",
      ]);
      expect(stream.securityContext).toMatchObject({
        runAsNonRoot: true,
        runAsUser: 65534,
        runAsGroup: 65534,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
      });
      expect(stream.volumeMounts).toEqual([
        { name: "store", mountPath: "/nix", subPath: "nix", readOnly: true },
        { name: "work", mountPath: "/work", readOnly: true },
        { name: "stream", mountPath: "/var/run/niximage/stream" },
        { name: "stream-tmp", mountPath: "/tmp" },
      ]);
      expect(stream.env ?? []).toEqual([]);
      expect(container(job, "push").args).toEqual(expect.arrayContaining(["--stream-socket", "/var/run/niximage/stream/archive.sock"]));
    });

    it("a warm build has no push step and no Secret at all", () => {
      const job = builderJob(input("Warm"));
      expect(podOf(job).containers.map((c) => c.name)).toEqual(["report"]);
      expect((podOf(job).volumes ?? []).filter((v) => v.secret)).toEqual([]);
      expect(container(job, "report").volumeMounts).toEqual([{ name: "work", mountPath: "/work", readOnly: true }]);
    });

    it("the signing key Secret is mounted only in the push step; SBOM/provenance switches become flags", () => {
      const signed = testImage({
        image: { repository, maxLayers: 100, compression: "none", attestations: { sbom: false, provenance: true, signingKeySecretRef: { name: "cosign" } } },
      });
      const job = builderJob(input("Image", { image: signed }));
      expect(podOf(job).volumes).toEqual(expect.arrayContaining([{ name: "signing-key", secret: { secretName: "cosign" } }]));
      for (const c of allContainers(job)) {
        const mounted = (c.volumeMounts ?? []).some((m) => m.name === "signing-key");
        expect(mounted, c.name).toBe(c.name === "push");
      }
      const args = container(job, "push").args!;
      expect(args).toEqual(
        expect.arrayContaining([
          "--no-sbom",
          "--sign-key",
          "/var/run/niximage/signing/cosign.key",
          "--sign-key-password-file",
          "/var/run/niximage/signing/cosign.password",
          "--job",
          job.metadata!.name!,
        ]),
      );
      expect(args).not.toContain("--no-provenance");
    });

    it("private sources (issue 13 item 2): only the fetch step mounts the source Secrets, read-only; the build step builds what it fetched with none", () => {
      const image = testImage({
        flake: "git+ssh://git@git.example.com/acme/shop.git",
        sshKeySecretRef: { name: "deploy-key" },
        sourceCredentialsSecretRef: { name: "git-token" },
      });
      const job = builderJob(input("Image", { image, flake: "git+ssh://git@git.example.com/acme/shop.git?rev=" + "1".repeat(40) }));
      const pod = podOf(job);
      expect(pod.initContainers!.map((c) => c.name)).toEqual(["prepare", "fetch", "build"]);
      const sourceVolumes = (pod.volumes ?? []).filter((v) => v.name.startsWith("source-credentials-"));
      expect(sourceVolumes.map((v) => [v.secret?.secretName, v.secret?.defaultMode])).toEqual([
        ["deploy-key", 0o400],
        ["git-token", 0o400],
      ]);
      const names = new Set(sourceVolumes.map((v) => v.name));
      for (const c of allContainers(job)) {
        const mounted = (c.volumeMounts ?? []).filter((m) => names.has(m.name));
        if (c.name === "fetch")
          expect(mounted.map((m) => [m.mountPath, m.readOnly])).toEqual([
            ["/var/run/niximage/source/0", true],
            ["/var/run/niximage/source/1", true],
          ]);
        else expect(mounted, c.name).toEqual([]);
        // The fetch step's HOME (git clones, the .netrc link) is its own.
        if (c.name !== "fetch")
          expect(
            (c.volumeMounts ?? []).map((m) => m.name),
            c.name,
          ).not.toContain("fetch-home");
      }
      const fetch = container(job, "fetch");
      expect(fetch.args).toEqual(
        expect.arrayContaining(["--credentials-dir", "/var/run/niximage/source/0", "--credentials-dir", "/var/run/niximage/source/1"]),
      );
      expect(fetch.securityContext?.capabilities).toEqual({ drop: ["ALL"] });
      const build = container(job, "build");
      expect(build.args!.slice(build.args!.indexOf("--fetched"), build.args!.indexOf("--fetched") + 2)).toEqual(["--fetched", "/work/fetch/fetch.json"]);
      expect(build.env).toEqual([{ name: "HOME", value: "/tmp" }]);
      expect(build.envFrom).toBeUndefined();
    });

    it("a CA bundle ConfigMap (the NixImage's, else its registry's) reaches fetch, build and push, read-only; no other step", () => {
      const image = testImage({ sourceCredentialsSecretRef: { name: "git-token" }, build: { caBundleRef: { name: "corp-ca", key: "bundle.pem" } } });
      const job = builderJob(input("Image", { image }));
      expect(podOf(job).volumes!.find((v) => v.name === "ca-bundle")?.configMap).toEqual({ name: "corp-ca", items: [{ key: "bundle.pem", path: "ca.crt" }] });
      for (const c of allContainers(job)) {
        const mounted = (c.volumeMounts ?? []).filter((m) => m.name === "ca-bundle");
        if (["fetch", "build", "push"].includes(c.name)) {
          expect(mounted, c.name).toEqual([{ name: "ca-bundle", mountPath: "/etc/niximage/ca", readOnly: true }]);
          expect(c.args!.slice(c.args!.indexOf("--ca-file"), c.args!.indexOf("--ca-file") + 2), c.name).toEqual(["--ca-file", "/etc/niximage/ca/ca.crt"]);
        } else expect(mounted, c.name).toEqual([]);
      }
      const viaRegistry = testConfig({
        registries: [{ host: "registry.example.com", plainHttp: false, caBundle: { configMap: "registry-ca", key: "ca.crt" } }],
      });
      const job2 = builderJob(input("Image", { image: testImage(), config: viaRegistry }));
      expect(podOf(job2).volumes!.find((v) => v.name === "ca-bundle")?.configMap?.name).toBe("registry-ca");
      expect(container(job2, "push").args).toContain("--ca-file");
      expect(podOf(builderJob(input("Image", { image: testImage() }))).volumes!.find((v) => v.name === "ca-bundle")).toBeUndefined();
    });

    it("a public flake has no fetch step", () => {
      expect(podOf(builderJob(input("Image"))).initContainers!.map((c) => c.name)).toEqual(["prepare", "build"]);
    });

    it("without a pushSecretRef there is no Secret volume", () => {
      const job = builderJob(input("Image", { image: testImage() }));
      expect((podOf(job).volumes ?? []).filter((v) => v.secret)).toEqual([]);
      expect(container(job, "push").args).not.toContain("--auth-file");
    });
  });

  describe("arguments", () => {
    it("image build: flake, attribute, nix settings; the warm flags only on warm builds", () => {
      const args = container(builderJob(input("Image")), "build").args!;
      expect(args.slice(0, 5)).toEqual(["build-step", "--flake", `github:acme/shop/${"1".repeat(40)}`, "--attribute", "packages.x86_64-linux.web"]);
      expect(args).toEqual(
        expect.arrayContaining([
          "--substituter",
          "https://cache.example.com",
          "--trusted-public-key",
          "cache.example.com-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
        ]),
      );
      expect(args).not.toContain("--extra-attribute");
      expect(args).not.toContain("--update-inputs");
    });

    it("warm build: extra attributes and --update-inputs; the report step reads the result", () => {
      const job = builderJob(input("Warm"));
      const args = container(job, "build").args!;
      expect(args.join(" ")).toContain("--extra-attribute devShells.x86_64-linux.default --extra-attribute checks.x86_64-linux.unit --update-inputs");
      expect(container(job, "report").command).toEqual([
        "nix-image-operator",
        "warm-report",
        "--from",
        "/work/result",
        "--termination-message",
        "/dev/termination-log",
      ]);
    });

    it("push: tags, image config, plain HTTP for a registry configured so", () => {
      const args = container(builderJob(input("Image")), "push").args!;
      expect(args).toEqual(expect.arrayContaining(["--tag", "latest", "--tag", "stable", "--plain-http", "--max-layers", "80"]));
      expect(JSON.parse(args[args.indexOf("--image-config") + 1]!)).toEqual({
        cmd: ["--port", "8080"],
        env: [{ name: "MODE", value: "prod" }],
        exposedPorts: ["8080"],
      });
      expect(container(builderJob(input("Image", { config: testConfig() })), "push").args).not.toContain("--plain-http");
    });

    it("labels, annotations and the owner reference", () => {
      const job = builderJob(input("Image"));
      expect(job.metadata?.labels).toEqual({
        "app.kubernetes.io/managed-by": "nix-image-operator",
        "niximage.io/image": "web",
        "niximage.io/build-kind": "Image",
        "niximage.io/build-number": "7",
      });
      expect(job.spec?.template.metadata?.labels).toEqual(job.metadata?.labels);
      expect(job.metadata?.ownerReferences).toEqual([
        { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", name: "web", uid: fullImage.metadata.uid, controller: true, blockOwnerDeletion: true },
      ]);
      expect(builderJob(input("Image", { rebuildToken: undefined })).metadata?.annotations).not.toHaveProperty("niximage.io/rebuild-token");
    });
  });
});

describe("buildJobName", () => {
  it.each([
    ["web", "Image", 7, "web-build-7"],
    ["web", "Warm", 3, "web-warm-3"],
    ["a".repeat(70), "Image", 12, `${"a".repeat(54)}-build-12`],
    // Cut to fit: no "-" or "." left dangling before the suffix.
    [`${"a".repeat(53)}-.xyz`, "Image", 1, `${"a".repeat(53)}-build-1`],
  ] as const)("%s %s %d -> %s", (name, kind, number, expected) => {
    const out = buildJobName(name, kind, number);
    expect(out).toBe(expected);
    expect(out.length).toBeLessThanOrEqual(63);
  });
});
