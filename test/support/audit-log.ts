// The API server's audit log as the fault suite's oracle for "who wrote what, when": the test bed's
// kube-apiserver logs every write (create, update, patch, delete) at Metadata level, one JSON
// event per line, synchronously (the log backend's default blocking mode), so a write that got a
// response is already in the file. Reads and kube-controller-manager's own writes are left out
// to keep the file small over a whole run.
import { readFile, writeFile } from "node:fs/promises";
import { stringify } from "yaml";

/** Writes the audit policy the test bed's kube-apiserver uses. */
export async function writeAuditPolicy(file: string): Promise<void> {
  const policy = {
    apiVersion: "audit.k8s.io/v1",
    kind: "Policy",
    omitStages: ["RequestReceived", "ResponseStarted"],
    rules: [
      { level: "None", verbs: ["get", "list", "watch"] },
      { level: "None", users: ["system:kube-controller-manager", "system:apiserver"] },
      { level: "None", userGroups: ["system:serviceaccounts:kube-system", "system:nodes"] },
      {
        level: "None",
        resources: [
          { group: "", resources: ["events"] },
          { group: "events.k8s.io", resources: ["events"] },
        ],
      },
      { level: "Metadata", verbs: ["create", "update", "patch", "delete", "deletecollection"] },
    ],
  };
  await writeFile(file, stringify(policy));
}

/** kube-apiserver flags for an audit log at `logFile` with the policy at `policyFile`. */
export function auditArgs(policyFile: string, logFile: string): string[] {
  return [`--audit-policy-file=${policyFile}`, `--audit-log-path=${logFile}`, "--audit-log-format=json", "--audit-log-maxbackup=0", "--audit-log-maxsize=0"];
}

/** One write as the API server saw it. */
export interface AuditWrite {
  /** When the API server finished the request (ms since epoch). */
  at: number;
  /** When the API server received it (ms since epoch). */
  receivedAt: number;
  verb: string;
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  code: number;
  username: string;
  /** e.g. "JTI=..." for a service-account token: tells two replicas with the same account apart. */
  credentialId?: string;
  userAgent?: string;
}

interface RawEvent {
  stage?: string;
  verb?: string;
  user?: { username?: string; extra?: Record<string, string[]> };
  userAgent?: string;
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
  stageTimestamp?: string;
  requestReceivedTimestamp?: string;
}

/** Every completed write in the log that `filter` keeps (all when none given). */
export async function readAuditWrites(logFile: string, filter: (w: AuditWrite) => boolean = () => true): Promise<AuditWrite[]> {
  const text = await readFile(logFile, "utf8").catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return "";
    throw e;
  });
  const writes: AuditWrite[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    let e: RawEvent;
    try {
      e = JSON.parse(line) as RawEvent;
    } catch {
      continue; // the line being written right now
    }
    if (e.stage !== "ResponseComplete" || !e.verb || !e.objectRef?.resource) continue;
    const w: AuditWrite = {
      at: Date.parse(e.stageTimestamp ?? ""),
      receivedAt: Date.parse(e.requestReceivedTimestamp ?? e.stageTimestamp ?? ""),
      verb: e.verb,
      resource: e.objectRef.resource,
      ...(e.objectRef.subresource ? { subresource: e.objectRef.subresource } : {}),
      ...(e.objectRef.namespace ? { namespace: e.objectRef.namespace } : {}),
      ...(e.objectRef.name ? { name: e.objectRef.name } : {}),
      code: e.responseStatus?.code ?? 0,
      username: e.user?.username ?? "",
      ...(e.user?.extra?.["authentication.kubernetes.io/credential-id"]?.[0]
        ? { credentialId: e.user.extra["authentication.kubernetes.io/credential-id"][0] }
        : {}),
      ...(e.userAgent ? { userAgent: e.userAgent } : {}),
    };
    if (filter(w)) writes.push(w);
  }
  return writes;
}

/** True for a write the API server carried out (2xx). */
export function succeeded(w: AuditWrite): boolean {
  return w.code >= 200 && w.code < 300;
}

/** "VERB resource[/subresource]" -> count, for messages and figures. */
export function countByKind(writes: AuditWrite[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const w of writes) {
    const k = `${w.verb} ${w.resource}${w.subresource ? `/${w.subresource}` : ""}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}
