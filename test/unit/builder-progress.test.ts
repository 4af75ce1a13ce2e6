import { describe, expect, it } from "vitest";
import { describeProgress, formatBytes, ProgressReporter } from "../../src/builder/progress-reporter.ts";
import { createLogger } from "../../src/log/logger.ts";

function capture(isTTY: boolean) {
  const writes: string[] = [];
  const stream = Object.assign({ write: (s: string) => (writes.push(s), true) }, { isTTY, columns: 80 }) as unknown as NodeJS.WritableStream & {
    isTTY: boolean;
  };
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: "info", destination: { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) } });
  let now = 0;
  const reporter = new ProgressReporter({ stream, logger, now: () => now, logIntervalMs: 5000, redrawIntervalMs: 100 });
  return { writes, lines, reporter, tick: (ms: number) => (now += ms) };
}

const layerProgress = (bytesDone: number) => ({ phase: "layers" as const, bytesDone, bytesTotal: 300 * 2 ** 20 });

describe("progress", () => {
  it("formats bytes and the line", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(45.1 * 2 ** 20)).toBe("45.1 MiB");
    expect(describeProgress("push", "layers", 12_400)).toBe("[  12.4s] push: layers");
  });

  it("on a terminal: one line rewritten in place, throttled, cleared at the end", () => {
    const { writes, lines, reporter, tick } = capture(true);
    reporter.phase("push", "acme/web (package)");
    tick(10);
    reporter.push(layerProgress(1024)); // throttled (10 ms after the last draw)
    tick(200);
    reporter.push({ ...layerProgress(45.1 * 2 ** 20), layer: { index: 0, count: 12, status: "pushed" } });
    reporter.done();
    expect(writes).toEqual([
      "\r\u001b[2K[   0.0s] push: acme/web (package)",
      "\r\u001b[2K[   0.2s] push: layers, 1/12 layers, 45.1 MiB / 300.0 MiB",
      "\r\u001b[2K",
    ]);
    expect(lines).toEqual([]);
  });

  it("otherwise: JSON log lines on phase changes and every few seconds", () => {
    const { writes, lines, reporter, tick } = capture(false);
    reporter.phase("build", "default");
    tick(1000);
    reporter.push(layerProgress(1)); // within the interval: no line
    tick(5000);
    reporter.push(layerProgress(2 ** 20));
    expect(writes).toEqual([]);
    expect(lines.map((l) => [l.phase, l.msg])).toEqual([
      ["build", "build: default"],
      ["build", "build: layers, 1.0 MiB / 300.0 MiB"],
    ]);
    expect(lines[1]).toMatchObject({ level: "info", pushPhase: "layers", bytesDone: 2 ** 20, elapsedSeconds: 6 });
  });
});
