import { EventEmitter } from "node:events";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { GracefulShutdown, type SignalSource } from "../../src/runtime/shutdown.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";

const logger = pino({ level: "silent" });

function setup(phaseTimeoutsMs = {}) {
  const clock = new FakeClock();
  const signals = new EventEmitter();
  const exits: number[] = [];
  const shutdown = new GracefulShutdown({
    logger,
    clock,
    signalSource: signals as unknown as SignalSource,
    exit: (code) => exits.push(code),
    phaseTimeoutsMs,
  });
  return { clock, signals, exits, shutdown };
}

describe("GracefulShutdown", () => {
  it("on SIGTERM aborts the signal and runs the phases in order, then exits 0", async () => {
    const { signals, exits, shutdown } = setup();
    const order: string[] = [];
    shutdown.register("close", "health", () => void order.push("close"));
    shutdown.register("release", "lease", async () => void order.push("release"));
    shutdown.register("drain", "workers", async () => {
      await flushAsync(1);
      order.push("drain");
    });
    shutdown.register("stop-accepting", "queue", () => void order.push(`stop(aborted=${shutdown.signal.aborted})`));
    expect(shutdown.signal.aborted).toBe(false);
    signals.emit("SIGTERM");
    expect(shutdown.signal.aborted).toBe(true);
    const result = await shutdown.shutdown("again"); // same run
    expect(result).toEqual({ reason: "received SIGTERM", clean: true, exitCode: 0 });
    expect(order).toEqual(["stop(aborted=true)", "drain", "release", "close"]);
    expect(exits).toEqual([0]);
    expect(signals.listenerCount("SIGTERM")).toBe(0);
  });

  it("a phase past its deadline aborts its hooks' signal and the next phases still run", async () => {
    const { clock, exits, shutdown } = setup({ drain: 1_000 });
    let drainSignal: AbortSignal | undefined;
    let released = false;
    shutdown.register("drain", "workers", (deadline) => {
      drainSignal = deadline;
      return new Promise(() => {}); // never finishes
    });
    shutdown.register("release", "lease", () => {
      released = true;
    });
    const done = shutdown.shutdown("leadership lost", 1);
    await clock.advance(999);
    expect(drainSignal?.aborted).toBe(false);
    expect(released).toBe(false);
    await clock.advance(1);
    const result = await done;
    expect(drainSignal?.aborted).toBe(true);
    expect(released).toBe(true);
    expect(result).toEqual({ reason: "leadership lost", clean: false, exitCode: 1 });
    expect(exits).toEqual([1]);
  });

  it("a failing hook makes the shutdown unclean (exit 1) but does not stop the others", async () => {
    const { exits, shutdown } = setup();
    let closed = false;
    shutdown.register("drain", "bad", () => {
      throw new Error("nope");
    });
    shutdown.register("close", "health", () => {
      closed = true;
    });
    expect(await shutdown.shutdown("test")).toMatchObject({ clean: false, exitCode: 1 });
    expect(closed).toBe(true);
    expect(exits).toEqual([1]);
  });

  it("an abort listener that asks to shut down again gets the first run and its exit code", async () => {
    const { exits, shutdown } = setup();
    let again: Promise<{ exitCode: number }> | undefined;
    shutdown.signal.addEventListener(
      "abort",
      () => {
        again = shutdown.shutdown("stopping");
      },
      { once: true },
    );
    const first = await shutdown.shutdown("lost the leader lease", 1);
    expect(first.exitCode).toBe(1);
    expect(await again).toBe(first);
    expect(exits).toEqual([1]);
  });

  it("a second signal during shutdown exits at once", async () => {
    const { signals, exits, shutdown } = setup();
    shutdown.register("drain", "slow", () => new Promise(() => {}));
    signals.emit("SIGINT");
    await flushAsync();
    signals.emit("SIGTERM");
    expect(exits).toEqual([1]);
    shutdown.dispose();
  });
});
