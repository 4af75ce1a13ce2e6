// Fault suite (docs/reliability.md), case 1: the controller process killed at random moments and at
// every named crash point (NIO_CRASH_AT, src/runtime/crash-point.ts; faults-crash-points.test.ts)
// while many NixImages build and roll out. After it runs undisturbed, every NixImage must be Ready on the image built for its
// revision with its Deployment patched, and the audit log must show no second build and no second
// patch. Scale with NIO_FAULT_IMAGES / NIO_FAULT_KILLS (CI defaults keep the file near a minute).
import { describe, expect, it } from "vitest";
import { waitForExit } from "../support/controller-process.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { sleep } from "../support/process.ts";

const images = Number(process.env.NIO_FAULT_IMAGES ?? 12);
const kills = Number(process.env.NIO_FAULT_KILLS ?? 6);

describe("faults: crashes", () => {
  it(
    `case 1: SIGKILL at ${kills} random moments while ${images} NixImages build and roll out -> 0 duplicate builds, 0 lost, 0 repeated patches`,
    { timeout: 300_000 },
    async () => {
      const s = await faultScenario({
        prefix: "sigkill",
        config: { store: { poolSize: 16 }, concurrency: { builds: 16 } },
        kubelet: { holdMs: () => 200 + Math.random() * 1500 },
      });
      const names = Array.from({ length: images }, (_, i) => `k${i}`);
      const ctl = await s.startController("one");
      let holder = await s.waitLeading(ctl, undefined);
      // New NixImages arrive in every round, so each kill lands among Job creates, status writes and rollouts.
      const perRound = Math.ceil(names.length / kills);
      const killedAt: number[] = [];
      for (let i = 0; i < kills; i++) {
        await s.createImages(names.slice(i * perRound, (i + 1) * perRound));
        await sleep(Math.random() * 1500);
        ctl.signal("SIGKILL");
        killedAt.push(Date.now());
        await waitForExit(ctl, "SIGKILL");
        await ctl.restart();
        holder = await s.waitLeading(ctl, holder);
      }
      await s.createImages(names.slice(kills * perRound));
      const lastRestart = Date.now();
      await s.waitConverged(names, 120_000);
      const convergedMs = Date.now() - lastRestart;
      const tally = await s.tally(names);
      expect(tally).toMatchObject({ duplicateBuilds: 0, duplicateRuns: 0, repeatedPatches: 0 });
      await recordFigures("1-sigkill", {
        images,
        kills,
        duplicateBuilds: tally.duplicateBuilds,
        lostBuilds: 0,
        repeatedPatches: tally.repeatedPatches,
        convergedAfterLastRestartMs: convergedMs,
      });
    },
  );
});
