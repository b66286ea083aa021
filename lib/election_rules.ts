/**
 * The election rules, pure: from what a replica observed of the Lease, its local
 * monotonic times, its identity and its options to a decision. No I/O, no timers;
 * {@linkcode LeaderElector} is the loop around these functions.
 *
 * @module
 */

import { clampDelay } from "./clock.ts";
import type { LeaderElectionRecord } from "./lease.ts";

export type { LeaderElectionRecord };

/** What a replica knows of one version of the Lease record. */
export interface Observation {
  /** Holder as far as it can be read (`""` when free). */
  holder: string;
  /** The parsed record; `undefined` when the record is malformed. */
  record?: LeaderElectionRecord;
  /** How long the claim lasts (ms): the record's leaseDurationSeconds, or the local leaseDuration when malformed. */
  durationMs: number;
  /** Monotonic time this version was first seen (for this replica's own write: when the write was sent). */
  at: number;
  /** A watch reported the Lease deleted since this version was seen. */
  deleted?: boolean;
  /** `spec.preferredHolder`, set by the coordinated election controller to move leadership. */
  preferredHolder?: string;
  /**
   * This version names this replica as holder, was first seen as a change from an
   * earlier version (not at start-up) and was not written by this replica: under
   * coordinated election, the controller wrote it in.
   */
  named?: boolean;
  /**
   * This version is exactly one of this replica's own acquiring writes whose
   * answer it has not seen (applied, answer lost): it is adopted at the next
   * attempt, which therefore comes after one retry period, not at the expiry.
   */
  ownWrite?: boolean;
}

/**
 * When the claim of an observed record ends, on the local monotonic clock.
 *
 * @example Usage
 * ```ts
 * import { expiresAt } from "./election_rules.ts";
 * console.log(expiresAt({ holder: "a", durationMs: 15000, at: 1000 })); // 16000
 * ```
 */
export function expiresAt(o: Observation): number {
  return o.at + o.durationMs;
}

/**
 * Whether a holder's claim still runs at `now`. An empty holder never holds,
 * except that a Lease seen deleted counts as held from the first sign of its
 * absence (someone may have taken it unseen before the deletion); a malformed
 * record holds (for the local leaseDuration) like any other.
 *
 * @example Usage
 * ```ts
 * import { heldByOther } from "./election_rules.ts";
 * console.log(heldByOther({ holder: "a", durationMs: 15000, at: 0 }, 14999)); // true
 * console.log(heldByOther({ holder: "", durationMs: 15000, at: 0 }, 1)); // false
 * ```
 */
export function heldByOther(o: Observation, now: number): boolean {
  return (o.holder !== "" || !!o.deleted) && now < expiresAt(o);
}

/**
 * Whether two records are the same claim: holder, both times, transitions and duration.
 *
 * @example Usage
 * ```ts
 * import { sameRecord } from "./election_rules.ts";
 * const r = { holderIdentity: "a", leaseDurationSeconds: 15, acquireTime: "t", renewTime: "t", leaseTransitions: 1 };
 * console.log(sameRecord(r, { ...r })); // true
 * console.log(sameRecord(r, { ...r, renewTime: "u" })); // false
 * ```
 */
export function sameRecord(a: LeaderElectionRecord, b: LeaderElectionRecord): boolean {
  return a.holderIdentity === b.holderIdentity && a.acquireTime === b.acquireTime && a.renewTime === b.renewTime &&
    a.leaseTransitions === b.leaseTransitions && a.leaseDurationSeconds === b.leaseDurationSeconds;
}

/**
 * The record a replica writes to renew (`keepTerm`: acquireTime and
 * leaseTransitions kept) or to take over (a new term: transitions + 1, or 0 on
 * a new Lease). `leaseDurationMs` must be whole seconds.
 *
 * @example Usage
 * ```ts
 * import { desiredRecord } from "./election_rules.ts";
 * const prev = { holderIdentity: "b", leaseDurationSeconds: 15, acquireTime: "t0", renewTime: "t1", leaseTransitions: 4 };
 * console.log(desiredRecord("a", 15000, prev, false, "t2").leaseTransitions); // 5
 * console.log(desiredRecord("a", 15000, prev, true, "t2").acquireTime); // "t0"
 * ```
 */
