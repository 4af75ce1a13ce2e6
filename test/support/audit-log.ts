// The API server's audit log as the fault suite's oracle for "who wrote what, when": the test bed's
// kube-apiserver logs every write (create, update, patch, delete) at Metadata level, one JSON
// event per line, synchronously (the log backend's default blocking mode), so a write that got a
// response is already in the file. Reads and kube-controller-manager's own writes are left out
// to keep the file small over a whole run.
import { open, writeFile } from "node:fs/promises";
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

// What was read of each log so far: the log only grows, so each call parses only the new lines
// (a whole `npm test` run writes tens of MB, and fault tests poll it).
const readSoFar = new Map<string, { offset: number; rest: string; writes: AuditWrite[] }>();

/** Every completed write in the log that `filter` keeps (all when none given). */
export async function readAuditWrites(logFile: string, filter: (w: AuditWrite) => boolean = () => true): Promise<AuditWrite[]> {
  let state = readSoFar.get(logFile);
  if (!state) readSoFar.set(logFile, (state = { offset: 0, rest: "", writes: [] }));
  const handle = await open(logFile, "r").catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw e;
  });
  if (handle) {
    try {
      const { size } = await handle.stat();
      if (size < state.offset) Object.assign(state, { offset: 0, rest: "", writes: [] }); // a new file under the same name
      if (size > state.offset) {
        const buffer = Buffer.alloc(size - state.offset);
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, state.offset);
        state.offset += bytesRead;
        const lines = (state.rest + buffer.subarray(0, bytesRead).toString("utf8")).split("\n");
        state.rest = lines.pop() ?? ""; // the line being written right now
        for (const line of lines) {
          const w = parseLine(line);
          if (w) state.writes.push(w);
        }
      }
    } finally {
      await handle.close();
    }
  }
  return state.writes.filter(filter);
}

function parseLine(line: string): AuditWrite | undefined {
  if (!line) return undefined;
  let e: RawEvent;
  try {
    e = JSON.parse(line) as RawEvent;
  } catch {
    return undefined;
  }
  if (e.stage !== "ResponseComplete" || !e.verb || !e.objectRef?.resource) return undefined;
  const credentialId = e.user?.extra?.["authentication.kubernetes.io/credential-id"]?.[0];
  return {
    at: Date.parse(e.stageTimestamp ?? ""),
    receivedAt: Date.parse(e.requestReceivedTimestamp ?? e.stageTimestamp ?? ""),
    verb: e.verb,
    resource: e.objectRef.resource,
    ...(e.objectRef.subresource ? { subresource: e.objectRef.subresource } : {}),
    ...(e.objectRef.namespace ? { namespace: e.objectRef.namespace } : {}),
    ...(e.objectRef.name ? { name: e.objectRef.name } : {}),
    code: e.responseStatus?.code ?? 0,
    username: e.user?.username ?? "",
    ...(credentialId ? { credentialId } : {}),
    ...(e.userAgent ? { userAgent: e.userAgent } : {}),
  };
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
