import { writeTerminationMessage } from "../builder/push-result.ts";
import { fitWarmReport, warmReport } from "../builder/warm-report.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { warmReportHelp } from "./command-help.ts";
import { reportFailure } from "./builder-flags.ts";

export const warmReportCommand: Command = {
  name: "warm-report",
  help: warmReportHelp,
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
