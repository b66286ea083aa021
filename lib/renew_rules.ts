/**
 * The leader's renewal timing, as pure rules: the phase of its first renewal,
 * the wait after each attempt, and the time left before the renew deadline.
 *
 * @module
 */

/**
 * The wait before a new leader's first renewal: a phase in (0, retryPeriod]
 * drawn from `u` in [0, 1). Electors that acquired at the same moment (many
 * Leases in one process, all free at start) then renew spread over the period
 * instead of in lock-step; later renewals keep that phase, one retryPeriod
 * apart. Never longer than retryPeriod, so a term renews no later than it
 * would without it.
 *
 * @example Usage
 * ```ts
 * import { firstRenewWait } from "./renew_rules.ts";
 * console.log(firstRenewWait(2000, 0)); // 2000
 * console.log(firstRenewWait(2000, 0.75)); // 500
 * ```
 */
export function firstRenewWait(retryPeriod: number, u: number): number {
  return retryPeriod * (1 - u);
}

/** What one renewal attempt came to: written, nothing written (e.g. a conflict), or an error. */
export type RenewOutcome = "renewed" | "not-written" | "failed";

/**
 * The leader's wait before its next renewal attempt: retryPeriod after a
 * successful renewal; retryPeriod / 2 after an attempt that wrote nothing or
 * failed, or the server's retry hint after a failure when that is longer. The
 * renew loop cuts every wait at the renew deadline ({@linkcode renewTimeLeft}).
 *
 * @example Usage
 * ```ts
 * import { renewWait } from "./renew_rules.ts";
 * console.log(renewWait("renewed", 2000)); // 2000
 * console.log(renewWait("failed", 2000, 5000)); // 5000
 * ```
 */
export function renewWait(outcome: RenewOutcome, retryPeriod: number, retryAfterMs = 0): number {
  if (outcome === "renewed") return retryPeriod;
  return outcome === "failed" ? Math.max(retryPeriod / 2, retryAfterMs) : retryPeriod / 2;
}

/**
 * Time the leader has left to renew: renewDeadline after the start of its last
 * successful renewal, minus the time since, on the monotonic clock. At 0 or
 * below it stops leading.
 *
 * @example Usage
 * ```ts
 * import { renewTimeLeft } from "./renew_rules.ts";
 * console.log(renewTimeLeft(1000, 10000, 4000)); // 7000
 * ```
 */
export function renewTimeLeft(lastRenew: number, renewDeadline: number, now: number): number {
  return lastRenew + renewDeadline - now;
}
