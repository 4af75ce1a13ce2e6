import type { MetricsRegistry } from "./metrics.ts";
import { exponentialBuckets } from "./metrics.ts";
import type { WorkQueueMetrics } from "./work-queue.ts";
import type { WorkerMetrics } from "./workers.ts";

export interface ControllerMetrics {
  queue: WorkQueueMetrics;
  workers: WorkerMetrics;
}

/**
 * Registers the work-queue and reconcile metrics once (names as in client-go / controller-runtime,
 * so existing dashboards fit) and hands out hooks per controller name.
 */
export function controllerMetricsFactory(registry: MetricsRegistry): (controller: string) => ControllerMetrics {
  const byName = { labelNames: ["name"] };
  const byController = { labelNames: ["controller"] };
  const seconds = exponentialBuckets(0.001, 2, 16);
  const depth = registry.gauge({ name: "workqueue_depth", help: "Current depth of the work queue.", ...byName });
  const adds = registry.counter({ name: "workqueue_adds_total", help: "Total number of adds handled by the work queue.", ...byName });
  const latency = registry.histogram({
    name: "workqueue_queue_duration_seconds",
    help: "How long a key stays in the queue before it is processed.",
    buckets: seconds,
    ...byName,
  });
  const work = registry.histogram({ name: "workqueue_work_duration_seconds", help: "How long processing a key takes.", buckets: seconds, ...byName });
  const retries = registry.counter({ name: "workqueue_retries_total", help: "Total number of retries handled by the work queue.", ...byName });
  const reconciles = registry.counter({
    name: "controller_reconcile_total",
    help: "Total number of reconciles per controller and result.",
    labelNames: ["controller", "result"],
  });
  const errors = registry.counter({ name: "controller_reconcile_errors_total", help: "Total number of failed reconciles per controller.", ...byController });
  const time = registry.histogram({ name: "controller_reconcile_time_seconds", help: "Time per reconcile.", buckets: seconds, ...byController });
  const active = registry.gauge({ name: "controller_active_workers", help: "Number of workers reconciling right now.", ...byController });

  return (controller) => {
    const name = { name: controller };
    const ctl = { controller };
    depth.set(name, 0);
    active.set(ctl, 0);
    errors.inc(ctl, 0);
    return {
      queue: {
        depth: (value) => depth.set(name, value),
        added: () => adds.inc(name),
        queueLatency: (s) => latency.observe(name, s),
        workDuration: (s) => work.observe(name, s),
        retried: () => retries.inc(name),
      },
      workers: {
        reconciled: (result, s) => {
          reconciles.inc({ controller, result });
          if (result === "error") errors.inc(ctl);
          time.observe(ctl, s);
        },
        active: (count) => active.set(ctl, count),
      },
    };
  };
}
