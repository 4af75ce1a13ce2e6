import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RequestOptions } from "node:https";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { loadKubeAccess } from "../../src/runtime/kube-config.ts";

async function kubeconfig(user: Record<string, unknown>, cluster: Record<string, unknown> = {}): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), "kubeconfig-"));
  const file = join(dir, "config");
  await writeFile(
    file,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      "current-context": "b",
      contexts: [
        { name: "a", context: { cluster: "other", user: "other" } },
        { name: "b", context: { cluster: "c", user: "u" } },
      ],
      clusters: [
        { name: "other", cluster: { server: "https://wrong:1" } },
        { name: "c", cluster: { server: "https://api.example:6443", ...cluster } },
      ],
      users: [
        { name: "other", user: { token: "wrong" } },
        { name: "u", user },
      ],
    }),
  );
  return { dir, file };
}

const applied = async (access: Awaited<ReturnType<typeof loadKubeAccess>>) => {
  const options: RequestOptions = { headers: {} };
  await access.applyToHTTPSOptions(options);
  return options;
};

describe("loadKubeAccess", () => {
  it("reads the current context's cluster and a bearer token, with embedded CA data", async () => {
    const { file } = await kubeconfig({ token: "s3cret" }, { "certificate-authority-data": Buffer.from("CA PEM").toString("base64") });
    const access = await loadKubeAccess({ file });
    expect(access.getCurrentCluster()).toEqual({ server: "https://api.example:6443" });
    const options = await applied(access);
    expect(options.headers).toEqual({ authorization: "Bearer s3cret" });
    expect(String(options.ca)).toBe("CA PEM");
  });

  it("reads client certificate files relative to the kubeconfig, and a token file", async () => {
    const { dir, file } = await kubeconfig(
      { "client-certificate": "cert.pem", "client-key": "key.pem", tokenFile: "token" },
      { "insecure-skip-tls-verify": true },
    );
    await writeFile(join(dir, "cert.pem"), "CERT");
    await writeFile(join(dir, "key.pem"), "KEY");
    await writeFile(join(dir, "token"), "from-file\n");
    const options = await applied(await loadKubeAccess({ file }));
    expect(String(options.cert)).toBe("CERT");
    expect(String(options.key)).toBe("KEY");
    expect(options.rejectUnauthorized).toBe(false);
    expect(options.headers).toEqual({ authorization: "Bearer from-file" });
  });

  it("uses $KUBECONFIG outside a cluster, and says what is missing when there is nothing", async () => {
    const { file } = await kubeconfig({ token: "t" });
    expect((await loadKubeAccess({ env: { KUBECONFIG: file } })).getCurrentCluster()?.server).toBe("https://api.example:6443");
    await expect(loadKubeAccess({ env: { KUBECONFIG: "/nonexistent/config" } })).rejects.toThrow(/no kubeconfig at \/nonexistent\/config; pass --kubeconfig/);
  });
});
