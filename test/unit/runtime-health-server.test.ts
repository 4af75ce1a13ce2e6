import { afterEach, describe, expect, it } from "vitest";
import { informersReady, startHealthServer, type HealthServer } from "../../src/runtime/health-server.ts";
import { MetricsRegistry } from "../../src/runtime/metrics.ts";

let server: HealthServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function get(path: string, method = "GET") {
  const res = await fetch(`http://127.0.0.1:${server?.port}${path}`, { method });
  return { status: res.status, type: res.headers.get("content-type"), body: await res.text() };
}

describe("health server", () => {
  it("serves healthz, readyz (with reasons and ?verbose) and metrics on loopback", async () => {
    const registry = new MetricsRegistry();
    registry.counter({ name: "x_total", help: "X." }).inc();
    let synced = false;
    server = await startHealthServer({
      port: 0,
      host: "127.0.0.1",
      registry,
      readinessChecks: { informers: () => synced || "niximages not synced", ping: async () => true },
    });

    expect(await get("/healthz")).toMatchObject({ status: 200, body: "ok\n" });
    expect(await get("/readyz")).toEqual({
      status: 503,
      type: "text/plain; charset=utf-8",
      body: "[-]informers failed: niximages not synced\n[+]ping ok\nnot ok\n",
    });
    synced = true;
    expect(await get("/readyz")).toMatchObject({ status: 200, body: "ok\n" });
    expect(await get("/readyz?verbose")).toMatchObject({ status: 200, body: "[+]informers ok\n[+]ping ok\nok\n" });
    expect(await get("/metrics")).toEqual({
      status: 200,
      type: "text/plain; version=0.0.4; charset=utf-8",
      body: "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n",
    });
    expect((await get("/nope")).status).toBe(404);
    expect((await get("/healthz", "POST")).status).toBe(405);
    expect(await get("/readyz", "HEAD")).toMatchObject({ status: 200, body: "" });
  });

  it("a throwing or false check fails with a reason; liveness checks apply to /healthz", async () => {
    server = await startHealthServer({
      port: 0,
      host: "127.0.0.1",
      livenessChecks: { loop: () => false },
      readinessChecks: {
        boom: () => {
          throw new Error("kaput");
        },
      },
    });
    expect(await get("/healthz")).toMatchObject({ status: 503, body: "[-]loop failed: failed\nnot ok\n" });
    expect(await get("/readyz")).toMatchObject({ status: 503, body: "[-]boom failed: kaput\nnot ok\n" });
    expect((await get("/metrics")).status).toBe(404); // no registry given
  });

  it("informersReady names informers not synced, or without a watch for longer than the grace", () => {
    let now = 100_000;
    const a = { name: "niximages", synced: false, down: 0 as number | undefined, hasSynced: () => a.synced, notWatchingSince: () => a.down };
    const b = { name: "jobs", hasSynced: () => true, notWatchingSince: () => undefined };
    const check = informersReady([a, b], 30_000, () => now);
    expect(check()).toBe("niximages: not synced");
    a.synced = true;
    a.down = now - 30_000;
    expect(check()).toBe(true); // a short gap (a re-watch) is normal
    now += 1_000;
    expect(check()).toBe("niximages: no watch for 31s");
    a.down = undefined;
    expect(check()).toBe(true);
  });
});
