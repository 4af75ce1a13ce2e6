// Where scripts/build-supply-chain-tools.sh puts cosign and oras (versions pinned in that script).
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

export function supplyChainTool(tool: "cosign" | "oras"): string {
  const script = readFileSync(join(repoRoot, "scripts/build-supply-chain-tools.sh"), "utf8");
  const version = new RegExp(`^${tool}_version=(\\S+)$`, "m").exec(script)?.[1] ?? "unknown";
  const cache = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
  return join(cache, "nix-image-operator", `${tool}-${version}`, tool);
}
