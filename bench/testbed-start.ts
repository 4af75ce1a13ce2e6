// How long a cached start (binaries built, nothing else reused) and a teardown of the test bed
// take. Usage: node bench/testbed-start.ts [runs=3]
import { startTestBed } from "../test/support/global-setup.ts";

const runs = Number(process.argv[2] ?? 3);
const totals: number[] = [];
for (let i = 1; i <= runs; i++) {
  const t0 = performance.now();
  const started = await startTestBed();
  const up = performance.now() - t0;
  const t1 = performance.now();
  await started.stop();
  const down = performance.now() - t1;
  totals.push(up);
  const parts = Object.entries(started.timings)
    .filter(([k]) => k !== "total")
    .sort((a, b) => a[1] - b[1])
    .map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}s`)
    .join(", ");
  console.log(`run ${i}: up ${(up / 1000).toFixed(2)}s, down ${(down / 1000).toFixed(2)}s (ready at: ${parts})`);
}
totals.sort((a, b) => a - b);
const median = totals[Math.floor(totals.length / 2)] ?? 0;
console.log(`median start over ${runs} run(s): ${(median / 1000).toFixed(2)}s`);
