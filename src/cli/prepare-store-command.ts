import { chown, mkdir } from "node:fs/promises";
import { prepareStore } from "../builder/prepare-store.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { prepareStoreHelp } from "./command-help.ts";
import { reportFailure } from "./builder-flags.ts";

export const prepareStoreCommand: Command = {
  name: "prepare-store",
  help: prepareStoreHelp,
  async run(context) {
    const { values, positionals } = parseFlags(
      context.argv,
      {
        volume: { type: "string" },
        "nix-root": { type: "string" },
        "layer-cache": { type: "string" },
        "layer-cache-owner": { type: "string" },
        "termination-message": { type: "string" },
      },
      "prepare-store",
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const terminationMessage = values["termination-message"];
    try {
      if (positionals.length > 0) throw new UsageError(`prepare-store: unexpected argument ${JSON.stringify(positionals[0])}`);
      if (values.volume === undefined) throw new UsageError("prepare-store: --volume is required");
      const owner = values["layer-cache-owner"];
      if (owner !== undefined && !/^\d+$/.test(owner))
        throw new UsageError(`prepare-store: --layer-cache-owner takes a numeric uid, got ${JSON.stringify(owner)}`);
      const result = await prepareStore({
        volume: values.volume,
        ...(values["nix-root"] !== undefined ? { nixRoot: values["nix-root"] } : {}),
        logger: context.logger,
      });
      const cache = values["layer-cache"];
      if (owner !== undefined && cache === undefined) throw new UsageError("prepare-store: --layer-cache-owner needs --layer-cache");
      if (cache !== undefined) {
        await mkdir(cache, { recursive: true });
        if (owner !== undefined) await chown(cache, Number(owner), Number(owner));
      }
      await writeTerminationMessage(terminationMessage, JSON.stringify(result));
      context.stdout.write(`${JSON.stringify(result)}\n`);
      return 0;
    } catch (error) {
      return reportFailure(context, error, { terminationMessage });
    }
  },
};
