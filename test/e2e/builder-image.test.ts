// The builder image the e2e cluster runs carries a current Nix (Debian trixie's 2.26), while the
// integration tier keeps bookworm's 2.8: both ends of the supported range are exercised. Checked
// by running the image as a pod on the real kubelet, not by reading how it was built.
import { describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { kube, waitFor } from "./support/kube.ts";

const { cluster } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-builder-image";

describe("the e2e builder image", () => {
  it("runs Nix 2.26 or newer in a pod", async () => {
    await k.kubectl(["create", "namespace", ns]);
    try {
      await k.apply(
        JSON.stringify({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: "nix-version", namespace: ns },
          spec: {
            restartPolicy: "Never",
            automountServiceAccountToken: false,
            containers: [{ name: "nix", image: cluster.images.builder.reference, command: ["nix", "--version"] }],
          },
        }),
      );
      const phase = await waitFor(
        "the nix --version pod to finish",
        async () => {
          const pod = await k.get<{ status?: { phase?: string } }>("pod", "nix-version", ns);
          return pod?.status?.phase === "Succeeded" || pod?.status?.phase === "Failed" ? pod.status.phase : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 500 },
      );
      const output = await k.kubectl(["-n", ns, "logs", "nix-version"]);
      expect(phase, output).toBe("Succeeded");
      const version = /nix \(Nix\) (\d+)\.(\d+)/.exec(output);
      expect(version, output).not.toBeNull();
      expect(Number(version![1]) * 1000 + Number(version![2]), output).toBeGreaterThanOrEqual(2026);
    } finally {
      await k.kubectl(["delete", "namespace", ns, "--wait=false"]);
    }
  });
});
