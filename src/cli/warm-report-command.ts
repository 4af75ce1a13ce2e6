import { writeTerminationMessage } from "../builder/push-result.ts";
import { fitWarmReport, warmReport } from "../builder/warm-report.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { reportFailure } from "./builder-flags.ts";

export const warmReportCommand: Command = {
  name: "warm-report",
  help: `Usage: nix-image-operator warm-report --from DIR [--termination-message PATH]

The last step of a warm build's Job (which pushes nothing). Reads the build step's directory
(result.json, closure.json and, when the build step ran with --update-inputs, locked-closure.json)
and writes the result as JSON (at most 4096 bytes) to --termination-message, where the controller
reads it into status.lastWarmBuild:

  {"revision":{"url","rev","lastModified","narHash"},
   "closureDiff":{"added":[{"name","to"}],"removed":[{"name","from"}],"changed":[{"name","from","to"}]},
   "seconds":{...}}

closureDiff compares the closure built from the committed lock file with the one built against the
updated inputs, by package name and version; it is there only with --update-inputs. Long lists are
cut to fit; the full diff (with totals) is printed on stdout.

Exit code 0 on success; 1 with a message on stderr (and in --termination-message) on failure.

Flags:
  --from DIR                   the build step's directory (required)
  --termination-message PATH   where the JSON result (or the failure) goes (Kubernetes: /dev/termination-log)
  -h, --help                   this help`,
  async run(context) {
    const { values, positionals } = parseFlags(context.argv, { from: { type: "string" }, "termination-message": { type: "string" } }, "warm-report");
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const terminationMessage = values["termination-message"];
    try {
      if (positionals.length > 0) throw new UsageError(`warm-report: unexpected argument ${JSON.stringify(positionals[0])}`);
      if (values.from === undefined) throw new UsageError("warm-report: --from is required");
      const report = await warmReport(values.from);
      await writeTerminationMessage(terminationMessage, fitWarmReport(report.message));
      context.stdout.write(`${JSON.stringify({ ...report.message, ...(report.diff ? { closureDiff: report.diff } : {}) }, null, 2)}\n`);
      return 0;
    } catch (error) {
      return reportFailure(context, error, { terminationMessage });
    }
  },
};
