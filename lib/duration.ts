/**
 * Durations written as Go's `time.ParseDuration` reads them (`15s`, `1m30s`,
 * `.5s`, `1h2m3.5s`, `-1s`, `0`), and the longest delay a timer can hold.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";

/**
 * The longest delay, in ms, that `setTimeout` honours on Deno, Bun and Node:
 * 2^31 - 1 ms fires at once (or is clamped to 1 ms), so durations must stay below it.
 *
 * @example Usage
 * ```ts
 * import { MAX_TIMER_MS } from "@leasehold/leasehold/cli";
 * console.log(MAX_TIMER_MS); // 2147483646
 * ```
 */
export const MAX_TIMER_MS = 2 ** 31 - 2;

const UNIT_NS: Record<string, bigint> = {
  ns: 1n,
  us: 1_000n,
  "\u00b5s": 1_000n, // micro sign
  "\u03bcs": 1_000n, // Greek mu
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};
const MAX_NS = (1n << 63n) - 1n;

/**
 * Parses a duration exactly as Go's `time.ParseDuration` does and returns
 * milliseconds (fractions of a millisecond are kept). Accepted: an optional sign,
 * then one or more `<number><unit>` with units ns, us (µs, μs), ms, s, m, h and
 * numbers like `1`, `1.5`, `.5` or `1.`; the bare `0`. Refused, as in Go: a
 * missing unit, an empty string, spaces, and anything beyond 2^63 - 1 ns.
 *
 * @throws {ConfigError} naming the accepted forms
 * @example Usage
 * ```ts
 * import { parseDuration } from "@leasehold/leasehold/cli";
 * console.log(parseDuration("1m30s")); // 90000
 * console.log(parseDuration(".5s")); // 500
 * ```
 */
export function parseDuration(s: string): number {
  const bad = (why: string) =>
    new ConfigError(`${JSON.stringify(s)} is not a duration (${why}); use forms like 15s, 500ms, 1.5s or 1m30s`);
  let i = 0;
  let negative = false;
  if (s[0] === "-" || s[0] === "+") {
    negative = s[0] === "-";
    i = 1;
  }
  if (s.slice(i) === "0") return 0;
  if (i === s.length) throw bad(s === "" ? "empty" : "no number");
  let total = 0n;
  while (i < s.length) {
    const start = i;
    while (i < s.length && s[i] >= "0" && s[i] <= "9") i++;
    const whole = s.slice(start, i);
    let frac = "";
    if (s[i] === ".") {
      const f0 = ++i;
      while (i < s.length && s[i] >= "0" && s[i] <= "9") i++;
      frac = s.slice(f0, i);
    }
    if (whole === "" && frac === "") throw bad("a number is missing");
    const u0 = i;
    while (i < s.length && s[i] !== "." && (s[i] < "0" || s[i] > "9")) i++;
    const unit = s.slice(u0, i);
    if (unit === "") throw bad("a unit is missing");
    const ns = UNIT_NS[unit];
    if (ns === undefined) throw bad(`unknown unit ${JSON.stringify(unit)}; units are ns, us, ms, s, m, h`);
    let v = BigInt(whole || "0") * ns;
    if (frac) v += (BigInt(frac) * ns) / 10n ** BigInt(frac.length);
    total += v;
    if (total > MAX_NS) throw bad("out of range");
  }
  const ms = Number(total) / 1e6;
  return negative ? -ms : ms;
}

/**
 * Formats milliseconds the way Go prints a duration (`1m30s`, `1.5s`, `500ms`).
 *
 * @example Usage
 * ```ts
 * import { formatDuration } from "@leasehold/leasehold/cli";
 * console.log(formatDuration(90000)); // "1m30s"
 * ```
 */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  if (ms < 0) return "-" + formatDuration(-ms);
  if (ms < 1000) return `${+ms.toFixed(3)}ms`;
  let rest = ms / 1000;
  const h = Math.floor(rest / 3600);
  rest -= h * 3600;
  const m = Math.floor(rest / 60);
  rest -= m * 60;
  return `${h ? `${h}h` : ""}${h || m ? `${m}m` : ""}${+rest.toFixed(3)}s`;
}
