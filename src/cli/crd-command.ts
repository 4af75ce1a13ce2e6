import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { nixImageCrdYaml } from "../api/crd.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { parseFlags, type Command } from "./command.ts";

/** Where `npm run gen:crd` writes the CRD: the crds/ folder and the chart's copy. */
export const crdOutputPaths = ["crds/niximages.niximage.io.yaml", "charts/nix-image-operator/crds/niximages.niximage.io.yaml"];

export const crdCommand: Command = {
  name: "crd",
  summary: "print the NixImage CustomResourceDefinition (generated from the API schema)",
  help: `Usage: nix-image-operator crd [--config FILE] [--write]

Prints the NixImage CRD as YAML. Its CEL rules carry the flake ref policy of the operator
config (defaults: github, gitlab, sourcehut, git+https, git+ssh, tarball+https, https), so a
cluster whose operator allows more schemes applies the CRD made from the same config:

  nix-image-operator crd --config operator.yaml | kubectl apply --server-side -f -

Flags:
  --config FILE   operator config whose flakeRefPolicy the CRD enforces
  --write         write ${crdOutputPaths.join(" and ")} (npm run gen:crd)
  -h, --help      this help`,
  async run(context) {
    const { values } = parseFlags(context.argv, { config: { type: "string" }, write: { type: "boolean" } }, "crd");
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const config = await loadOperatorConfig({ file: values.config, env: {} });
    const yaml = nixImageCrdYaml({ flakeRefPolicy: config.flakeRefPolicy });
    if (!values.write) {
      context.stdout.write(yaml);
      return 0;
    }
    for (const path of crdOutputPaths) {
      const target = join(context.cwd, path);
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, yaml);
      context.stderr.write(`wrote ${path}\n`);
    }
    return 0;
  },
};
