/**
 * Releasing the Lease at the end of a term: only while this replica still holds
 * it, guarded by resourceVersion, bounded by renewDeadline.
 *
 * @module
 */

import { releaseRecord } from "./election_rules.ts";
import { isConflict, TimeoutError } from "./errors.ts";
import { formatMicroTime, type LeaderElectionRecord, type Lease, readRecord } from "./lease.ts";
import type { ElectorCore } from "./elector_core.ts";
import type { AttemptCtx, StopReason } from "./elector_types.ts";

/** PUTs the release record (holder "", 1 s, times now, transitions kept) over `lease`. */
export async function writeRelease(
  c: ElectorCore,
  lease: Lease,
  record: LeaderElectionRecord,
  signal: AbortSignal,
  ctx: AttemptCtx,
  reason: StopReason,
): Promise<void> {
  const wall = formatMicroTime(c.clock.wallTime());
  c.count("update");
  const updated = await c.api.update(
    c.withRecord(lease, releaseRecord(record, wall)),
    signal,
  );
  if (ctx.abandoned) return;
  c.observe(updated, c.clock.now());
  c.log.info("released the lease", { lease: `${c.api.namespace}/${c.api.name}`, reason });
  c.events.dispatchEvent(new CustomEvent("released", { detail: reason }));
}

/**
 * Writes an empty holder, but only while this replica still holds the Lease;
 * gives up after renewDeadline (on the injected clock, even if a call hangs).
 */
export async function release(c: ElectorCore, reason: StopReason): Promise<void> {
  const ctx: AttemptCtx = { abandoned: false };
  const r = await c.within(releaseAttempts(c, ctx, reason), c.renewDeadline);
  if (!r) {
    ctx.abandoned = true;
    c.noteError(
      new TimeoutError(`releasing the lease got no answer within ${c.renewDeadline} ms`),
      "could not release the lease; it will expire after leaseDuration",
    );
  }
}

export async function releaseAttempts(c: ElectorCore, ctx: AttemptCtx, reason: StopReason): Promise<void> {
  const deadline = c.clock.now() + c.renewDeadline;
  const never = new AbortController().signal;
  // First the cached object of our last write: its resourceVersion makes the PUT
  // fail with 409 if anyone wrote since, so it can only blank our own record.
  const o = c.observed;
  if (o?.record && o.holder === c.identity && !o.deleted) {
    const req = c.requestSignal(never, deadline - c.clock.now());
    try {
      await writeRelease(c, o.lease, o.record, req.signal, ctx, reason);
      return;
    } catch (e) {
      if (!isConflict(e)) {
        c.noteError(e, "could not release the lease; it will expire after leaseDuration");
        return;
      }
    } finally {
      req.done();
    }
  }
  // Then a fresh read: release only what this replica still holds.
  for (let i = 0; i < 10 && !ctx.abandoned; i++) {
    const left = deadline - c.clock.now();
    if (left <= 0) break;
    const req = c.requestSignal(never, left);
    try {
      c.count("get");
      const lease = await c.api.get(req.signal);
      const r = lease ? readRecord(lease) : undefined;
      if (!lease || !r?.ok || r.record.holderIdentity !== c.identity) {
        c.log.debug("release skipped: the lease is not held by this replica", {});
        return;
      }
      await writeRelease(c, lease, r.record, req.signal, ctx, reason);
      return;
    } catch (e) {
      if (!isConflict(e)) {
        c.noteError(e, "could not release the lease; it will expire after leaseDuration");
        return;
      }
    } finally {
      req.done();
    }
    // Someone wrote meanwhile: look again after a short jittered pause, not in a burst.
    const pause = Math.min(c.jittered(c.retryPeriod / 4), deadline - c.clock.now());
    if (pause > 0) await c.clock.sleep(pause).catch(() => {});
  }
}
