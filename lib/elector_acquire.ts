/**
 * The follower's side: attempts to acquire until one succeeds, waiting between
 * them as election_rules.ts's nextAttemptAt says, with the watch running.
 *
 * @module
 */

import { clampDelay } from "./clock.ts";
import { nextAttemptAt } from "./election_rules.ts";
import { TimeoutError } from "./errors.ts";
import { linkSignals } from "./signal.ts";
import type { ElectorCore } from "./elector_core.ts";
import { retryAfterMs } from "./elector_options.ts";
import type { Acquired, AttemptCtx } from "./elector_types.ts";
import { attempt } from "./elector_attempt.ts";
import { watchLoop } from "./elector_watch.ts";

export async function acquireLoop(c: ElectorCore, stop: AbortSignal): Promise<Acquired | undefined> {
  const watcher = new AbortController();
  const linked = linkSignals([stop, watcher.signal]);
  // Not awaited when the loop ends: a watch that ignores its signal must not
  // hold up a term; the loop ignores whatever it delivers after the abort.
  if ((c.opts.watch ?? true) && c.api.watch) watchLoop(c, linked.signal).catch(() => {});
  // One attempt makes up to three requests; it never outlasts renewDeadline.
  const budget = Math.min(c.requestTimeout * 2, c.renewDeadline);
  try {
    for (;;) {
      if (stop.aborted) return undefined;
      let retryAfter = 0;
      const ctx: AttemptCtx = { abandoned: false };
      try {
        const r = await c.within(attempt(c, stop, budget, ctx), budget, stop);
        if (!r) {
          ctx.abandoned = true;
          if (stop.aborted) return undefined;
          c.noteError(
            new TimeoutError(`an attempt to acquire the lease got no answer within ${budget} ms`),
            "could not acquire the lease",
          );
        } else if (r.value.kind === "acquired") {
          c.lastError = "";
          c.pendingAcquires = [];
          return r.value;
        }
      } catch (e) {
        if (stop.aborted) return undefined;
        c.noteError(e, "could not acquire the lease");
        retryAfter = retryAfterMs(e);
      }
      await waitForChance(c, stop, retryAfter);
    }
  } finally {
    watcher.abort();
    linked.dispose();
  }
}

/**
 * Sleeps until the next attempt is worth making: at once when the Lease was
 * released since the last attempt, at the observed expiry while a holder's
 * claim runs, else after the jittered retry period (so a failing attempt is
 * never retried in a tight loop). With a healthy watch no polling happens while
 * a claim runs; watch events only make it look again.
 */
export async function waitForChance(c: ElectorCore, stop: AbortSignal, retryAfter: number): Promise<void> {
  const start = c.clock.now();
  const changesAtStart = c.changes;
  const pollAt = start + Math.max(c.jittered(c.retryPeriod), retryAfter);
  for (;;) {
    if (stop.aborted) return;
    const now = c.clock.now();
    const until = nextAttemptAt({
      start,
      retryAfterMs: retryAfter,
      pollAt,
      observed: c.observed,
      changed: c.changes !== changesAtStart,
      watching: c.watchHealthy,
    });
    if (now >= until) return;
    const ctl = new AbortController();
    c.wake = () => ctl.abort();
    const linked = linkSignals([stop, ctl.signal]);
    try {
      await c.clock.sleep(clampDelay(until - now, 1), linked.signal);
    } catch {
      // woken: look again
    } finally {
      c.wake = undefined;
      linked.dispose();
    }
  }
}
