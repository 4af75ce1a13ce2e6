import { glob, readFile } from "node:fs/promises";
import toAbsoluteGlob from "@dsherret/to-absolute-glob";
import { relative } from "node:path";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { validateManifests } from "../validate/validate-manifests.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { validateHelp } from "./command-help.ts";

export const validateCommand: Command = {
  name: "validate",
  help: validateHelp,
  async run(context) {
    const { values, positionals } = parseFlags(context.argv, { config: { type: "string" }, json: { type: "boolean" } }, "validate", true);
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    if (positionals.length === 0) throw new UsageError("validate: give at least one file or glob, e.g. 'deploy/**/*.yaml'");
    const config = await loadOperatorConfig({ file: values.config, env: {} });

    const absolute = positionals.map((pattern) => toAbsoluteGlob(pattern, { cwd: context.cwd }));
    const include = absolute.filter((p) => !p.startsWith("!"));
    const exclude = absolute.filter((p) => p.startsWith("!")).map((p) => p.slice(1));
    const files = new Set<string>();
    for (const pattern of include) {
      let matched = false;
      for await (const file of glob(pattern, { exclude })) {
        files.add(file);
        matched = true;
      }
      if (!matched) throw new UsageError(`validate: no file matches ${pattern}`);
    }

    const results = [];
    let invalid = 0;
    let nixImages = 0;
    for (const file of [...files].sort()) {
      const name = relative(context.cwd, file) || file;
      const report = validateManifests(await readFile(file, "utf8"), config.flakeRefPolicy);
      nixImages += report.nixImages;
      invalid += new Set(report.problems.map((p) => p.document)).size;
      results.push({ file: name, ...report });
      if (!values.json) {
        for (const p of report.problems) context.stdout.write(`${name}:${p.document}: ${p.field}: ${p.message}\n`);
      }
    }
    if (values.json) {
      context.stdout.write(`${JSON.stringify({ files: results.length, nixImages, invalid, results }, null, 2)}\n`);
    } else {
      context.stderr.write(`${files.size} file(s), ${nixImages} NixImage(s), ${invalid} invalid\n`);
    }
    return invalid > 0 ? 1 : 0;
  },
};
