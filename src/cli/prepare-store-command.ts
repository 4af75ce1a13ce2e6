import { chown, mkdir } from "node:fs/promises";
import { prepareStore, StoreIncompatibleError } from "../builder/prepare-store.ts";
import { STORE_INCOMPATIBLE_EXIT_CODE } from "../builder/step-results.ts";
import { UsageError } from "./command.ts";
import { prepareStoreHelp } from "./command-help.ts";
import { stepCommand } from "./run-step.ts";

export const prepareStoreCommand = stepCommand({
  name: "prepare-store",
  help: prepareStoreHelp,
  flags: {
    volume: { type: "string" },
    "nix-root": { type: "string" },
    "layer-cache": { type: "string" },
    "layer-cache-owner": { type: "string" },
  },
  required: ["volume"],
  // The controller tells a refused store volume from other failures by this code.
  exitCode: (error) => (error instanceof StoreIncompatibleError ? STORE_INCOMPATIBLE_EXIT_CODE : undefined),
  async run({ values, context }) {
    const owner = values["layer-cache-owner"];
    if (owner !== undefined && !/^\d+$/.test(owner))
      throw new UsageError(`prepare-store: --layer-cache-owner takes a numeric uid, got ${JSON.stringify(owner)}`);
    const result = await prepareStore({
      volume: values.volume!,
      ...(values["nix-root"] !== undefined ? { nixRoot: values["nix-root"] } : {}),
      logger: context.logger,
    });
    const cache = values["layer-cache"];
    if (owner !== undefined && cache === undefined) throw new UsageError("prepare-store: --layer-cache-owner needs --layer-cache");
    if (cache !== undefined) {
      await mkdir(cache, { recursive: true });
      if (owner !== undefined) await chown(cache, Number(owner), Number(owner));
    }
    return { terminationMessage: JSON.stringify(result) };
  },
});
