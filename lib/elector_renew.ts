/**
 * The leader's renewals: every retryPeriod, retried after a failure, each wait
 * and attempt cut at renewDeadline on the injected clock.
 *
 * @module
 */

import { clampDelay } from "./clock.ts";
import { firstRenewWait, renewTimeLeft, renewWait } from "./renew_rules.ts";
import { type LinkedSignal, linkSignals } from "./signal.ts";
import type { ElectorCore } from "./elector_core.ts";
import { retryAfterMs } from "./elector_options.ts";
import type { AttemptCtx, StopReason } from "./elector_types.ts";
import { attempt } from "./elector_attempt.ts";

/**
 * Renews every retryPeriod, the first time after a random phase within it
 * (see firstRenewWait); after a failure retries every retryPeriod / 2 (or
 * the server's Retry-After) until renewDeadline has passed since the start of
 * the last successful renewal. Every wait and every attempt is cut at that
 * deadline on the injected clock, so a call that never returns cannot keep
 * this replica leading past it.
 */
export async function renewLoop(c: ElectorCore, stop: AbortSignal): Promise<StopReason> {
  let wait = firstRenewWait(c.retryPeriod, c.unitRandom());
  // The wake-up controller and its link to `stop` last until they are used,
  // not one pair per renewal.
  let wake: AbortController | undefined;
  let linked: LinkedSignal | undefined;
  try {
    for (;;) {
      let left = renewTimeLeft(c.lastRenew, c.renewDeadline, c.clock.now());
      if (left <= 0) return "renew-deadline";
      if (c.preferredOther(c.observed)) return "preferred-holder";
      if (!wake || !linked || linked.signal.aborted) {
        linked?.dispose();
        wake = new AbortController();
        linked = linkSignals([stop, wake.signal]);
      }
      c.leaderWake = wake;
      try {
        await c.clock.sleep(clampDelay(Math.min(wait, left), 1), linked.signal);
      } catch {
        if (stop.aborted) return "shutdown";
        if (c.preferredOther(c.observed)) return "preferred-holder";
      } finally {
        c.leaderWake = undefined;
      }
      left = renewTimeLeft(c.lastRenew, c.renewDeadline, c.clock.now());
      if (left <= 0) return "renew-deadline";
      const ctx: AttemptCtx = { abandoned: false };
      try {
        const r = await c.within(attempt(c, stop, left, ctx), left, stop);
        if (!r) {
          ctx.abandoned = true;
          if (stop.aborted) return "shutdown";
          continue; // the deadline has passed
        }
        switch (r.value.kind) {
          case "acquired":
            c.lastError = "";
            wait = renewWait("renewed", c.retryPeriod);
            continue;
          case "lost-taken":
            return "lease-taken";
          case "lost-deleted":
            return "lease-deleted";
          case "lost-malformed":
            return "lease-malformed";
          case "lost-preferred":
            return "preferred-holder";
        }
        wait = renewWait("not-written", c.retryPeriod);
      } catch (e) {
        if (stop.aborted) return "shutdown";
        c.noteError(e, "failed to renew the lease");
        wait = renewWait("failed", c.retryPeriod, retryAfterMs(e));
      }
    }
  } finally {
    linked?.dispose();
  }
}
