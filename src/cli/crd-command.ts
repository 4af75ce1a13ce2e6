import { nixImageCrdYaml } from "../api/crd.ts";
import { loadOperatorConfig } from "../config/operator-config.ts";
import { parseFlags, type Command } from "./command.ts";
import { crdHelp } from "./command-help.ts";

export const crdCommand: Command = {
  name: "crd",
  help: crdHelp,
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
