import type { z } from "zod";

/** A zod issue path as a field path users know from kubectl: spec.image.tags[2]. */
function fieldPath(path: readonly PropertyKey[], prefix = ""): string {
  let out = prefix;
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out || "(root)";
}

/**
 * One line per problem, `field: message`. Zod messages never contain the offending value,
 * so a Secret's content cannot leak through a validation error.
 */
export function describeZodError(error: z.ZodError, prefix = ""): string[] {
  const lines: string[] = [];
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        lines.push(`${fieldPath([...issue.path, key], prefix)}: unknown field; check its spelling and indentation`);
      }
      continue;
    }
    lines.push(`${fieldPath(issue.path, prefix)}: ${issue.message}`);
  }
  return lines;
}
