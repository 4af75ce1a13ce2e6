import { loadOperatorConfig } from "../config/operator-config.ts";
import { startOperator } from "../controller/operator.ts";
import { processClock } from "../runtime/clock.ts";
import { loadKubeAccess } from "../runtime/kube-config.ts";
import { GracefulShutdown } from "../runtime/shutdown.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { controllerHelp } from "./command-help.ts";

export const controllerCommand: Command = {
  name: "controller",
  help: controllerHelp,
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
      clock: processClock(context.env),
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
