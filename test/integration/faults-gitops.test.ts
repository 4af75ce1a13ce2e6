// Fault suite case 18 (docs/reliability.md): a GitOps tool that owns a Deployment and re-applies
// its manifest from Git, image included, with force, every 10 s (what Flux does without
// `spec.ignore`). The operator applies its digest again a few times, then stops answering for the
// rest of a window (src/controller/rollout-contest.ts), says who fights in the NixImage's RolledOut
// condition and in a Warning Event on the Deployment, and tells how to stop it. The audit log
// counts the operator's patches.
import type { V1Deployment } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { contestPolicy } from "../../src/controller/rollout-contest.ts";
import { succeeded } from "../support/audit-log.ts";
import { waitForExit } from "../support/controller-process.ts";
import { imageFor } from "../support/fake-kubelet.ts";
import { faultScenario, recordFigures } from "../support/fault-scenario.ts";
import { apply, kubeClients, waitFor } from "../support/kube.ts";
import { sleep } from "../support/process.ts";

const gitopsManager = "gitops-sim";
const placeholder = "busybox:1";
const intervalMs = Number(process.env.NIO_FAULT_GITOPS_INTERVAL_MS ?? 10_000);
/** Re-applies the tool makes after the operator said it stopped, to show it does not answer them. */
const moreReverts = 3;

describe("faults: a GitOps tool fights over the image", () => {
  it(`case 18: a GitOps tool re-applying the image every ${intervalMs / 1000} s -> bounded operator patches, RolledOut=False/RolloutContested naming it`, async () => {
    const s = await faultScenario({ prefix: "contest" });
    const name = "g1";
    // What Git holds: the Deployment with a placeholder image, applied by the GitOps tool.
    const fromGit: V1Deployment = {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name, namespace: s.namespace, annotations: { "niximage.io/from": name } },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: name } },
        template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: "app", image: placeholder }] } },
      },
    };
    await apply(fromGit, { fieldManager: gitopsManager, force: true });
    const ctl = await s.startController("one");
    await s.createImages([name], { deployments: false });
    await s.waitConverged([name]);
    const built = imageFor(s.namespace, name, s.repo.rev);

    // The tool re-applies Git every interval, with force (as Flux's kustomize-controller and Argo CD do).
    let reverts = 0;
    let stop = false;
    const fightStart = Date.now();
    const tool = (async () => {
      while (!stop) {
        await apply(fromGit, { fieldManager: gitopsManager, force: true });
        reverts++;
        await sleep(intervalMs);
      }
    })();
    const contested = await waitFor(
      "RolledOut=False/RolloutContested",
      async () => {
        const c = (await s.readImage(name)).status?.conditions?.find((x) => x.type === "RolledOut");
        return c?.reason === "RolloutContested" ? c : undefined;
      },
      { timeoutMs: (contestPolicy.maxReapplies + 4) * intervalMs + 30_000, intervalMs: 250 },
    );
    const contestedAfterMs = Date.now() - fightStart;
    const revertsToContest = reverts;
    await waitFor(`${moreReverts} more re-applies by the tool`, () => reverts >= revertsToContest + moreReverts, {
      timeoutMs: (moreReverts + 2) * intervalMs + 30_000,
    });
    stop = true;
    await tool;
    await s.waitWritesSettle();

    // Bounded: the rollout and maxReapplies re-applies, however long the tool goes on in the window.
    const patches = (await s.operatorWrites((w) => w.resource === "deployments" && w.verb === "patch" && succeeded(w))).length;
    expect(patches).toBeLessThanOrEqual(1 + contestPolicy.maxReapplies);
    expect(patches).toBeGreaterThanOrEqual(2);
    // Who fights, and the fix.
    expect(contested.message).toContain(`field manager ${gitopsManager} (Apply)`);
    expect(contested.message).toContain("spec.ignore");
    const target = (await s.readImage(name)).status?.rollout?.[0];
    expect(target?.contest?.by).toContain(gitopsManager);
    const { core, apps } = kubeClients();
    const events = (await core.listNamespacedEvent({ namespace: s.namespace, fieldSelector: "reason=RolloutContested" })).items;
    const onDeployment = events.filter((e) => e.involvedObject.kind === "Deployment" && e.involvedObject.name === name);
    expect(onDeployment).toHaveLength(1);
    expect(onDeployment[0]!.type).toBe("Warning");
    expect(onDeployment[0]!.message).toContain(gitopsManager);
    expect((await apps.readNamespacedDeployment({ namespace: s.namespace, name })).spec?.template.spec?.containers[0]?.image).toBe(placeholder);

    // The fix: the tool leaves the image alone (README: Using it with GitOps). Once the window is
    // over (the controller started again with its clock past it) the digest goes back on and stays.
    const holder = await s.leaseHolder();
    ctl.signal("SIGKILL");
    await waitForExit(ctl, "SIGKILL");
    await ctl.restart({ NIO_FAULT_CLOCK_OFFSET_MS: String(contestPolicy.windowMs + 5_000) });
    await s.waitLeading(ctl, holder);
    await s.waitConverged([name]);
    await waitFor("RolledOut no longer contested", async () => {
      const c = (await s.readImage(name)).status?.conditions?.find((x) => x.type === "RolledOut");
      return c !== undefined && c.reason !== "RolloutContested";
    });
    expect((await apps.readNamespacedDeployment({ namespace: s.namespace, name })).spec?.template.spec?.containers[0]?.image).toBe(built);
    const after = (await s.operatorWrites((w) => w.resource === "deployments" && w.verb === "patch" && succeeded(w))).length;
    expect(after).toBe(patches + 1);

    await recordFigures("18", {
      intervalMs,
      toolReapplies: reverts,
      operatorPatchesDuringFight: patches,
      bound: 1 + contestPolicy.maxReapplies,
      windowMs: contestPolicy.windowMs,
      contestedAfterMs,
      revertsToContest,
      condition: contested.message,
    });
  }, 600_000);
});
