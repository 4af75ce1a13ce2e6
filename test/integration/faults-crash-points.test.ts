// Fault suite (docs/reliability.md), case 1 at the named crash points: the controller exits 137
// (NIO_CRASH_AT=<point>:2, src/runtime/crash-point.ts) after a store-volume lease, after a Job
// POST, after a rollout patch and before a status write, one after the other, while NixImages
// build and roll out. After the last restart every NixImage must be Ready on its image with its
// Deployment patched, with no second build and no second patch (audit log).
import { describe, expect, it } from "vitest";
import { waitForExit } from "../support/controller-process.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";

const images = Number(process.env.NIO_FAULT_IMAGES ?? 12);
const crashPoints = ["after-lease", "after-job-post", "after-rollout-patch", "before-status-write"] as const;

describe("faults: crash points", () => {
  it(
    "case 1: exit 137 at every crash point in turn while NixImages build and roll out -> 0 duplicate builds, 0 lost, 0 repeated patches",
    { timeout: 300_000 },
    async () => {
      const s = await faultScenario({
        prefix: "crashpt",
        config: { store: { poolSize: 16 }, concurrency: { builds: 16 } },
        kubelet: { holdMs: () => 300 + Math.random() * 1000 },
      });
      const names = Array.from({ length: images }, (_, i) => `c${i}`);
      const ctl = await s.startController("one", { crashAt: `${crashPoints[0]}:2` });
      let holder: string | undefined;
      await s.createImages(names);
      const crashed: string[] = [];
      for (let i = 0; i < crashPoints.length; i++) {
        const how = await waitForExit(ctl, `NIO_CRASH_AT=${crashPoints[i]}`, 60_000);
        expect(how, `crash point ${crashPoints[i]}`).toBe("exit code 137");
        crashed.push(crashPoints[i]!);
        holder = await s.leaseHolder();
        const next = crashPoints[i + 1];
        await ctl.restart(next ? { NIO_CRASH_AT: `${next}:2` } : {});
        // The restarted controller leads; on a busy machine it may already have led up to its
        // next crash point and exited there (137) before the Lease was looked at.
        await s.waitLeading(ctl, holder).catch(async (error: unknown) => {
          if (next && !ctl.running() && (await ctl.exited()) === "exit code 137") return;
          throw error;
        });
      }
      await s.waitConverged(names, 120_000);
      const tally = await s.tally(names);
      expect(tally).toMatchObject({ duplicateBuilds: 0, duplicateRuns: 0, repeatedPatches: 0 });
      await recordFigures("1-crash-points", {
        images,
        crashed,
        duplicateBuilds: tally.duplicateBuilds,
        lostBuilds: 0,
        repeatedPatches: tally.repeatedPatches,
      });
    },
  );
});
