/**
 * The state of one elector and the small steps every part of it uses:
 * observing the Lease, reporting a new leader, jitter, per-request deadlines,
 * counters and error logging. The loops (acquire, watch, renew, release) are
 * functions over it in their own modules.
 *
 * @module
 */

import { clampDelay, type Clock, systemClock } from "./clock.ts";
import { type Observation, sameRecord } from "./election_rules.ts";
import { errorKind, TimeoutError } from "./errors.ts";
import { type LeaderElectionRecord, type Lease, readRecord, writeRecord } from "./lease.ts";
import type { LeaseApi } from "./lease_api.ts";
import { type Logger, silentLogger } from "./log.ts";
import { ENDED, linkSignals } from "./signal.ts";
import { JITTER_FACTOR, type LeaderElectorOptions } from "./elector_options.ts";
import type { ElectorStats, FencingToken, Observed } from "./elector_types.ts";

/** The same stored version of the Lease: same uid and resourceVersion (both known). */
function sameVersion(a: Lease, b: Lease): boolean {
  const x = a.metadata, y = b.metadata;
  return !!x?.uid && !!x.resourceVersion && x.uid === y?.uid && x.resourceVersion === y?.resourceVersion;
}

/** One elector's state, shared by its loops; the options are validated before. */
export class ElectorCore {
  /** This replica's identity. */
  readonly identity: string;
  /** LeaseDuration in ms. */
  readonly leaseDuration: number;
  /** RenewDeadline in ms. */
  readonly renewDeadline: number;
  /** RetryPeriod in ms. */
  readonly retryPeriod: number;
  /** Counters for metrics. */
  readonly stats: ElectorStats = {
    slowpathTotal: 0,
    startedTotal: 0,
    leaderChangesTotal: 0,
    errorsByKind: {},
    renewCount: 0,
    renewLatencySumMs: 0,
    requestsByVerb: {},
  };
  /** Where the events go (the elector). */
  readonly events: EventTarget;
  api: LeaseApi;
  opts: LeaderElectorOptions;
  clock: Clock;
  log: Logger;
  random: () => number;
  observed?: Observed;
  reportedLeader?: string;
  leading = false;
  leadingSince?: string;
  token?: FencingToken;
  lastRenew = 0;
  wake?: () => void;
  /** Whether a read of the Lease has answered (found or not): later changes are news, not start-up state. */
  readOnce = false;
  /** Cuts the leader's wait between renewals short (coordinated election: another preferred holder). */
  leaderWake?: AbortController;
  watchHealthy = false;
  lastError = "";
  requestTimeout: number;
  /** Counts observed changes of the record (and deletions), to notice news. */
  changes = 0;
  /** Acquiring writes sent since the last term (the latest few); one that landed but whose answer was lost is adopted. */
  pendingAcquires: LeaderElectionRecord[] = [];
  workSettling = false;
  watchGen = 0;

  constructor(events: EventTarget, options: LeaderElectorOptions) {
    this.events = events;
    this.api = options.lease;
    this.opts = options;
    this.identity = options.identity;
    this.leaseDuration = options.leaseDuration ?? 15000;
    this.renewDeadline = options.renewDeadline ?? 10000;
    this.retryPeriod = options.retryPeriod ?? 2000;
    this.clock = options.clock ?? systemClock;
    this.log = options.logger ?? silentLogger;
    this.random = options.random ?? Math.random;
    this.requestTimeout = Math.max(1000, this.renewDeadline / 2);
  }

  observe(lease: Lease, at: number, own = false): Observed {
    const r = readRecord(lease);
    const ph = lease.spec?.preferredHolder;
    const preferredHolder = typeof ph === "string" && ph !== "" ? ph : undefined;
    const key = JSON.stringify(r.ok ? { ...r.record, preferredHolder } : { broken: lease.spec ?? null });
    if (this.observed?.key === key) {
      this.observed.lease = lease;
      this.observed.deleted = false;
      // The same record seen earlier (a shared watch on this clock saw it first): its claim
      // counts from the earliest sighting.
      if (at < this.observed.at) this.observed.at = at;
      return this.observed;
    }
    // The version seen before an absence, unchanged (same uid and resourceVersion): the
    // absence was a stale answer (a 404 read before the Lease was created, answered after
    // the watch showed it), not a deletion. Nothing changed since that version was seen.
    const before = this.observed?.beforeAbsence;
    if (before && sameVersion(lease, before.lease) && before.key === key) {
      this.observed = { ...before, lease };
      return this.observed;
    }
    if (!r.ok) {
      this.log.warn(
        "lease record is malformed; not trusted, treated as held until it stays unchanged for leaseDuration",
        {
          lease: `${this.api.namespace}/${this.api.name}`,
          problems: r.problems,
        },
      );
    }
    this.changes++;
    const named = !!this.opts.coordinated && !own && r.ok && r.record.holderIdentity === this.identity &&
      this.readOnce;
    this.observed = {
      lease,
      key,
      record: r.ok ? r.record : undefined,
      holder: r.ok ? r.record.holderIdentity : (r.holderIdentity ?? "<malformed>"),
      durationMs: r.ok ? r.record.leaseDurationSeconds * 1000 : this.leaseDuration,
      at,
      preferredHolder,
      named,
      ownWrite: !own && r.ok && this.pendingAcquires.some((w) => sameRecord(r.record, w)),
    };
    this.reportLeader();
    if (this.leading && this.preferredOther(this.observed)) this.leaderWake?.abort();
    return this.observed;
  }

