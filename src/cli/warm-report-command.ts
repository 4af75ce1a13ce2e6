import { fitWarmReport, warmReport } from "../builder/warm-report.ts";
import { warmReportHelp } from "./command-help.ts";
import { stepCommand } from "./run-step.ts";

export const warmReportCommand = stepCommand({
  name: "warm-report",
  help: warmReportHelp,
  flags: { from: { type: "string" } },
  required: ["from"],
  async run({ values }) {
    const report = await warmReport(values.from!);
    return {
      terminationMessage: fitWarmReport(report.message),
      stdout: JSON.stringify({ ...report.message, ...(report.diff ? { closureDiff: report.diff } : {}) }, null, 2),
    };
  },
});