export function desiredRecord(
  identity: string,
  leaseDurationMs: number,
  prev: LeaderElectionRecord | undefined,
  keepTerm: boolean,
  wall: string,
): LeaderElectionRecord {
  return {
    holderIdentity: identity,
    leaseDurationSeconds: Math.floor(leaseDurationMs / 1000),
    acquireTime: keepTerm && prev?.acquireTime ? prev.acquireTime : wall,
    renewTime: wall,
    leaseTransitions: keepTerm ? (prev?.leaseTransitions ?? 0) : (prev ? prev.leaseTransitions + 1 : 0),
  };
}

/**
 * The record of a release: holder `""`, 1 s, both times now, transitions kept.
 *
 * @example Usage
 * ```ts
 * import { releaseRecord } from "./election_rules.ts";
 * const r = { holderIdentity: "a", leaseDurationSeconds: 15, acquireTime: "t0", renewTime: "t1", leaseTransitions: 4 };
 * console.log(releaseRecord(r, "t2")); // holderIdentity "", leaseDurationSeconds 1, leaseTransitions 4
 * ```
 */
export function releaseRecord(r: LeaderElectionRecord, wall: string): LeaderElectionRecord {
  return { ...r, holderIdentity: "", leaseDurationSeconds: 1, acquireTime: wall, renewTime: wall };
}

/** The write a replica may make without reading first, judged from its last observation. */
export type FastPath = "renew" | "take-free" | undefined;

/**
 * The leader renews by a PUT of its cached object; a follower that last saw the
 * Lease free (and not deleted) takes it by a PUT of that object. The
 * resourceVersion guards both. Otherwise: read first.
 *
 * @example Usage
 * ```ts
 * import { fastPath } from "./election_rules.ts";
 * const rec = { holderIdentity: "", leaseDurationSeconds: 1, acquireTime: "", renewTime: "", leaseTransitions: 0 };
 * console.log(fastPath("a", false, { holder: "", record: rec, durationMs: 1000, at: 0 })); // "take-free"
 * ```
 */
export function fastPath(
  identity: string,
  leading: boolean,
  last: Observation | undefined,
  coordinated = false,
): FastPath {
  if (!last?.record) return undefined;
  if (leading) return last.holder === identity ? "renew" : undefined;
  if (coordinated) return undefined; // the election controller names the holder
  return last.holder === "" && !last.deleted ? "take-free" : undefined;
}

/** What to do after reading the Lease. */
export type ReadDecision =
  | { action: "renew" }
  | { action: "take-over" }
  | { action: "adopt" }
  | { action: "create" }
  | { action: "wait" }
  | { action: "stop"; reason: "lease-taken" | "lease-deleted" | "lease-malformed" | "preferred-holder" };

/** The inputs of {@linkcode decideOnRead}. */
export interface ReadInput {
  /** This replica's identity. */
  identity: string;
  /** Whether this replica leads now. */
  leading: boolean;
  /** The record just read; `undefined` when the Lease does not exist. */
  read: Observation | undefined;
  /** The last record seen before this read (what counts when the Lease is missing). */
  last: Observation | undefined;
  /** Monotonic time of the read's answer. */
  now: number;
  /** Acquiring writes sent since the last term, whose answers may have been lost. */
  ownWrites: readonly LeaderElectionRecord[];
  /**
   * Coordinated leader election: the API server's election controller picks the
   * holder. This replica never creates the Lease or takes a free or expired one;
   * it starts a term when the controller names it, and its term ends when
   * `preferredHolder` names another replica.
   */
  coordinated?: boolean;
}

