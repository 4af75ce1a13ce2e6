import { createHash } from "node:crypto";
import type { NixImage } from "../api/niximage.ts";
import type { OperatorConfig } from "../config/operator-config.ts";

/** JSON with sorted keys, so the same values always give the same hash. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const shortHash = (value: unknown) => createHash("sha256").update(canonicalJson(value)).digest("hex").slice(0, 16);

/**
 * Hash of the spec fields that change what gets built or pushed. Fields that only steer the
 * controller (triggers, rollout, suspend, history, timeouts, scheduling) are left out, so
 * editing them does not rebuild.
 */
export function specHash(image: NixImage): string {
  const { flake, attribute, format, image: target, build } = image.spec;
  return shortHash({
    flake,
    attribute,
    format,
    image: target,
    nixConfig: build.nixConfig,
    allowImportFromDerivation: build.allowImportFromDerivation,
  });
}

/** Hash of the builder images: a new Nix or operator image means a rebuild. */
export function builderHash(config: OperatorConfig): string {
  return shortHash({ nix: config.builder.nixImage, push: config.builder.pushImage });
}
