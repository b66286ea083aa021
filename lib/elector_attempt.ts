/**
 * One acquire-or-renew attempt, as client-go's tryAcquireOrRenew with safer
 * rules: the decisions are election_rules.ts's, this module sends the requests.
 *
 * @module
 */

import { decideOnRead, desiredRecord, fastPath, salvageRecord } from "./election_rules.ts";
import { isAlreadyExists, isConflict, isNotFound } from "./errors.ts";
import { formatMicroTime, type LeaderElectionRecord, type Lease, readRecord, writeRecord } from "./lease.ts";
import type { ElectorCore } from "./elector_core.ts";
import { type Acquired, type Attempt, type AttemptCtx, HELD } from "./elector_types.ts";

export function desired(
  c: ElectorCore,
  prev: LeaderElectionRecord | undefined,
  keepTerm: boolean,
  wall: string,
): LeaderElectionRecord {
  return desiredRecord(c.identity, c.leaseDuration, prev, keepTerm, wall);
}

/** Our own write succeeded: the claim counts from before the request was sent. */
export function written(c: ElectorCore, lease: Lease, sent: LeaderElectionRecord, start: number): Acquired {
  const o = c.observe(lease, start, true);
  o.at = start;
  c.lastRenew = start;
  const r = readRecord(lease);
  const record = r.ok && r.record.holderIdentity === c.identity ? r.record : sent;
  return { kind: "acquired", lease, record };
}

export function notePendingAcquire(c: ElectorCore, sent: LeaderElectionRecord): void {
  c.pendingAcquires.push(sent);
  if (c.pendingAcquires.length > 8) c.pendingAcquires.shift();
}

/** PUTs `sent` over `lease`; an acquiring write is remembered until its answer is known. */
export function put(c: ElectorCore, lease: Lease, sent: LeaderElectionRecord, signal: AbortSignal): Promise<Lease> {
  c.count("update");
  if (!c.leading) notePendingAcquire(c, sent);
  return c.api.update(c.withRecord(lease, sent), signal);
}

/** One acquire-or-renew attempt, as client-go's tryAcquireOrRenew, with safer rules. */
export async function attempt(c: ElectorCore, stop: AbortSignal, budget: number, ctx: AttemptCtx): Promise<Attempt> {
  const start = c.clock.now();
  const wall = formatMicroTime(c.clock.wallTime());
  const remaining = () => budget - (c.clock.now() - start);
  const o = c.observed;
  // Under coordinated election a leader that sees another preferred holder ends its term.
  if (c.leading && c.preferredOther(o)) return { kind: "lost-preferred" };
  const fast = fastPath(c.identity, c.leading, o, c.opts.coordinated);
  // 1. Fast path: the leader PUTs its cached object; resourceVersion guards it.
  if (o?.record && fast === "renew") {
    const sent = desired(c, o.record, true, wall);
    const req = c.requestSignal(stop, budget);
    try {
      const updated = await put(c, o.lease, sent, req.signal);
      if (ctx.abandoned) return HELD;
      c.noteRenew(start);
      return written(c, updated, sent, start);
    } catch (e) {
      if (stop.aborted) throw e;
      c.noteError(e, "optimistic renew failed; falling back to GET + PUT", true);
    } finally {
      req.done();
    }
    if (ctx.abandoned) return HELD;
    c.stats.slowpathTotal++;
  } else if (o?.record && fast === "take-free") {
    // 1b. The Lease was free when last seen (a release delivered by the watch):
    // take it with one PUT of that object; a 409 means someone was faster.
    const sent = desired(c, o.record, false, wall);
    const req = c.requestSignal(stop, budget);
    try {
      const updated = await put(c, o.lease, sent, req.signal);
      if (ctx.abandoned) return HELD;
      return written(c, updated, sent, start);
    } catch (e) {
      // 409: someone was faster; 404: the Lease was deleted. Either way read it
      // again and go on under the usual rules (create only what has expired).
      if (stop.aborted || !(isConflict(e) || isNotFound(e))) throw e;
    } finally {
      req.done();
    }
    if (ctx.abandoned) return HELD;
  }
  // 2. Read the Lease.
  let req = c.requestSignal(stop, remaining());
  let lease: Lease | undefined;
  try {
    c.count("get");
    lease = await c.api.get(req.signal);
  } finally {
    req.done();
  }
  if (ctx.abandoned) return HELD;
  const now = c.clock.now();
  if (!lease) c.observeAbsent(now);
  const last = c.observed;
  const seen = lease ? c.observe(lease, now) : undefined;
  c.readOnce = true;
  // 3. Decide (see decideOnRead): renew, take over, adopt a lost write, create, wait or stop.
  const d = decideOnRead({
    identity: c.identity,
    leading: c.leading,
    read: seen,
    last,
    now,
    ownWrites: c.pendingAcquires,
    coordinated: c.opts.coordinated,
  });
  c.log.debug("read the lease", {
    found: !!lease,
    resourceVersion: lease?.metadata?.resourceVersion,
    holder: seen?.holder,
    decision: d.action,
  });
  if (d.action === "wait") return HELD;
  if (d.action === "stop") {
    return {
      kind: d.reason === "lease-taken"
        ? "lost-taken"
        : d.reason === "lease-deleted"
        ? "lost-deleted"
        : d.reason === "preferred-holder"
        ? "lost-preferred"
        : "lost-malformed",
    };
  }
  if (!lease || !seen || d.action === "create") {
    // A Lease deleted under a live holder was waited out above: that holder may
    // not have noticed the deletion. Create it only once the last record expired.
    const sent = desired(c, undefined, false, wall);
    req = c.requestSignal(stop, remaining());
    try {
      c.count("create");
      notePendingAcquire(c, sent);
      const created = await c.api.create(
        { metadata: { name: c.api.name, namespace: c.api.namespace }, spec: writeRecord({}, sent) },
        req.signal,
      );
      if (ctx.abandoned) return HELD;
      return written(c, created, sent, start);
    } catch (e) {
      if (isAlreadyExists(e) || isConflict(e)) return HELD;
      throw e;
    } finally {
      req.done();
    }
  }
  // A record that is exactly one of this replica's acquiring writes landed although
  // its answer was lost: nobody wrote since, so it is ours; keep that term.
  if (d.action === "adopt") {
    c.log.info("the lease holds this replica's own write whose answer was lost; taking that term", {
      leaseTransitions: seen.record?.leaseTransitions,
    });
  }
  // 4. Write: renew or adopt (keep the term) or take over (a new term).
  const keep = d.action === "renew" || d.action === "adopt";
  const prev = seen.record ?? salvageRecord(lease.spec);
  const sent = desired(c, prev, keep, wall);
  req = c.requestSignal(stop, remaining());
  try {
    const updated = await put(c, lease, sent, req.signal);
    if (ctx.abandoned) return HELD;
    if (c.leading) c.noteRenew(start);
    return written(c, updated, sent, start);
  } catch (e) {
    if (isConflict(e)) return HELD;
    throw e;
  } finally {
    req.done();
  }
}