/**
 * The decision after a read. The leader renews while it reads its own sound
 * record and stops otherwise (taken, deleted, malformed). A follower adopts its
 * own acquiring write whose answer was lost (the record is exactly what it
 * wrote), waits while another holder's claim runs, and otherwise takes over; a
 * missing Lease is created only once the last record seen has expired, as if it
 * still stood. A live record that names this identity but is none of its own
 * writes is waited out like any other (another process may share the identity).
 *
 * Under coordinated election a follower only waits, adopts its own lost write,
 * or takes over a record the controller wrote naming it (`named`); the leader
 * stops when `preferredHolder` names someone else.
 *
 * @example Usage
 * ```ts
 * import { decideOnRead } from "./election_rules.ts";
 * const read = { holder: "b", durationMs: 15000, at: 0 };
 * console.log(decideOnRead({ identity: "a", leading: false, read, last: read, now: 1000, ownWrites: [] }));
 * // { action: "wait" }
 * ```
 */
export function decideOnRead(i: ReadInput): ReadDecision {
  const o = i.read;
  if (!o) {
    if (i.leading) return { action: "stop", reason: "lease-deleted" };
    if (i.coordinated) return { action: "wait" }; // the controller creates it
    if (i.last && heldByOther(i.last, i.now)) return { action: "wait" };
    return { action: "create" };
  }
  if (i.leading) {
    if (!o.record) return { action: "stop", reason: "lease-malformed" };
    if (o.holder !== i.identity) return { action: "stop", reason: "lease-taken" };
    if (i.coordinated && o.preferredHolder && o.preferredHolder !== i.identity) {
      return { action: "stop", reason: "preferred-holder" };
    }
    return { action: "renew" };
  }
  const r = o.record;
  if (r && r.holderIdentity === i.identity && i.ownWrites.some((w) => sameRecord(r, w))) return { action: "adopt" };
  if (i.coordinated) {
    return r && r.holderIdentity === i.identity && o.named ? { action: "take-over" } : { action: "wait" };
  }
  if (heldByOther(o, i.now)) return { action: "wait" };
  return { action: "take-over" };
}

/** The inputs of {@linkcode nextAttemptAt}. */
export interface WaitInput {
  /** Monotonic time the wait began (after the last attempt). */
  start: number;
  /** The server's retry hint in ms (0 for none). */
  retryAfterMs: number;
  /** When to poll at the latest: start + max(jittered retryPeriod, retryAfterMs). */
  pollAt: number;
  /** The last record seen. */
  observed: Observation | undefined;
  /** Whether a new version (or a deletion) was seen since `start`. */
  changed: boolean;
  /** Whether a watch is connected (then nothing is polled while a claim runs). */
  watching: boolean;
}

/**
 * When a follower should attempt next: at once (after any Retry-After) when the
 * Lease turned free or was deleted since the last attempt (or, under coordinated
 * election, the controller named this replica); at the observed expiry
 * while a claim runs (polling meanwhile only without a watch); else at `pollAt`.
 *
 * @example Usage
 * ```ts
 * import { nextAttemptAt } from "./election_rules.ts";
 * const observed = { holder: "b", durationMs: 15000, at: 0 };
 * console.log(nextAttemptAt({ start: 1000, retryAfterMs: 0, pollAt: 4200, observed, changed: false, watching: true }));
 * // 15000
 * ```
 */
export function nextAttemptAt(i: WaitInput): number {
  const earliest = i.start + i.retryAfterMs;
  const o = i.observed;
  // Free, deleted, or (coordinated) this replica named by the controller: go now.
  if (o && (o.holder === "" || o.deleted || o.named) && i.changed) return earliest;
  if (o && (o.holder !== "" || o.deleted) && !o.ownWrite) {
    const exp = expiresAt(o);
    if (exp > i.start) return Math.max(earliest, i.watching ? exp : Math.min(exp, i.pollAt));
  }
  return i.pollAt;
}

/**
 * The time, from now, left before another replica could take the Lease:
 * leaseDuration after the start of this replica's last successful write
 * (0 when already past). The work must have stopped by then.
 *
 * @example Usage
 * ```ts
 * import { graceMs } from "./election_rules.ts";
 * console.log(graceMs(1000, 15000, 11000)); // 5000
 * console.log(graceMs(1000, 15000, 20000)); // 0
 * ```
 */
