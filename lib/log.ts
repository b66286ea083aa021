/**
 * Structured logging, injectable. The library is quiet unless given a logger.
 *
 * @module
 */

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** What leasehold logs through. Any object with these four methods works. */
export interface Logger {
  /** Detail useful when debugging. */
  debug(msg: string, fields?: LogFields): void;
  /** Leadership changes and other facts worth keeping. */
  info(msg: string, fields?: LogFields): void;
  /** Something failed but will be retried. */
  warn(msg: string, fields?: LogFields): void;
  /** Something failed that needs a person. */
  error(msg: string, fields?: LogFields): void;
}

/**
 * A logger that drops everything: the library's default.
 *
 * @example Usage
 * ```ts
 * import { silentLogger } from "@leasehold/leasehold";
 * silentLogger.info("not printed");
 * ```
 */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * A logger writing one JSON object per line: `{"ts", "level", "msg", ...fields}`.
 * Errors in fields are written as their message.
 *
 * @param write receives each line, without the trailing newline
 * @param level the lowest level written
 * @example Usage
 * ```ts
 * import { jsonLogger } from "@leasehold/leasehold";
 * const lines: string[] = [];
 * const log = jsonLogger((l) => lines.push(l), "info");
 * log.info("new leader", { leader: "pod-a" });
 * console.log(JSON.parse(lines[0]).leader); // "pod-a"
 * ```
 */
export function jsonLogger(write: (line: string) => void, level: LogLevel = "info"): Logger {
  const min = ORDER[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (ORDER[lvl] < min) return;
    const out: Record<string, unknown> = { ts: new Date().toISOString(), level: lvl, msg };
    for (const [k, v] of Object.entries(fields ?? {})) {
      out[k] = v instanceof Error ? v.message : v;
    }
    write(JSON.stringify(out));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}
