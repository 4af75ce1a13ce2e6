import { parseAllDocuments } from "yaml";
import { group, kind, makeNixImageSchema } from "../api/niximage.ts";
import { describeZodError } from "../api/describe-issues.ts";
import type { FlakeRefPolicy } from "../flake/flake-ref-policy.ts";

interface ManifestProblem {
  /** 1-based index of the YAML document in its file. */
  document: number;
  /** 1-based line where the document starts. */
  line: number;
  field: string;
  message: string;
}

export interface ManifestReport {
  nixImages: number;
  problems: ManifestProblem[];
}

/**
 * Validates every NixImage in a multi-document YAML text with the same schema and flake ref
 * policy as the API server and the controller. Other kinds are ignored: GitOps repos keep
 * Deployments and NixImages side by side.
 */
export function validateManifests(text: string, policy: FlakeRefPolicy): ManifestReport {
  const schema = makeNixImageSchema(policy);
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) if (text[i] === "\n") lineStarts.push(i + 1);
  const lineOf = (offset: number) => {
    let lo = 0;
    let hi = lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo + 1;
  };

  const report: ManifestReport = { nixImages: 0, problems: [] };
  parseAllDocuments(text).forEach((doc, index) => {
    const document = index + 1;
    const line = lineOf(doc.contents?.range?.[0] ?? doc.range?.[0] ?? 0);
    if (doc.errors.length > 0) {
      for (const error of doc.errors) {
        report.problems.push({ document, line: error.linePos?.[0]?.line ?? line, field: "(yaml)", message: error.message.split("\n")[0]! });
      }
      return;
    }
    const value: unknown = doc.toJS();
    if (value === null || typeof value !== "object" || Array.isArray(value)) return;
    const object = value as Record<string, unknown>;
    const apiVersion = typeof object.apiVersion === "string" ? object.apiVersion : "";
    if (object.kind !== kind || !apiVersion.startsWith(`${group}/`)) return;
    report.nixImages++;
    const result = schema.safeParse(object);
    if (result.success) return;
    for (const problem of describeZodError(result.error)) {
      const split = problem.indexOf(": ");
      report.problems.push({ document, line, field: problem.slice(0, split), message: problem.slice(split + 2) });
    }
  });
  return report;
}
