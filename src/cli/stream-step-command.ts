import { writeTerminationMessage } from "../builder/push-result.ts";
import { markExited, STREAM_EXITED } from "../builder/stream-handoff.ts";
import { runStreamStep } from "../builder/stream-step.ts";
import { parseFlags, UsageError, type Command } from "./command.ts";
import { pipelineLogger, reportFailure } from "./builder-flags.ts";

export const streamStepCommand: Command = {
  name: "stream-step",
  help: `Usage: nix-image-operator stream-step --from DIR --socket PATH [--termination-message PATH]

The builder Job's stream step. When the build step's result (DIR/result.json) is a
streamLayeredImage script, runs it (argv only, environment PATH=/usr/bin:/bin, HOME and TMPDIR
/tmp) and copies its stdout to the push step, which listens on the Unix socket PATH
(push-step --stream-socket PATH). This step holds no Secret, no token and no layer cache: the
script is code from the flake. For any other format it exits 0 at once.

Exit code 0 when the image was streamed or nothing was to stream; 1 with a message on stderr (and
in --termination-message) when the script failed.

Flags:
  --from DIR                   the build step's directory (required)
  --socket PATH                the push step's socket, in a directory both steps share (required)
  --termination-message PATH   where the outcome goes (Kubernetes: /dev/termination-log)
  -h, --help                   this help`,
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
