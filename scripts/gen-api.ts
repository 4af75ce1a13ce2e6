// Writes everything generated from the NixImage zod schema: the CRD (crds/ and the chart's copy)
// and the API reference (docs/api.md). `npm run gen:crd`; test/unit/generated-files.test.ts
// fails when a committed file differs from what this writes.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { generatedFiles } from "../src/api/generated-files.ts";

const root = join(import.meta.dirname, "..");
for (const [path, content] of Object.entries(generatedFiles())) {
  await mkdir(dirname(join(root, path)), { recursive: true });
  await writeFile(join(root, path), content);
  console.log(`wrote ${path}`);
}
