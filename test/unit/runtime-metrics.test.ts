import { describe, expect, it } from "vitest";
import { controllerMetricsFactory } from "../../src/runtime/controller-metrics.ts";
import { MetricsRegistry, escapeHelp, escapeLabelValue, exponentialBuckets, formatValue, registerProcessMetrics } from "../../src/runtime/metrics.ts";

describe("metrics text format 0.0.4", () => {
  it("renders counters, gauges and histograms exactly", () => {
    const registry = new MetricsRegistry();
    const requests = registry.counter({ name: "http_requests_total", help: "Requests served.", labelNames: ["code", "method"] });
    const temp = registry.gauge({ name: "room_temperature_celsius", help: "Temperature." });
    const latency = registry.histogram({ name: "rpc_duration_seconds", help: "RPC latency.", labelNames: ["op"], buckets: [0.1, 1, 10] });
    requests.inc({ code: 200, method: "get" });
    requests.inc({ method: "get", code: 200 }, 2);
    requests.inc({ code: "500", method: "post" });
    temp.set(undefined, -3.5);
    latency.observe({ op: "push" }, 0.05);
    latency.observe({ op: "push" }, 0.1);
    latency.observe({ op: "push" }, 5);
    latency.observe({ op: "push" }, 50);

    expect(registry.render()).toBe(
      [
        "# HELP http_requests_total Requests served.",
        "# TYPE http_requests_total counter",
        'http_requests_total{code="200",method="get"} 3',
        'http_requests_total{code="500",method="post"} 1',
        "# HELP room_temperature_celsius Temperature.",
        "# TYPE room_temperature_celsius gauge",
        "room_temperature_celsius -3.5",
        "# HELP rpc_duration_seconds RPC latency.",
        "# TYPE rpc_duration_seconds histogram",
        'rpc_duration_seconds_bucket{op="push",le="0.1"} 2',
        'rpc_duration_seconds_bucket{op="push",le="1"} 2',
        'rpc_duration_seconds_bucket{op="push",le="10"} 3',
        'rpc_duration_seconds_bucket{op="push",le="+Inf"} 4',
        'rpc_duration_seconds_sum{op="push"} 55.15',
        'rpc_duration_seconds_count{op="push"} 4',
        "",
      ].join("\n"),
    );
  });

  it("renders metrics without samples as HELP/TYPE only, and an unlabelled histogram", () => {
    const registry = new MetricsRegistry();
    registry.counter({ name: "a_total", help: "Nothing yet." });
    registry.histogram({ name: "b_seconds", help: "One.", buckets: [1] }).observe(undefined, 2);
    expect(registry.render()).toBe(
      [
        "# HELP a_total Nothing yet.",
        "# TYPE a_total counter",
        "# HELP b_seconds One.",
        "# TYPE b_seconds histogram",
        'b_seconds_bucket{le="1"} 0',
        'b_seconds_bucket{le="+Inf"} 1',
        "b_seconds_sum 2",
        "b_seconds_count 1",
        "",
      ].join("\n"),
    );
  });

  it.each([
    ["plain", "plain"],
    ['say "hi"', 'say \\"hi\\"'],
    ["back\\slash", "back\\\\slash"],
    ["two\nlines", "two\\nlines"],
    ['all\\"\n', 'all\\\\\\"\\n'],
  ])("escapes label value %j as %j", (raw, escaped) => {
    expect(escapeLabelValue(raw)).toBe(escaped);
  });

  it("escapes HELP text (backslash and newline only, quotes stay)", () => {
    expect(escapeHelp('a "b" \\ c\nd')).toBe('a "b" \\\\ c\\nd');
    const registry = new MetricsRegistry();
    registry.gauge({ name: "g", help: "line1\nline2", labelNames: ["path"] }).set({ path: 'C:\\dir\n"x"' }, 1);
    expect(registry.render()).toBe('# HELP g line1\\nline2\n# TYPE g gauge\ng{path="C:\\\\dir\\n\\"x\\""} 1\n');
  });

  it.each([
    [NaN, "NaN"],
    [Infinity, "+Inf"],
    [-Infinity, "-Inf"],
    [0, "0"],
    [1.5e-7, "1.5e-7"],
    [123456789, "123456789"],
  ])("formats %d as %s", (value, text) => {
    expect(formatValue(value)).toBe(text);
  });

  it("validates names, labels, buckets and counter direction", () => {
    const registry = new MetricsRegistry();
    expect(() => registry.counter({ name: "bad-name", help: "" })).toThrow(/invalid metric name/);
    expect(() => registry.counter({ name: "ok", help: "", labelNames: ["__reserved"] })).toThrow(/invalid label/);
    expect(() => registry.histogram({ name: "h", help: "", labelNames: ["le"] })).toThrow(/invalid label/);
    expect(() => registry.histogram({ name: "h2", help: "", buckets: [1, 1] })).toThrow(/increasing/);
    const c = registry.counter({ name: "c_total", help: "", labelNames: ["x"] });
    expect(() => c.inc({ x: "1" }, -1)).toThrow(RangeError);
    expect(() => c.inc({})).toThrow(/takes labels/);
    expect(() => c.inc({ x: "1", y: "2" })).toThrow(/takes labels/);
    expect(() => registry.counter({ name: "c_total", help: "" })).toThrow(/already registered/);
    registry.histogram({ name: "lat", help: "" });
    expect(() => registry.counter({ name: "lat_count", help: "" })).toThrow(/clashes|already/);
  });

  it("gauges go up and down; reset/remove drop series; collect hooks run before render", () => {
    const registry = new MetricsRegistry();
    const g = registry.gauge({ name: "depth", help: "d", labelNames: ["q"] });
    g.inc({ q: "a" }, 5);
    g.dec({ q: "a" }, 2);
    expect(g.get({ q: "a" })).toBe(3);
    g.set({ q: "b" }, 1);
    g.remove({ q: "b" });
    let collected = 0;
    registry.onCollect(() => g.set({ q: "c" }, ++collected));
    expect(registry.render()).toBe('# HELP depth d\n# TYPE depth gauge\ndepth{q="a"} 3\ndepth{q="c"} 1\n');
    g.reset();
    expect(registry.render()).toBe('# HELP depth d\n# TYPE depth gauge\ndepth{q="c"} 2\n');
  });

  it("exponentialBuckets", () => {
    expect(exponentialBuckets(1, 2, 4)).toEqual([1, 2, 4, 8]);
    expect(() => exponentialBuckets(0, 2, 1)).toThrow(RangeError);
  });

  it("process metrics render with the right types", () => {
    const registry = new MetricsRegistry();
    registerProcessMetrics(registry);
    const text = registry.render();
    expect(text).toContain("# TYPE process_cpu_seconds_total counter\n");
    expect(text).toMatch(/^process_resident_memory_bytes \d+$/m);
    expect(text).toMatch(/^process_start_time_seconds \d+$/m);
  });

  it("controller metrics hooks feed the registry", () => {
    const registry = new MetricsRegistry();
    const forController = controllerMetricsFactory(registry);
    const m = forController("niximage");
    m.queue.added?.();
    m.queue.depth?.(4);
    m.queue.retried?.();
    m.workers.reconciled?.("error", 0.002);
    m.workers.reconciled?.("success", 0.002);
    const text = registry.render();
    expect(text).toContain('workqueue_adds_total{name="niximage"} 1\n');
    expect(text).toContain('workqueue_depth{name="niximage"} 4\n');
    expect(text).toContain('workqueue_retries_total{name="niximage"} 1\n');
    expect(text).toContain('controller_reconcile_total{controller="niximage",result="error"} 1\n');
    expect(text).toContain('controller_reconcile_errors_total{controller="niximage"} 1\n');
    expect(text).toContain('controller_reconcile_time_seconds_count{controller="niximage"} 2\n');
  });
});
