/**
 * A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
 * exposition format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
 */

export type Labels = Readonly<Record<string, string | number>>;

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Default histogram buckets in seconds (the same as the Go client's). */
const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** `count` buckets starting at `start`, each `factor` times the previous. */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  if (!(start > 0) || !(factor > 1) || !(count >= 1)) throw new RangeError("exponentialBuckets needs start > 0, factor > 1, count >= 1");
  return Array.from({ length: count }, (_, i) => start * factor ** i);
}

interface MetricOptions {
  name: string;
  help: string;
  labelNames?: readonly string[];
}

export interface HistogramOptions extends MetricOptions {
  /** Upper bounds, strictly increasing; +Inf is added. Default DEFAULT_BUCKETS. */
  buckets?: readonly number[];
}

type MetricType = "counter" | "gauge" | "histogram";

interface RenderableMetric {
  readonly name: string;
  readonly type: MetricType;
  render(): string;
}

abstract class Metric<V> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: MetricType;
  protected readonly series = new Map<string, { labels: string[]; value: V }>();

  constructor(options: MetricOptions, reserved: readonly string[] = []) {
    if (!METRIC_NAME.test(options.name)) throw new Error(`invalid metric name ${JSON.stringify(options.name)}`);
    const labelNames = options.labelNames ?? [];
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith("__") || reserved.includes(label)) {
        throw new Error(`invalid label name ${JSON.stringify(label)} for ${options.name}`);
      }
    }
    if (new Set(labelNames).size !== labelNames.length) throw new Error(`duplicate label name for ${options.name}`);
    this.name = options.name;
    this.help = options.help;
    this.labelNames = [...labelNames];
  }

  /** Label values in `labelNames` order; every declared label must be given, no others. */
  protected labelValues(labels: Labels | undefined): string[] {
    const given = labels ?? {};
    const keys = Object.keys(given);
    if (keys.length !== this.labelNames.length || keys.some((k) => !this.labelNames.includes(k))) {
      throw new Error(`${this.name} takes labels [${this.labelNames.join(", ")}], got [${keys.join(", ")}]`);
    }
    return this.labelNames.map((name) => String(given[name]));
  }

  protected entry(labels: Labels | undefined, initial: () => V): { labels: string[]; value: V } {
    const values = this.labelValues(labels);
    const id = JSON.stringify(values);
    let entry = this.series.get(id);
    if (entry === undefined) {
      entry = { labels: values, value: initial() };
      this.series.set(id, entry);
    }
    return entry;
  }

  /** Drops every series (e.g. a gauge whose label sets are recomputed on each collect). */
  reset(): void {
    this.series.clear();
  }

  /** Drops one series. */
  remove(labels?: Labels): void {
    this.series.delete(JSON.stringify(this.labelValues(labels)));
  }

  protected labelPairs(values: readonly string[], extra?: [string, string]): string {
    const pairs = this.labelNames.map((name, i) => `${name}="${escapeLabelValue(values[i] ?? "")}"`);
    if (extra) pairs.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
    return pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
  }

  abstract renderSamples(): string[];

  render(): string {
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
    lines.push(...this.renderSamples());
    return lines.join("\n") + "\n";
  }
}

export class Counter extends Metric<number> {
  readonly type = "counter";

  inc(labels?: Labels, value = 1): void {
    if (!(value >= 0)) throw new RangeError(`counter ${this.name} can only go up, got ${value}`);
    this.entry(labels, () => 0).value += value;
  }

  /** Mirrors a total kept elsewhere (e.g. CPU seconds from the OS); it must not go down. */
  setTotal(labels: Labels | undefined, value: number): void {
    const entry = this.entry(labels, () => 0);
    if (!(value >= entry.value)) throw new RangeError(`counter ${this.name} can only go up, got ${value} after ${entry.value}`);
    entry.value = value;
  }

  get(labels?: Labels): number {
    return this.series.get(JSON.stringify(this.labelValues(labels)))?.value ?? 0;
  }

  renderSamples(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${this.labelPairs(s.labels)} ${formatValue(s.value)}`);
  }
}

export class Gauge extends Metric<number> {
  readonly type = "gauge";

  set(labels: Labels | undefined, value: number): void {
    this.entry(labels, () => 0).value = value;
  }

  inc(labels?: Labels, value = 1): void {
    this.entry(labels, () => 0).value += value;
  }

  dec(labels?: Labels, value = 1): void {
    this.entry(labels, () => 0).value -= value;
  }

  get(labels?: Labels): number {
    return this.series.get(JSON.stringify(this.labelValues(labels)))?.value ?? 0;
  }

  renderSamples(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${this.labelPairs(s.labels)} ${formatValue(s.value)}`);
  }
}

