import { nixImageCrdYaml } from "../api/crd.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { parseFlags, type Command } from "./command.ts";

export const crdCommand: Command = {
  name: "crd",
  help: `Usage: nix-image-operator crd [--config FILE]

Prints the NixImage CRD as YAML. Its CEL rules carry the flake ref policy of the operator
config (defaults: github, gitlab, sourcehut, git+https, git+ssh, tarball+https, https), so a
cluster whose operator allows more schemes applies the CRD made from the same config:

  nix-image-operator crd --config operator.yaml | kubectl apply --server-side -f -

Flags:
  --config FILE   operator config whose flakeRefPolicy the CRD enforces
  -h, --help      this help`,
  async run(context) {
    const { values } = parseFlags(context.argv, { config: { type: "string" } }, "crd");
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const config = await loadOperatorConfig({ file: values.config, env: {} });
    context.stdout.write(nixImageCrdYaml({ flakeRefPolicy: config.flakeRefPolicy }));
    return 0;
  },
};