export function graceMs(lastRenew: number, leaseDuration: number, now: number): number {
  return clampDelay(lastRenew + leaseDuration - now);
}

/**
 * Whether the Lease is released at the end of a term: only with
 * releaseOnCancel, only after the work settled, and never when it was taken or
 * deleted (it is not this replica's to blank).
 *
 * @example Usage
 * ```ts
 * import { mayRelease } from "./election_rules.ts";
 * console.log(mayRelease("shutdown", true, true)); // true
 * console.log(mayRelease("lease-taken", true, true)); // false
 * ```
 */
export function mayRelease(
  reason: "shutdown" | "renew-deadline" | "lease-taken" | "lease-deleted" | "lease-malformed" | "preferred-holder",
  settled: boolean,
  releaseOnCancel: boolean,
): boolean {
  return releaseOnCancel && settled && reason !== "lease-taken" && reason !== "lease-deleted";
}

/**
 * The record to continue from when a malformed one is taken over: nobody
 * holds it, and its `leaseTransitions` is kept when it is a whole number ≥ 0.
 *
 * @example Usage
 * ```ts
 * import { salvageRecord } from "./election_rules.ts";
 * console.log(salvageRecord({ leaseTransitions: 4 }).leaseTransitions); // 4
 * console.log(salvageRecord({ leaseTransitions: -1 }).leaseTransitions); // 0
 * ```
 */
export function salvageRecord(spec: { leaseTransitions?: unknown } | null | undefined): LeaderElectionRecord {
  const t = spec?.leaseTransitions;
  return {
    holderIdentity: "",
    leaseDurationSeconds: 1,
    acquireTime: "",
    renewTime: "",
    leaseTransitions: typeof t === "number" && Number.isInteger(t) && t >= 0 ? t : 0,
  };
}

/** Shortest wait before a watch is opened again after one that ended early, in ms. */
export const WATCH_BACKOFF_MIN_MS = 1000;
/** Longest such wait, in ms. */
export const WATCH_BACKOFF_MAX_MS = 30000;
/** A watch that lived this long (ms) was healthy: the next one opens at once. */
export const WATCH_HEALTHY_MS = 10000;
/** Wait after a forbidden watch before trying to watch again, in ms. */
export const WATCH_FORBIDDEN_MS = 60000;

/** The inputs of {@linkcode watchReopen}. */
export interface WatchEnd {
  /** How the watch ended: the stream closed, it failed, or it was forbidden (403). */
  how: "closed" | "failed" | "forbidden";
  /** How long it lived, in ms. */
  lived: number;
  /** Events (not bookmarks) it delivered. */
  events: number;
  /** The backoff before this end, in ms. */
  backoff: number;
  /** A random number in [0, 1) for jitter. */
  random: number;
}

/**
 * How long to wait before the next watch, and the backoff after it. A closed
 * watch that lived {@linkcode WATCH_HEALTHY_MS} reopens at once; otherwise the
 * wait is [b, 2b) for backoff b, which doubles up to 30 s and is reset by a
 * watch that lived long enough or delivered an event; a forbidden watch waits at
 * least 60 s. Hence at most one watch per second.
 *
 * @example Usage
 * ```ts
 * import { watchReopen } from "./election_rules.ts";
 * console.log(watchReopen({ how: "closed", lived: 0, events: 0, backoff: 4000, random: 0.5 }));
 * // { delay: 6000, backoff: 8000 }
 * ```
 */
export function watchReopen(e: WatchEnd): { delay: number; backoff: number } {
  let backoff = e.lived >= WATCH_HEALTHY_MS || e.events > 0 ? WATCH_BACKOFF_MIN_MS : e.backoff;
  if (e.how === "closed" && e.lived >= WATCH_HEALTHY_MS) return { delay: 0, backoff };
  let delay = backoff * (1 + e.random);
  if (e.how === "forbidden") delay = Math.max(delay, WATCH_FORBIDDEN_MS);
  backoff = Math.min(backoff * 2, WATCH_BACKOFF_MAX_MS);
  return { delay: clampDelay(delay, WATCH_BACKOFF_MIN_MS), backoff };
}
