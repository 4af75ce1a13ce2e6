// Bundles the compiled CLI in place: <dist>/cli/main.js becomes one entry file plus a chunk per
// command under <dist>/cli/chunks/, with the npm dependencies inlined. A step process then loads a
// few files instead of hundreds of ES modules (zod alone is ~100): push-step loads in about half
// the time. @kubernetes/client-node stays external (the controller's; large, and loaded as is).
//
// Usage: node scripts/bundle-cli.ts [DIST]   (after tsc; `npm run build` runs both)
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { build } from "rolldown";

export async function bundleCli(dist: string): Promise<void> {
  const cli = join(resolve(dist), "cli");
  await rm(join(cli, "chunks"), { recursive: true, force: true });
  // tsc's map of main.js would describe the unbundled file.
  await rm(join(cli, "main.js.map"), { force: true });
  await build({
    input: join(cli, "main.js"),
    platform: "node",
    // ssh2 (the poller's git+ssh transport) requires optional native modules by relative path: loaded as is.
    external: (id) => id.startsWith("@kubernetes/") || id === "ssh2",
    logLevel: "warn",
    output: { dir: cli, format: "esm", entryFileNames: "main.js", chunkFileNames: "chunks/[name]-[hash].js" },
  });
}

if (import.meta.main) await bundleCli(process.argv[2] ?? "dist");
