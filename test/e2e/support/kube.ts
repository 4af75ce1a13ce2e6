// kubectl-based helpers for the e2e tests and the demo: JSON reads, apply from YAML text, polls
// that fail with what they waited for and what they saw last, and a diagnostics dump.
import { httpGet, run, sleep } from "../../support/process.ts";
import type { ClusterInfo } from "./cluster.ts";

export interface Kube {
  kubectl(args: string[], input?: string, timeoutMs?: number): Promise<string>;
  json<T = Record<string, unknown>>(args: string[]): Promise<T>;
  /** JSON of one object, or undefined when it does not exist. */
  get<T = Record<string, unknown>>(kind: string, name: string, namespace?: string): Promise<T | undefined>;
  apply(yaml: string): Promise<string>;
}

export function kube(cluster: Pick<ClusterInfo, "kubectl" | "kubeconfig">): Kube {
  const kubectl = async (args: string[], input?: string, timeoutMs = 120_000) =>
    (await run(cluster.kubectl, ["--kubeconfig", cluster.kubeconfig, ...args], { ...(input !== undefined ? { input } : {}), timeoutMs })).stdout;
  const json = async <T>(args: string[]) => JSON.parse(await kubectl([...args, "-o", "json"])) as T;
  return {
    kubectl,
    json,
    get: async <T>(kind: string, name: string, namespace?: string) => {
      try {
        return await json<T>(["get", kind, name, ...(namespace ? ["-n", namespace] : [])]);
      } catch (e) {
        if (/NotFound|not found/.test((e as Error).message)) return undefined;
        throw e;
      }
    },
    apply: (yaml) => kubectl(["apply", "-f", "-"], yaml),
  };
}

class WaitTimeout extends Error {
  override name = "WaitTimeout";
}

/**
 * Polls `probe` until it returns a value (not undefined). `describe` says what was seen last,
 * for the error message.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  opts: { timeoutMs: number; intervalMs?: number; describe?: () => Promise<string> | string },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastError = "";
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      lastError = (e as Error).message?.split("\n").slice(0, 3).join(" | ") ?? String(e);
    }
    if (Date.now() > deadline) {
      const seen = opts.describe ? await Promise.resolve(opts.describe()).catch((e: unknown) => `(describe failed: ${String(e)})`) : "";
      throw new WaitTimeout(
        `timed out after ${Math.round(opts.timeoutMs / 1000)}s waiting for ${what}${lastError ? `; last error: ${lastError}` : ""}${seen ? `\nlast seen:\n${seen}` : ""}`,
      );
    }
    await sleep(opts.intervalMs ?? 1000);
  }
}

/** GET http://host:port/path from the host; the body, or undefined on a network error/non-200. */
export async function httpText(url: string, timeoutMs = 3000): Promise<string | undefined> {
  try {
    const r = await httpGet(url, { timeoutMs });
    return r.status === 200 ? r.body : undefined;
  } catch {
    return undefined;
  }
}

/** Everything useful when an e2e step failed: objects, events, operator and builder logs. */
export async function diagnostics(k: Kube, namespaces: string[], operatorNamespace: string): Promise<string> {
  const parts: string[] = [];
  const add = async (title: string, args: string[]) => {
    try {
      parts.push(`----- ${title}\n${(await k.kubectl(args, undefined, 30_000)).trim()}`);
    } catch (e) {
      parts.push(`----- ${title}\n(${(e as Error).message.split("\n")[0]})`);
    }
  };
  await add("nodes", ["get", "nodes", "-o", "wide"]);
  await add("pods", ["get", "pods", "-A", "-o", "wide"]);
  for (const ns of namespaces) {
    await add(`${ns}: niximages, jobs, deployments, pvc`, ["-n", ns, "get", "niximages,jobs,deployments,replicasets,pvc", "-o", "wide"]);
    await add(`${ns}: niximage status`, ["-n", ns, "get", "niximages", "-o", 'jsonpath={range .items[*]}{.metadata.name}{"\\n"}{.status}{"\\n"}{end}']);
    await add(`${ns}: events`, ["-n", ns, "get", "events", "--sort-by=.lastTimestamp"]);
    await add(`${ns}: builder logs`, ["-n", ns, "logs", "-l", "niximage.io/image", "--all-containers", "--prefix", "--tail=40"]);
  }
  await add("operator logs", ["-n", operatorNamespace, "logs", "-l", "app.kubernetes.io/name=nix-image-operator", "--tail=80"]);
  return parts.join("\n");
}
