import { loadOperatorConfig } from "../config/operator-config.ts";
import { startOperator } from "../controller/operator.ts";
import { loadKubeAccess } from "../runtime/kube-config.ts";
import { GracefulShutdown } from "../runtime/shutdown.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";

export const controllerCommand: Command = {
  name: "controller",
  help: `Usage: nix-image-operator controller [--config FILE] [--kubeconfig FILE] [--metrics-address HOST:PORT]

Watches NixImages, runs builder Jobs on leased Nix store volumes, records results in status.
With leader election on (the default), only one replica acts; the others keep warm caches and
take over within the lease duration when the leader goes away.

Configuration comes from the file named by --config or NIX_IMAGE_OPERATOR_CONFIG (YAML), with
LOG_LEVEL, WATCH_NAMESPACES, METRICS_ADDRESS and LEADER_ELECTION_NAMESPACE overriding single
settings. Every setting and its default: README, section "Operator configuration".

Flags:
  --config FILE              operator config (YAML)
  --kubeconfig FILE          kubeconfig to use (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
  --metrics-address H:P      serve /healthz, /readyz and /metrics here (default from config: 0.0.0.0:8080)
  -h, --help                 this help

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a lost lease or a failed shutdown.`,
  async run(context) {
    const { values } = parseFlags(
      context.argv,
      { config: { type: "string" }, kubeconfig: { type: "string" }, "metrics-address": { type: "string" } },
      "controller",
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const config = await loadOperatorConfig({ file: values.config, env: context.env });
    const address = values["metrics-address"] ?? config.metrics.address;
    const match = /^(.*):(\d+)$/.exec(address);
    if (!match) throw new UsageError(`controller: --metrics-address must be HOST:PORT, got "${address}"`);
    const kc = await loadKubeAccess({ file: values.kubeconfig, env: context.env });
    const logger = context.logger.child({ component: "operator" });
    logger.level = config.logLevel;

    const shutdown = new GracefulShutdown({ logger, exit: (code) => (process.exitCode = code) });
    const operator = await startOperator({
      kc,
      config,
      logger,
      metricsHost: match[1] || "0.0.0.0",
      metricsPort: Number(match[2]),
      onLostLeadership: () => void shutdown.shutdown("lost the leader lease", 1),
    });
    shutdown.register("drain", "controller", () => operator.stop());
    logger.info({ identity: operator.identity, metrics: address, namespaces: config.namespaces.length ? config.namespaces : "all" }, "controller started");
    const result = await new Promise<{ exitCode: number }>((resolve) => {
      shutdown.signal.addEventListener("abort", () => resolve(shutdown.shutdown("stopping")), { once: true });
    });
    return result.exitCode;
  },
};