interface HistogramValue {
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram extends Metric<HistogramValue> {
  readonly type = "histogram";
  readonly buckets: readonly number[];

  constructor(options: HistogramOptions) {
    super(options, ["le"]);
    const buckets = [...(options.buckets ?? DEFAULT_BUCKETS)].filter((b) => b !== Infinity);
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i] as number;
      if (Number.isNaN(b) || (i > 0 && b <= (buckets[i - 1] as number))) {
        throw new Error(`histogram ${options.name} buckets must be strictly increasing numbers`);
      }
    }
    this.buckets = buckets;
  }

  observe(labels: Labels | undefined, value: number): void {
    const entry = this.entry(labels, () => ({ counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    const v = entry.value;
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= (this.buckets[i] as number)) v.counts[i] = (v.counts[i] ?? 0) + 1;
    }
    v.sum += value;
    v.count += 1;
  }

  /** Count and sum of one series (for tests). */
  get(labels?: Labels): { count: number; sum: number } {
    const v = this.series.get(JSON.stringify(this.labelValues(labels)))?.value;
    return { count: v?.count ?? 0, sum: v?.sum ?? 0 };
  }

  renderSamples(): string[] {
    const lines: string[] = [];
    for (const s of this.series.values()) {
      this.buckets.forEach((bound, i) => {
        lines.push(`${this.name}_bucket${this.labelPairs(s.labels, ["le", formatValue(bound)])} ${formatValue(s.value.counts[i] ?? 0)}`);
      });
      lines.push(`${this.name}_bucket${this.labelPairs(s.labels, ["le", "+Inf"])} ${formatValue(s.value.count)}`);
      lines.push(`${this.name}_sum${this.labelPairs(s.labels)} ${formatValue(s.value.sum)}`);
      lines.push(`${this.name}_count${this.labelPairs(s.labels)} ${formatValue(s.value.count)}`);
    }
    return lines;
  }
}

/** Holds metrics by name and renders them all. */
export class MetricsRegistry {
  readonly #metrics = new Map<string, RenderableMetric>();
  readonly #collectors: (() => void)[] = [];

  counter(options: MetricOptions): Counter {
    return this.#register(new Counter(options));
  }

  gauge(options: MetricOptions): Gauge {
    return this.#register(new Gauge(options));
  }

  histogram(options: HistogramOptions): Histogram {
    return this.#register(new Histogram(options));
  }

  /** A function run before every render, to refresh gauges computed on demand. */
  onCollect(collect: () => void): void {
    this.#collectors.push(collect);
  }

  /** The text exposition format: metrics sorted by name, one HELP/TYPE block each. */
  render(): string {
    for (const collect of this.#collectors) collect();
    return [...this.#metrics.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((m) => m.render())
      .join("");
  }

  #register<M extends RenderableMetric>(metric: M): M {
    const suffixed = metric.type === "histogram" ? ["_bucket", "_sum", "_count"].map((s) => metric.name + s) : [];
    for (const name of [metric.name, ...suffixed]) {
      if (this.#metrics.has(name)) throw new Error(`metric ${name} is already registered`);
    }
    for (const existing of this.#metrics.values()) {
      if (existing.type === "histogram" && ["_bucket", "_sum", "_count"].some((s) => existing.name + s === metric.name)) {
        throw new Error(`metric ${metric.name} clashes with histogram ${existing.name}`);
      }
    }
    this.#metrics.set(metric.name, metric);
    return metric;
  }
}

/** Label values escape backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text escapes backslash and line feed. */
export function escapeHelp(help: string): string {
  return help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Sample values as Prometheus writes them: NaN, +Inf, -Inf, otherwise the shortest exact decimal. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** Process metrics a scrape usually expects (resident memory, CPU, heap, start time). */
export function registerProcessMetrics(registry: MetricsRegistry): void {
  const cpu = registry.counter({ name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds." });
  const rss = registry.gauge({ name: "process_resident_memory_bytes", help: "Resident memory size in bytes." });
  const heap = registry.gauge({ name: "nodejs_heap_used_bytes", help: "V8 heap in use in bytes." });
  const start = registry.gauge({ name: "process_start_time_seconds", help: "Start time of the process since unix epoch in seconds." });
  start.set(undefined, Math.round(Date.now() / 1000 - process.uptime()));
  registry.onCollect(() => {
    const usage = process.cpuUsage();
    cpu.setTotal(undefined, (usage.user + usage.system) / 1e6);
    const memory = process.memoryUsage();
    rss.set(undefined, memory.rss);
    heap.set(undefined, memory.heapUsed);
  });
}
