// Fault suite (docs/reliability.md), case 3: the API server the controller talks to is restarted
// three times while NixImages build and roll out. The test bed's API server is shared by every test
// file, so this starts a second kube-apiserver of its own on the same etcd (as in an HA control
// plane), points the controller at it, and stops and starts it on the same port. Its own audit log
// joins the oracle. A controller that loses its lease meanwhile exits and is started again, as its
// pod would be.
import { join } from "node:path";
import { mkdir } from "node:fs/promises";
import { describe, expect, it, onTestFinished } from "vitest";
import { loadKubePki, startKubeApiserver, type ApiServer } from "../support/kube-apiserver.ts";
import { keepRunning } from "../support/controller-process.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { testbed, waitFor } from "../support/kube.ts";
import { freePort } from "../support/process.ts";

describe("faults: API server restarts", () => {
  it(
    "case 3: the controller's API server restarted 3 times mid-reconcile -> converges, 0 duplicate builds, 0 repeated patches",
    { timeout: 300_000 },
    async () => {
      const bed = testbed();
      const s = await faultScenario({
        prefix: "apirestart",
        config: { store: { poolSize: 8 }, concurrency: { builds: 8 } },
        kubelet: { holdMs: () => 1000 + Math.random() * 3000 },
      });
      const dir = join(bed.tmpDir, `apiserver-${s.namespace}`);
      await mkdir(dir, { recursive: true });
      const port = await freePort();
      const auditLogFile = join(dir, "audit.log");
      s.auditLogFiles.push(auditLogFile);
      const pki = loadKubePki(bed.kube.pkiDir, bed.kube.token);
      const start = () =>
        startKubeApiserver({
          binDir: bed.kube.binDir,
          etcdUrl: bed.kube.etcdUrl,
          pki,
          stateDir: dir,
          logFile: join(bed.logDir, `kube-apiserver-${s.namespace}.log`),
          auditLogFile,
          port,
          // The test bed's API server owns the kubernetes Service's endpoints.
          extraArgs: ["--endpoint-reconciler-type=none"],
        });
      let apiserver: ApiServer = await start();
      onTestFinished(() => apiserver.daemon.stop());

      const ctl = await s.startController("one", { server: apiserver.url, caFile: bed.kube.caFile });
      // A controller that cannot renew its lease exits; its pod's restartPolicy brings it back.
      const kubelet = keepRunning(ctl);
      onTestFinished(() => kubelet.stop());
      const names = ["r1", "r2", "r3", "r4", "r5", "r6"];
      await s.createImages(names);
      const downMs: number[] = [];
      for (let i = 0; i < 3; i++) {
        // Restart while builds are running or results are coming in.
        await waitFor(`builds started before restart ${i + 1}`, async () => (await s.operatorWrites((w) => w.resource === "jobs")).length > i);
        const stoppedAt = Date.now();
        await apiserver.daemon.stop();
        apiserver = await start();
        downMs.push(Date.now() - stoppedAt);
      }
      const restartedAt = Date.now();
      await s.waitConverged(names, 120_000);
      const recoveryMs = Date.now() - restartedAt;
      await kubelet.stop();
      const tally = await s.tally(names);
      expect(tally).toMatchObject({ duplicateBuilds: 0, duplicateRuns: 0, repeatedPatches: 0 });
      await recordFigures("3", {
        restarts: 3,
        apiserverDownMs: downMs,
        controllerExits: kubelet.exits,
        convergedAfterLastRestartMs: recoveryMs,
        duplicateBuilds: 0,
        repeatedPatches: 0,
      });
    },
  );
});
