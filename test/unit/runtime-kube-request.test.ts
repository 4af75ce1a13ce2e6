import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import { KubeHttpError, kubeGetJson, kubeListAll } from "../../src/runtime/kube-request.ts";

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A plain-HTTP stand-in for the API server answering with `handler`; returns a KubeConfig for it. */
async function fakeApi(handler: (url: URL) => { status: number; body: string }): Promise<{ kc: KubeConfig; seen: URL[] }> {
  const seen: URL[] = [];
  server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    seen.push(url);
    const { status, body } = handler(url);
    res.writeHead(status, { "content-type": "application/json" });
    res.end(body);
  });
  await new Promise<void>((resolve) => server?.listen(0, "127.0.0.1", resolve));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true /* client-node allows http only so */ }],
    users: [{ name: "u", token: "t0ps3cret" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return { kc, seen };
}

describe("kubeListAll", () => {
  it("follows continue tokens, keeps the last resourceVersion and fills in kind/apiVersion of items", async () => {
    const { kc, seen } = await fakeApi((url) => {
      const page = url.searchParams.get("continue");
      const body =
        page === null
          ? { kind: "ConfigMapList", apiVersion: "v1", metadata: { resourceVersion: "10", continue: "p2" }, items: [{ metadata: { name: "a" } }] }
          : { kind: "ConfigMapList", apiVersion: "v1", metadata: { resourceVersion: "10" }, items: [{ metadata: { name: "b" } }] };
      return { status: 200, body: JSON.stringify(body) };
    });
    const list = await kubeListAll(kc, "/api/v1/namespaces/x/configmaps", { labelSelector: "app=web", limit: 1 });
    expect(list.items).toEqual([
      { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "a" } },
      { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "b" } },
    ]);
    expect(list.metadata?.resourceVersion).toBe("10");
    expect(seen.map((u) => u.search)).toEqual(["?labelSelector=app%3Dweb&limit=1", "?labelSelector=app%3Dweb&limit=1&continue=p2"]);
  });
});

describe("kubeGetJson errors", () => {
  it("carries the status code and the Status message, not the body", async () => {
    const { kc } = await fakeApi(() => ({
      status: 403,
      body: JSON.stringify({ kind: "Status", message: 'configmaps is forbidden: User "x" cannot list', reason: "Forbidden", details: { secret: "s3" } }),
    }));
    const err = await kubeGetJson(kc, "/api/v1/configmaps").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeHttpError);
    expect(err).toMatchObject({ statusCode: 403, code: 403, reason: "Forbidden" });
    expect((err as Error).message).toBe('GET /api/v1/configmaps: 403 configmaps is forbidden: User "x" cannot list');
    expect((err as Error).message).not.toContain("s3");
  });

  it("never echoes a body that is not JSON", async () => {
    const { kc } = await fakeApi(() => ({ status: 200, body: "password=hunter2 <html>" }));
    const err = (await kubeGetJson(kc, "/x").catch((e: unknown) => e)) as Error;
    expect(err.message).toBe("GET /x: answer is not JSON (23 bytes)");
  });
});
