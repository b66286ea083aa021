/**
 * One term of leadership: start the work with its signal and fencing token,
 * renew, then stop the work, wait for it (bounded) and release.
 *
 * @module
 */

import { graceMs as graceLeft, mayRelease } from "./election_rules.ts";
import { linkSignals } from "./signal.ts";
import type { ElectorCore } from "./elector_core.ts";
import { type Acquired, type FencingToken, LeadershipLostError, type StopReason } from "./elector_types.ts";
import { release } from "./elector_release.ts";
import { renewLoop } from "./elector_renew.ts";
import { watchLoop } from "./elector_watch.ts";

/**
 * One term. The fencing token comes from the acquiring write's answer. When
 * the renewals end: leading turns off, the work's signal aborts, "stopped
 * leading" is reported at once; then the work is awaited (at most until the
 * Lease could be taken) and the Lease released (its own log line and event).
 */
export async function lead(
  c: ElectorCore,
  stop: AbortSignal,
  won: Acquired,
): Promise<{ work: Promise<void>; settled: boolean }> {
  const leaderCtl = new AbortController();
  const rec = won.record;
  const token: FencingToken = {
    holderIdentity: c.identity,
    leaseTransitions: rec.leaseTransitions,
    resourceVersion: won.lease.metadata?.resourceVersion ?? "",
    acquireTime: rec.acquireTime,
    value: `${rec.leaseTransitions}/${c.identity}`,
  };
  // The acquiring write is what this replica last saw, whatever a watch said meanwhile.
  c.observe(won.lease, c.lastRenew, true).at = c.lastRenew;
  c.token = token;
  c.leadingSince = c.clock.wallTime().toISOString();
  c.leading = true;
  c.stats.startedTotal++;
  c.reportLeader();
  c.log.info("started leading", { lease: `${c.api.namespace}/${c.api.name}`, fencingToken: token.value });
  let workDone = false;
  let work: Promise<unknown>;
  try {
    work = Promise.resolve(c.opts.onStartedLeading?.({ signal: leaderCtl.signal, fencingToken: token }));
  } catch (e) {
    work = Promise.reject(e);
  }
  const settledWork = work.then(
    () => {},
    (e) => {
      if (!leaderCtl.signal.aborted || e !== leaderCtl.signal.reason) {
        c.log.error("leader work failed", { error: e instanceof Error ? e.message : String(e) });
      }
    },
  ).then(() => {
    workDone = true;
    if (c.workSettling) c.log.info("the last term's work has settled", {});
    c.workSettling = false;
  });
  c.events.dispatchEvent(new CustomEvent("started", { detail: token }));

  // Under coordinated election the leader watches too: the controller moves
  // leadership by setting preferredHolder, and the term should end at once.
  const leaderWatch = new AbortController();
  if (c.opts.coordinated && (c.opts.watch ?? true) && c.api.watch) {
    const linked = linkSignals([stop, leaderWatch.signal]);
    watchLoop(c, linked.signal).catch(() => {}).finally(() => linked.dispose());
  }
  let reason: StopReason;
  try {
    reason = await renewLoop(c, stop);
  } finally {
    leaderWatch.abort();
  }

  // Stop leading: flip the state, abort the work and say so, all at once; then
  // wait for the work, bounded by the time left before another replica could
  // take the Lease, and release it.
  const graceMs = graceLeft(c.lastRenew, c.leaseDuration, c.clock.now());
  c.leading = false;
  c.token = undefined;
  c.workSettling = !workDone;
  const messages: Record<StopReason, string> = {
    "shutdown": "stopping: shutdown requested",
    "renew-deadline": `could not renew the lease within renewDeadline (${c.renewDeadline} ms)`,
    "lease-taken": `the lease was taken by ${c.observed?.holder}`,
    "lease-deleted": "the lease was deleted",
    "lease-malformed": "the lease was overwritten with a malformed record",
    "preferred-holder": `the election controller prefers ${c.observed?.preferredHolder} as holder`,
  };
  leaderCtl.abort(new LeadershipLostError(reason, messages[reason], graceMs));
  c.log.info("stopped leading", { reason, detail: messages[reason], graceMs: Math.round(graceMs) });
  c.call("onStoppedLeading", () => c.opts.onStoppedLeading?.(reason));
  c.events.dispatchEvent(new CustomEvent("stopped", { detail: reason }));

  const settled = workDone || await settleWithin(c, settledWork, graceMs);
  if (!settled) {
    c.log.error(
      "leader work did not stop before the lease could be taken by another replica; it may overlap with the next leader",
      { waitedMs: Math.round(graceMs) },
    );
  }
  if (mayRelease(reason, settled, c.opts.releaseOnCancel ?? true)) {
    await release(c, reason);
  }
  return { work: settledWork, settled };
}

export async function settleWithin(c: ElectorCore, work: Promise<unknown>, ms: number): Promise<boolean> {
  const r = await c.within(work, ms);
  return r !== undefined;
}