  /** Under coordinated election: the controller prefers another holder. */
  preferredOther(o: Observation | undefined): boolean {
    return !!this.opts.coordinated && !!o?.preferredHolder && o.preferredHolder !== this.identity;
  }

  /**
   * The Lease is gone (a 404, or a DELETED event). Its absence is a change
   * observed now: whoever held it (the holder in the DELETED object, else the
   * last one seen, which may be stale) may not have noticed yet, so the Lease
   * counts as held for max(that record's duration, our leaseDuration) from the
   * first sign of absence. A leader that lost it notices within renewDeadline.
   * Before anything was ever seen, a missing Lease is simply missing.
   */
  observeAbsent(now: number, gone?: Lease): void {
    if (this.observed?.deleted) return;
    if (gone?.spec) this.observe(gone, now);
    const prev = this.observed;
    if (!prev) return;
    this.observed = {
      ...prev,
      key: `${prev.key}#deleted`,
      beforeAbsence: prev,
      durationMs: Math.max(prev.durationMs, this.leaseDuration),
      at: now,
      deleted: true,
      ownWrite: false,
      named: false,
    };
    this.changes++;
  }

  reportLeader(): void {
    const holder = this.observed?.holder;
    if (holder === "") this.reportedLeader = "";
    if (holder === undefined || holder === "" || holder === this.reportedLeader) return;
    if (holder === this.identity && !this.leading) return; // reported when this replica takes it
    this.reportedLeader = holder;
    this.stats.leaderChangesTotal++;
    this.log.info("new leader", { leader: holder });
    this.call("onNewLeader", () => this.opts.onNewLeader?.(holder));
    this.events.dispatchEvent(new CustomEvent("newleader", { detail: holder }));
  }

  /** `ms` × (1 + U[0,1) × JITTER_FACTOR), client-go's jitter; a broken `random` counts as 0. */
  jittered(ms: number): number {
    return ms * (1 + this.unitRandom() * JITTER_FACTOR);
  }

  /** A random number in [0, 1); a broken `random` option counts as 0. */
  unitRandom(): number {
    const r = this.random();
    return Number.isFinite(r) && r > 0 && r < 1 ? r : 0;
  }

  count(verb: string) {
    this.stats.requestsByVerb[verb] = (this.stats.requestsByVerb[verb] ?? 0) + 1;
  }

  requestSignal(stop: AbortSignal, budget: number): { signal: AbortSignal; done: () => void } {
    const ms = clampDelay(Math.min(this.requestTimeout, budget), 1, this.requestTimeout);
    // Two controllers per request, not three: the timer aborts the linked signal itself.
    const linked = linkSignals([stop]);
    const cancel = new AbortController();
    this.clock.sleep(ms, cancel.signal).then(
      () => linked.abort(new TimeoutError(`lease request got no answer within ${ms} ms`)),
      () => {},
    );
    return {
      signal: linked.signal,
      done: () => {
        cancel.abort(ENDED);
        linked.dispose();
      },
    };
  }

  withRecord(lease: Lease, r: LeaderElectionRecord): Lease {
    return { ...lease, metadata: { ...lease.metadata }, spec: writeRecord(lease.spec, r) };
  }

  /**
   * Waits for `p` at most `ms` on the injected clock, or until `stop` aborts;
   * `undefined` when it did not settle by then. Guards against a Lease API (or
   * token source) that never answers and ignores its abort signal.
   */
  async within<T>(p: Promise<T>, ms: number, stop?: AbortSignal): Promise<{ value: T } | undefined> {
    const linked = linkSignals([stop]);
    try {
      return await Promise.race([
        p.then((value) => ({ value })),
        this.clock.sleep(clampDelay(ms), linked.signal).then(() => undefined, () => undefined),
      ]);
    } finally {
      linked.abort(ENDED);
    }
  }

  noteRenew(start: number) {
    this.stats.renewCount++;
    this.stats.renewLatencySumMs += this.clock.now() - start;
  }

  noteError(e: unknown, what: string, debugOnly = false) {
    const kind = errorKind(e);
    this.stats.errorsByKind[kind] = (this.stats.errorsByKind[kind] ?? 0) + 1;
    const msg = e instanceof Error ? e.message : String(e);
    if (debugOnly) {
      this.log.debug(what, { kind, error: msg });
      return;
    }
    if (msg === this.lastError) {
      this.log.debug(what, { kind, error: msg, repeated: true });
      return;
    }
    this.lastError = msg;
    (kind === "forbidden" || kind === "unauthorized" || kind === "config" ? this.log.error : this.log.warn)(what, {
      kind,
      error: msg,
    });
  }

  call(name: string, fn: () => void) {
    try {
      fn();
    } catch (e) {
      this.log.error(`${name} callback threw`, { error: e instanceof Error ? e.message : String(e) });
    }
  }
}
