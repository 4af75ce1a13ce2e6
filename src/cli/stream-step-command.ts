import { markExited, STREAM_EXITED } from "../builder/stream-handoff.ts";
import { runStreamStep } from "../builder/stream-step.ts";
import { streamStepHelp } from "./command-help.ts";
import { stepCommand } from "./run-step.ts";

export const streamStepCommand = stepCommand({
  name: "stream-step",
  help: streamStepHelp,
  flags: { from: { type: "string" }, socket: { type: "string" } },
  required: ["from", "socket"],
  async run({ values, log, signal }) {
    try {
      const out = await runStreamStep({
        from: values.from!,
        socket: values.socket!,
        env: { PATH: "/usr/bin:/bin", HOME: "/tmp", TMPDIR: "/tmp" },
        signal,
        logger: log,
      });
      return { terminationMessage: out.streamed ? `streamed ${out.bytes} bytes to the push step` : `nothing to stream: ${out.reason}` };
    } finally {
      await markExited(values.socket!, STREAM_EXITED);
    }
  },
});
