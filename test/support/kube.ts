// Helpers for integration tests against the test bed's API server: a KubeConfig and typed
// clients, a unique namespace per test (deleted after it), server-side apply, kubectl, and
// wait-for helpers that fail with what they waited for and what they saw last.
import { randomBytes } from "node:crypto";
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  RbacAuthorizationV1Api,
  type KubernetesObject,
} from "@kubernetes/client-node";
import { expect, inject, onTestFinished } from "vitest";
import { run, sleep } from "./process.ts";
import type { TestBed } from "./testbed-types.ts";

/** The running test bed (provided by test/support/global-setup.ts). */
export function testbed(): TestBed {
  const bed = inject("testbed");
  if (!bed) throw new Error("no test bed: run this file in the integration project (vitest --project integration)");
  return bed;
}

/** An admin KubeConfig (system:masters) for the test bed's API server. */
export function kubeConfig(bed: TestBed = testbed()): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(bed.kube.kubeconfig);
  return kc;
}

export interface KubeClients {
  kc: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  batch: BatchV1Api;
  rbac: RbacAuthorizationV1Api;
  /** Generic client for any kind, including custom resources. */
  objects: KubernetesObjectApi;
}

export function kubeClients(kc: KubeConfig = kubeConfig()): KubeClients {
  return {
    kc,
    core: kc.makeApiClient(CoreV1Api),
    apps: kc.makeApiClient(AppsV1Api),
    batch: kc.makeApiClient(BatchV1Api),
    rbac: kc.makeApiClient(RbacAuthorizationV1Api),
    objects: KubernetesObjectApi.makeApiClient(kc),
  };
}

/** HTTP status of a client-node error (ApiException.code), or undefined. */
function statusCode(e: unknown): number | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

function isNotFound(e: unknown): boolean {
  return statusCode(e) === 404;
}

function slug(text: string, max: number): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+/, "")
    .slice(0, max)
    .replace(/-+$/, "");
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

function show(v: unknown): string {
  let s: string;
  try {
    s = typeof v === "string" ? v : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > 600 ? `${s.slice(0, 600)}...` : s;
}

/**
 * Polls `probe` until it returns a value other than undefined/null/false and returns that value.
 * Errors thrown by the probe count as "not yet" (the last one is reported on timeout).
 */
export async function waitFor<T>(
  description: string,
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  opts: WaitOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const intervalMs = opts.intervalMs ?? 100;
  const start = Date.now();
  let last: unknown = undefined;
  let lastError: unknown = undefined;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== null && v !== false) return v;
      last = v;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() - start >= timeoutMs) {
      const err = lastError === undefined ? `last value: ${show(last)}` : `last error: ${lastError instanceof Error ? lastError.message : show(lastError)}`;
      throw new Error(`timed out after ${(timeoutMs / 1000).toFixed(1)}s waiting for ${description} (${err})`);
    }
    await sleep(intervalMs);
  }
}

/** Server-side apply of one object (field manager "testbed" unless given; force on by default). */
export async function apply<T extends KubernetesObject>(obj: T, opts: { fieldManager?: string; force?: boolean; clients?: KubeClients } = {}): Promise<T> {
  const { objects } = opts.clients ?? kubeClients();
  return objects.patch<T>(obj, undefined, undefined, opts.fieldManager ?? "testbed", opts.force ?? true, PatchStrategy.ServerSideApply);
}

/**
 * Creates a namespace with a unique name (from `prefix`, else the current test's name) labelled
 * with the run id, and waits until its "default" ServiceAccount exists (pods need it).
 */
export async function createNamespace(prefix?: string, clients: KubeClients = kubeClients()): Promise<string> {
  const base = slug(prefix ?? expect.getState().currentTestName ?? "test", 40) || "test";
  const name = `${base}-${randomBytes(3).toString("hex")}`;
  await clients.core.createNamespace({
    body: {
      metadata: { name, labels: { "testbed.niximage.io/run": testbed().runId, "testbed.niximage.io/test": "true" } },
    },
  });
  await waitFor(
    `ServiceAccount ${name}/default (made by kube-controller-manager)`,
    () => clients.core.readNamespacedServiceAccount({ namespace: name, name: "default" }).then(() => true),
    { timeoutMs: 30_000 },
  );
  return name;
}

/** Deletes a namespace (background; does not wait for finalizers). Missing is fine. */
export async function deleteNamespace(name: string, clients: KubeClients = kubeClients()): Promise<void> {
  try {
    await clients.core.deleteNamespace({ name, propagationPolicy: "Background" });
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}

/** A unique namespace for the current test, deleted when the test finishes. Call inside a test. */
export async function testNamespace(prefix?: string, clients: KubeClients = kubeClients()): Promise<string> {
  const name = await createNamespace(prefix, clients);
  onTestFinished(() => deleteNamespace(name, clients));
  return name;
}

/** Runs the test bed's kubectl with the admin kubeconfig; returns stdout, throws with stderr. */
export async function kubectl(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const bed = testbed();
  const { stdout } = await run(bed.kube.kubectl, ["--kubeconfig", bed.kube.kubeconfig, ...args], {
    input: opts.input,
    timeoutMs: opts.timeoutMs ?? 60_000,
  });
  return stdout;
}
