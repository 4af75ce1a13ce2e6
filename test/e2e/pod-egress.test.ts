// The e2e cluster's own network (issue 12, item 10): a pod tries to reach outside addresses by
// TCP and UDP; the host's forward filter (test/e2e/support/network.ts) drops every such packet and
// none leaves the machine. Proof by the kernel's own counters: the final DROP rule's packet
// counter grows by at least one packet per attempt, and the counting rule in mangle POSTROUTING
// (pod source address, leaving by an interface other than the cluster bridge) stays at 0. The same
// pod reaches the node (the cluster registry on the node IP), so the drops are not a dead network.
import { afterAll, describe, expect, inject, it } from "vitest";
import "./support/e2e-types.ts";
import { diagnostics, kube, waitFor } from "./support/kube.ts";
import { podFilterCounters } from "./support/network.ts";

const { cluster } = inject("e2e");
const k = kube(cluster);
const ns = "e2e-egress";
const podName = "egress-probe";

const outside = ["1.1.1.1", "8.8.8.8"];
const [registryHost, registryPort] = cluster.registry.host.split(":") as [string, string];

// Runs in the pod (the operator image: Node, non-root). Each attempt gives up after 3 s (a
// dropped SYN never answers); the verdict is the counters, not this timer.
const probeScript = `
const net = require("node:net"), dgram = require("node:dgram");
const tcp = (host, port) => new Promise((resolve) => {
  const s = net.connect({ host, port });
  const done = (r) => { s.destroy(); resolve(r); };
  s.setTimeout(3000, () => done("timeout"));
  s.on("connect", () => done("connected"));
  s.on("error", (e) => done("error " + e.code));
});
const udp = (host, port) => new Promise((resolve) => {
  const s = dgram.createSocket("udp4");
  s.send(Buffer.from("nio-e2e egress probe"), port, host, (e) => { s.close(); resolve(e ? "error " + e.code : "sent"); });
});
(async () => {
  const targets = ${JSON.stringify(outside)};
  const results = {};
  for (const h of targets) {
    results["tcp " + h + ":443"] = await tcp(h, 443);
    results["tcp " + h + ":53"] = await tcp(h, 53);
    results["udp " + h + ":53"] = await udp(h, 53);
    results["udp " + h + ":123"] = await udp(h, 123);
  }
  results.node = await tcp(${JSON.stringify(registryHost)}, ${Number(registryPort)});
  console.log(JSON.stringify(results));
})();
`;

const podYaml = () => `
apiVersion: v1
kind: Pod
metadata: { name: ${podName}, namespace: ${ns} }
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
    - name: probe
      image: ${cluster.images.operator.reference}
      imagePullPolicy: IfNotPresent
      command: ["/usr/local/bin/node", "-e", ${JSON.stringify(probeScript)}]
      securityContext:
        runAsNonRoot: true
        allowPrivilegeEscalation: false
        capabilities: { drop: [ALL] }
        seccompProfile: { type: RuntimeDefault }
`;

let failed = false;
afterAll(async () => {
  if (failed) process.stderr.write(`\n===== e2e diagnostics\n${await diagnostics(k, [ns], "nix-image-operator")}\n`);
  await k.kubectl(["delete", "namespace", ns, "--wait=false", "--ignore-not-found"]).catch(() => undefined);
});

describe("the e2e cluster's network: pods reach the node, nothing leaves the machine", () => {
  it("a pod's TCP and UDP packets to outside addresses are dropped on the host: DROP counter grows, 0 packets leave", async () => {
    try {
      const before = podFilterCounters(cluster.net);
      await k.kubectl(["create", "namespace", ns]);
      await k.apply(podYaml());
      const phase = await waitFor(
        `pod ${ns}/${podName} to finish`,
        async () => {
          const pod = await k.get<{ status?: { phase?: string } }>("pod", podName, ns);
          const p = pod?.status?.phase;
          return p === "Succeeded" || p === "Failed" ? p : undefined;
        },
        { timeoutMs: 3 * 60_000, describe: async () => k.kubectl(["-n", ns, "describe", "pod", podName]) },
      );
      const logs = await k.kubectl(["-n", ns, "logs", podName]);
      expect(phase, logs).toBe("Succeeded");
      const results = JSON.parse(logs.trim().split("\n").pop()!) as Record<string, string>;
      const after = podFilterCounters(cluster.net);
      process.stderr.write(`egress probe: ${JSON.stringify(results)}; counters before ${JSON.stringify(before)} after ${JSON.stringify(after)}\n`);

      // The pod's network works: it reaches the node (the registry on the node IP).
      expect(results.node).toBe("connected");
      // No outside TCP connection came up; UDP datagrams were handed to the kernel (and dropped on the host).
      for (const h of outside) {
        for (const port of [443, 53]) expect(results[`tcp ${h}:${port}`], `tcp ${h}:${port}`).not.toBe("connected");
        for (const port of [53, 123]) expect(results[`udp ${h}:${port}`], `udp ${h}:${port}`).toBe("sent");
      }
      // Every attempt sent at least one packet, and the final DROP saw each of them.
      const attempts = outside.length * 4;
      expect(after.egressDropped - before.egressDropped).toBeGreaterThanOrEqual(attempts);
      // Not one packet with a pod source address left by another interface, since the cluster started.
      expect(after.leftHost).toBe(0);
    } catch (e) {
      failed = true;
      throw e;
    }
  });
});
