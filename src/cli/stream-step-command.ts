import { writeTerminationMessage } from "../builder/push-result.ts";
import { markExited, STREAM_EXITED } from "../builder/stream-handoff.ts";
import { runStreamStep } from "../builder/stream-step.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { streamStepHelp } from "./command-help.ts";
import { pipelineLogger, reportFailure } from "./builder-flags.ts";

export const streamStepCommand: Command = {
  name: "stream-step",
  help: streamStepHelp,
  async run(context) {
    const { values, positionals } = parseFlags(
      context.argv,
      { from: { type: "string" }, socket: { type: "string" }, "termination-message": { type: "string" } },
      "stream-step",
    );
    if (values.help) {
      context.stdout.write(`${this.help}\n`);
      return 0;
    }
    const terminationMessage = values["termination-message"];
    try {
      if (positionals.length > 0) throw new UsageError(`stream-step: unexpected argument ${JSON.stringify(positionals[0])}`);
      if (values.from === undefined) throw new UsageError("stream-step: --from is required");
      if (values.socket === undefined) throw new UsageError("stream-step: --socket is required");
      try {
        const out = await runStreamStep({
          from: values.from,
          socket: values.socket,
          env: { PATH: "/usr/bin:/bin", HOME: "/tmp", TMPDIR: "/tmp" },
          signal: context.signal,
          logger: pipelineLogger(context),
        });
        const message = out.streamed ? `streamed ${out.bytes} bytes to the push step` : `nothing to stream: ${out.reason}`;
        await writeTerminationMessage(terminationMessage, message);
        context.stdout.write(`${message}\n`);
        return 0;
      } finally {
        await markExited(values.socket, STREAM_EXITED);
      }
    } catch (error) {
      return reportFailure(context, error, { terminationMessage });
    }
  },
};
