import { defineConfig } from "vitest/config";

// Two tiers run by `npm test`: pure unit tests, and integration tests against real components
// (kube-apiserver, etcd, kube-controller-manager, docker-registry, Nix, git over HTTP) that the
// global setup starts once per run on loopback.
export default defineConfig({
  test: {
    projects: [
      {
        test: { name: "unit", include: ["test/unit/**/*.test.ts"] },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/support/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          pool: "forks",
        },
      },
    ],
  },
});
