import type { z } from "zod";

/**
 * One cross-field rule, written once and enforced twice: as CEL in the CRD (so the API server
 * rejects it) and as a TypeScript predicate in the zod schema (so `validate` and the controller
 * reject it with the same message). A test applies every rule's failing sample to the real API
 * server, so the two halves cannot drift apart unnoticed.
 */
export interface ValidationRule<T> {
  /** CEL expression over `self`; true means valid. */
  cel: string;
  /** Same rule in TypeScript; true means valid. */
  check: (self: T) => boolean;
  message: string;
  /** Field the message is about, relative to the object the rule sits on (CEL `fieldPath`). */
  field?: string;
  /** CEL `reason` (FieldValueInvalid by default; Required, Forbidden, Duplicate). */
  reason?: "FieldValueRequired" | "FieldValueForbidden" | "FieldValueInvalid" | "FieldValueDuplicate";
}

/** Like the API server: a rule is only evaluated on a value that passed its schema. */
const onlyWhenValid = { when: (payload: { issues: readonly unknown[] }) => payload.issues.length === 0 };

/** Attaches rules to an object schema: zod refinements plus the CRD's x-kubernetes-validations. */
export function withRules<S extends z.ZodType>(schema: S, rules: ValidationRule<z.output<S>>[]): S {
  let refined: z.ZodType = schema;
  for (const rule of rules) {
    refined = refined.refine((value) => rule.check(value as z.output<S>), {
      message: rule.message,
      path: rule.field ? rule.field.replace(/^\./, "").split(".") : [],
      ...onlyWhenValid,
    });
  }
  return refined.meta({
    "x-kubernetes-validations": rules.map((rule) => ({
      rule: rule.cel,
      message: rule.message,
      ...(rule.field ? { fieldPath: rule.field } : {}),
      ...(rule.reason ? { reason: rule.reason } : {}),
    })),
  }) as unknown as S;
}

/**
 * A check done in TypeScript only (the CRD carries a coarser `pattern` for the same field):
 * its message says exactly what is wrong. Runs only when the simpler checks passed, so a user
 * sees one message per problem.
 */
export function refineWith<S extends z.ZodType>(schema: S, check: (value: z.output<S>) => string | undefined): S {
  return schema.refine((value) => check(value as z.output<S>) === undefined, {
    error: (issue) => check(issue.input as z.output<S>) ?? "is invalid",
    ...onlyWhenValid,
  }) as unknown as S;
}
