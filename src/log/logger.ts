import { pino, type Logger, type DestinationStream } from "pino";

export type { Logger };

/**
 * Field paths pino censors wherever they appear (up to two levels deep). Secrets must never reach
 * a log line; this is the last line of defence, not the first: code should not log them at all.
 */
export const redactedPaths: readonly string[] = [
  "password",
  "*.password",
  "*.*.password",
  "token",
  "*.token",
  "*.*.token",
  "auth",
  "*.auth",
  "*.*.auth",
  "authorization",
  "*.authorization",
  "*.*.authorization",
  "Authorization",
  "*.Authorization",
  "*.*.Authorization",
  "secret",
  "*.secret",
  "*.*.secret",
  "credentials",
  "*.credentials",
  "*.*.credentials",
  "identitytoken",
  "*.identitytoken",
  "*.*.identitytoken",
  "registrytoken",
  "*.registrytoken",
  "*.*.registrytoken",
  "dockerconfigjson",
  "*.dockerconfigjson",
  "*.*.dockerconfigjson",
  "headers.authorization",
  "*.headers.authorization",
  "headers.cookie",
  "*.headers.cookie",
];

export interface LoggerOptions {
  level?: string;
  /** Where lines go; defaults to stderr so stdout stays free for command output. */
  destination?: DestinationStream;
}

/** The root logger every command uses: JSON lines, ISO time, secret-looking fields censored. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env.LOG_LEVEL ?? "info",
      base: { name: "nix-image-operator" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: [...redactedPaths], censor: "[redacted]" },
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? pino.destination({ fd: 2, sync: true }),
  );
}

/** A child logger for one component (`controller`, `builder`, `registry`, ...). */
export function componentLogger(root: Logger, component: string): Logger {
  return root.child({ component });
}
