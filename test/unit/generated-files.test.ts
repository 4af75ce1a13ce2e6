import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { generatedFiles } from "../../src/api/generated-files.ts";

const root = join(import.meta.dirname, "../..");

describe("files generated from the API schema", () => {
  it.each(Object.entries(generatedFiles()))("%s is up to date (run `npm run gen:crd` after changing src/api)", async (path, content) => {
    const committed = await readFile(join(root, path), "utf8").catch(() => "(missing)");
    expect(committed, `${path} differs from what \`npm run gen:crd\` writes`).toBe(content);
  });
});
