import { defineConfig } from "vitest/config";

// The e2e tier (a real single-node cluster: kubelet, containerd, builder pods; root only) is
// included only when asked for: `vitest run --project e2e` (npm run test:e2e) or NIO_E2E=1.
const argv = process.argv.slice(2);
const projectRequested = (name: string) => argv.some((a, i) => a === `--project=${name}` || (a === "--project" && argv[i + 1] === name));
const e2eRequested = process.env.NIO_E2E === "1" || projectRequested("e2e");
// Argo CD is a second Flux-sized Go build, so its tier is opt-in as a whole (never a skipped test):
// `scripts/setup.sh --with-argocd && npm run test:argocd`.
const argocdRequested = process.env.NIO_ARGOCD === "1" || projectRequested("argocd");
const argocdTests = ["test/integration/gitops-argocd.test.ts"];

// Two tiers run by `npm test`: pure unit tests, and integration tests against real components
// (kube-apiserver, etcd, kube-controller-manager, docker-registry, Nix, git over HTTP) that the
// global setup starts once per run on loopback.
export default defineConfig({
  test: {
    reporters: ["default", "./test/support/summary-reporter.ts"],
    projects: [
      {
        test: { name: "unit", include: ["test/unit/**/*.test.ts"] },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          exclude: argocdTests,
          globalSetup: ["test/support/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          pool: "forks",
        },
      },
      ...(argocdRequested
        ? [
            {
              test: {
                name: "argocd",
                include: argocdTests,
                globalSetup: ["test/support/global-setup.ts"],
                testTimeout: 300_000,
                hookTimeout: 300_000,
                pool: "forks" as const,
              },
            },
          ]
        : []),
      ...(e2eRequested
        ? [
            {
              test: {
                name: "e2e",
                include: ["test/e2e/**/*.test.ts"],
                globalSetup: ["test/e2e/support/global-setup.ts"],
                testTimeout: 15 * 60_000,
                hookTimeout: 20 * 60_000,
                pool: "forks" as const,
                fileParallelism: false,
              },
            },
          ]
        : []),
    ],
  },
});
