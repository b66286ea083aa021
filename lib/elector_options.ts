/**
 * The elector's options and their validation (client-go's rules), and the
 * server's retry hints.
 *
 * @module
 */

import { type Clock, MAX_TIMER_MS } from "./clock.ts";
import { KubeApiError } from "./errors.ts";
import { invalidLeaseName, invalidNamespace } from "./lease.ts";
import type { LeaseApi } from "./lease_api.ts";
import type { Logger } from "./log.ts";
import type { LeaderContext, StopReason } from "./elector_types.ts";

/** client-go's JitterFactor: followers wait RetryPeriod plus up to 1.2 × RetryPeriod. */
export const JITTER_FACTOR = 1.2;

/**
 * The longest wait a server's `Retry-After` (or `retryAfterSeconds`) hint can
 * impose on the elector, in ms; longer hints are cut to this.
 */
export const MAX_RETRY_AFTER_MS = 60000;

/**
 * The server's retry hint of an error in ms, validated: 0 when there is none or
 * it is not a positive finite number, at most {@linkcode MAX_RETRY_AFTER_MS}.
 *
 * @example Usage
 * ```ts
 * import { KubeApiError, retryAfterMs } from "@leasehold/leasehold";
 * const e = (s: number) =>
 *   new KubeApiError("slow down", { code: 429, reason: "TooManyRequests", method: "GET", url: "x", retryAfterSeconds: s });
 * console.log(retryAfterMs(e(3))); // 3000
 * console.log(retryAfterMs(e(NaN))); // 0
 * console.log(retryAfterMs(e(1e12))); // 60000
 * ```
 */
export function retryAfterMs(e: unknown): number {
  if (!(e instanceof KubeApiError)) return 0;
  const s = e.retryAfterSeconds;
  if (typeof s !== "number" || !Number.isFinite(s) || s <= 0) return 0;
  return Math.min(s * 1000, MAX_RETRY_AFTER_MS);
}

/** Options of {@linkcode LeaderElector}. Durations are in milliseconds. */
export interface LeaderElectorOptions {
  /** The Lease to elect on. */
  lease: LeaseApi;
  /** This replica's identity, unique among candidates (e.g. the pod name). */
  identity: string;
  /**
   * How long a holder's claim lasts after its last observed change, in whole
   * seconds (it is written as `leaseDurationSeconds`; other values are a
   * {@linkcode ConfigError}). @default 15000
   */
  leaseDuration?: number;
  /** How long the leader keeps trying to renew before it gives up. @default 10000 */
  renewDeadline?: number;
  /** Time between attempts. @default 2000 */
  retryPeriod?: number;
  /** Release the Lease when leadership ends (after the work settled). @default true */
  releaseOnCancel?: boolean;
  /** Contend again after losing leadership (client-go's `Run` is one-shot). @default true */
  recontend?: boolean;
  /**
   * Coordinated leader election (KEP-4355): the API server's election controller
   * picks the holder among the LeaseCandidates (keep one with
   * {@linkcode LeaseCandidateKeeper}). This replica then never creates the Lease
   * nor takes a free or expired one; it starts a term when the controller writes
   * it in, and ends its term at once (abort, wait for the work, release) when
   * `spec.preferredHolder` names another replica. Every write keeps
   * `spec.strategy`. @default false
   */
  coordinated?: boolean;
  /**
   * Followers watch the Lease (if the API supports it) instead of polling. A
   * follower opens at most one watch per second: after a watch that ended (or
   * failed) within 10 s it waits a jittered backoff that doubles from 1 s to
   * 30 s (reset by a watch that lived 10 s or delivered an event), at least 60 s
   * after a 403; while it has no watch it polls once per jittered retryPeriod.
   * @default true
   */
  watch?: boolean;
  /** Called when this replica becomes leader; stop when `ctx.signal` aborts. */
  onStartedLeading?: (ctx: LeaderContext) => void | Promise<unknown>;
  /**
   * Called once after each term, at once when the work is told to stop (before
   * the work settled and before the release, which has its own `released` event).
   */
  onStoppedLeading?: (reason: StopReason) => void;
  /** Called when the observed holder changes (including to this replica). */
  onNewLeader?: (identity: string) => void;
  /** Time source. @default systemClock */
  clock?: Clock;
  /** Structured logger. @default silentLogger */
  logger?: Logger;
  /** Random numbers in [0, 1) for jitter. @default Math.random */
  random?: () => number;
}

/**
 * Validates elector timings and identity as client-go does; returns the
 * problems (empty when fine).
 *
 * @example Usage
 * ```ts
 * import { validateElectorOptions } from "@leasehold/leasehold";
 * console.log(validateElectorOptions({ identity: "a", leaseDuration: 5000, renewDeadline: 8000 }));
 * // [ "leaseDuration (5000 ms) must be greater than renewDeadline (8000 ms)" ]
 * ```
 */
export function validateElectorOptions(o: {
  identity?: string;
  leaseDuration?: number;
  renewDeadline?: number;
  retryPeriod?: number;
  namespace?: string;
  name?: string;
}): string[] {
  const ld = o.leaseDuration ?? 15000, rd = o.renewDeadline ?? 10000, rp = o.retryPeriod ?? 2000;
  const problems: string[] = [];
  for (const [k, v] of [["leaseDuration", ld], ["renewDeadline", rd], ["retryPeriod", rp]] as const) {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      problems.push(`${k} must be greater than zero (got ${v})`);
    } else if (v > MAX_TIMER_MS) {
      problems.push(`${k} (${v} ms) must be at most ${MAX_TIMER_MS} ms (about 24.8 days), the longest timer`);
    }
  }
  if (problems.length) return problems;
  if (ld <= rd) problems.push(`leaseDuration (${ld} ms) must be greater than renewDeadline (${rd} ms)`);
  if (rd <= JITTER_FACTOR * rp) {
    problems.push(
      `renewDeadline (${rd} ms) must be greater than retryPeriod × ${JITTER_FACTOR} (${JITTER_FACTOR * rp} ms)`,
    );
  }
  if (ld < 1000) {
    problems.push(`leaseDuration (${ld} ms) must be at least 1000 ms: it is written as whole leaseDurationSeconds`);
  } else if (ld % 1000 !== 0) {
    // Followers judge expiry by the written whole seconds; every local bound must agree with them.
    const lo = Math.floor(ld / 1000), hi = Math.ceil(ld / 1000);
    problems.push(
      `leaseDuration (${ld} ms) must be a whole number of seconds, as it is written in leaseDurationSeconds: ` +
        `use ${lo}s or ${hi}s (e.g. --lease-duration ${hi}s)`,
    );
  }
  if (!o.identity) problems.push("identity must not be empty: set it to the pod name (POD_NAME from the downward API)");
  if (o.name !== undefined) {
    const bad = invalidLeaseName(o.name);
    if (bad) problems.push(`lease name ${JSON.stringify(o.name)} ${bad}`);
  }
  if (o.namespace !== undefined) {
    const bad = invalidNamespace(o.namespace);
    if (bad) problems.push(`namespace ${JSON.stringify(o.namespace)} ${bad}`);
  }
  return problems;
}
