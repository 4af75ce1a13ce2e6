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

/** Attaches rules to an object schema: zod refinements plus the CRD's x-kubernetes-validations. */
export function withRules<S extends z.ZodType>(schema: S, rules: ValidationRule<z.output<S>>[]): S {
  const refined = schema.superRefine((value, ctx) => {
    for (const rule of rules) {
      if (rule.check(value)) continue;
      ctx.addIssue({
        code: "custom",
        message: rule.message,
        path: rule.field ? rule.field.replace(/^\./, "").split(".") : [],
      });
    }
  });
  return refined.meta({
    "x-kubernetes-validations": rules.map((rule) => ({
      rule: rule.cel,
      message: rule.message,
      ...(rule.field ? { fieldPath: rule.field } : {}),
      ...(rule.reason ? { reason: rule.reason } : {}),
    })),
  }) as unknown as S;
}
