// What the e2e tier's global setup provides to tests: `inject("e2e")`.
import type { ClusterInfo } from "./cluster.ts";

interface E2eContext {
  cluster: ClusterInfo;
  /** Smart-HTTP git server reachable from pods (node IP). */
  git: { baseUrl: string; root: string };
  /** Scratch directory for the tests (under the run directory). */
  workDir: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    e2e: E2eContext;
  }
}
