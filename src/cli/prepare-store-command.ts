import { chown, mkdir } from "node:fs/promises";
import { prepareStore } from "../builder/prepare-store.ts";
import { writeTerminationMessage } from "../builder/push-result.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { reportFailure } from "./builder-flags.ts";

export const prepareStoreCommand: Command = {
  name: "prepare-store",
  help: `Usage: nix-image-operator prepare-store --volume DIR [--nix-root DIR] [--termination-message PATH]

The prepare step of the builder Job. The store volume is mounted at DIR while the builder
image's own /nix is still visible (later steps mount the volume at /nix):

  - a volume without a Nix database gets a copy of the image's /nix (store, database, var),
    preserving modes, symlinks, hard links and mtimes; the copy is moved into place at the end,
    the database last, so an interrupted copy is redone on the next run;
  - a volume with a database must have the same Nix database schema version
    (var/nix/db/schema) as the image's Nix; otherwise the step fails with a message saying so.

With --layer-cache DIR --layer-cache-owner UID, the layer cache directory (a separate
sub-directory of the volume, which the build step does not mount) is handed to that user: the
push step runs as non-root (65532) and keeps its store-path-set -> layer digest cache there.

Prints {"action":"seeded"|"checked","schema":...} on success. Exit code 1 on failure.

Flags:
  --volume DIR                 where the store volume is mounted in this step (required)
  --nix-root DIR               the image's own Nix root (default /nix)
  --layer-cache DIR            the push step's layer cache directory (created if missing)
  --layer-cache-owner UID      owner of --layer-cache (the push step's uid)
  --termination-message PATH   write a short error here on failure (Kubernetes: /dev/termination-log)
  -h, --help                   this help`,
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
