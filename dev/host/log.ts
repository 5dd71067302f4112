/**
 * Console output of the dev host: one line per log call, like the Functions host's console
 * (`[time] message`), with the function's name in front of its own lines. Line breaks
 * inside a message (a stack trace) are written as `\n`, so a line is always one call.
 */
import { levelAtLeast } from "./host-config.js";
import type { LogEntry, LogSink } from "./invoke.js";
import type { RpcLogLevel } from "./rpc.js";

export function formatLogLine(entry: LogEntry): string {
  const level = entry.level === "information" ? "" : `${entry.level}: `;
  const who = entry.category === "user" && entry.functionName ? `${entry.functionName}: ` : "";
  const message = entry.message.replace(/\r?\n/g, "\\n");
  return `[${entry.time.toISOString()}] ${who}${level}${message}`;
}

/** Prints entries at or above the levels of host.json `logging.logLevel` (Function for function logs). */
export function consoleSink(
  levels: { function: RpcLogLevel; default: RpcLogLevel },
  write: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
): LogSink {
  return (entry) => {
    const minimum = entry.category === "user" ? levels.function : levels.default;
    if (levelAtLeast(entry.level, minimum)) write(formatLogLine(entry));
  };
}
