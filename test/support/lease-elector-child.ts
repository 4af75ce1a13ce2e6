// A leader-election candidate in its own process, for integration tests that kill it:
//   node test/support/lease-elector-child.ts <kubeconfig> <namespace> <lease> <identity> <leaseMs> <renewMs> <retryMs>
// Prints one JSON line per event on stdout ({"event":"started"|"stopped"|"lost"|"leader","at":ms,...});
// SIGTERM runs the graceful shutdown (releases the Lease) and exits 0; a lost Lease exits 1.
import { KubeConfig } from "@kubernetes/client-node";
import { createLogger } from "../../src/log/logger.ts";
import { LeaderElector } from "../../src/runtime/leader-election.ts";
import { KubeLeaseStore } from "../../src/runtime/lease-store.ts";
import { GracefulShutdown } from "../../src/runtime/shutdown.ts";

const [kubeconfig, namespace, lease, identity, leaseMs, renewMs, retryMs] = process.argv.slice(2);
if (!kubeconfig || !namespace || !lease || !identity || !leaseMs || !renewMs || !retryMs) {
  process.stderr.write("usage: lease-elector-child.ts <kubeconfig> <namespace> <lease> <identity> <leaseMs> <renewMs> <retryMs>\n");
  process.exit(2);
}
const emit = (event: string, extra: Record<string, unknown> = {}) => process.stdout.write(JSON.stringify({ event, at: Date.now(), identity, ...extra }) + "\n");

const kc = new KubeConfig();
kc.loadFromFile(kubeconfig);
const logger = createLogger({ level: process.env.LOG_LEVEL ?? "info" });
const shutdown = new GracefulShutdown({ logger, exit: (code) => process.exit(code) });
const elector = new LeaderElector({
  store: new KubeLeaseStore(kc, namespace, lease),
  identity,
  logger,
  leaseDurationMs: Number(leaseMs),
  renewDeadlineMs: Number(renewMs),
  retryPeriodMs: Number(retryMs),
  onStartedLeading: () => emit("started"),
  onStoppedLeading: () => emit("stopped"),
  onLost: () => {
    emit("lost");
    void shutdown.shutdown("leadership lost", 1);
  },
  onNewLeader: (leader) => emit("leader", { leader }),
});
shutdown.register("release", "lease", () => elector.stop());
emit("ready");
void elector.run();
