/**
 * The leader elector: client-go's Lease algorithm, with the leader's work
 * bounded by an AbortSignal, re-contention after loss, and watch-driven followers.
 *
 * @module
 */

import { clampDelay, type Clock, MAX_TIMER_MS, systemClock } from "./clock.ts";
import {
  decideOnRead,
  desiredRecord,
  fastPath,
  graceMs as graceLeft,
  mayRelease,
  nextAttemptAt,
  type Observation,
  releaseRecord,
  sameRecord,
  WATCH_BACKOFF_MIN_MS,
  watchReopen,
} from "./election_rules.ts";
import {
  ConfigError,
  errorKind,
  isAlreadyExists,
  isConflict,
  isNotFound,
  KubeApiError,
  LeaseholdError,
  TimeoutError,
} from "./errors.ts";
import {
  formatMicroTime,
  invalidLeaseName,
  invalidNamespace,
  type LeaderElectionRecord,
  type Lease,
  readRecord,
  writeRecord,
} from "./lease.ts";
import type { LeaseApi } from "./lease_api.ts";
import { type Logger, silentLogger } from "./log.ts";
import { linkSignals } from "./signal.ts";

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

/**
 * Proof of leadership handed to the leader's work. `leaseTransitions` grows by one
 * at every change of holder, so a store that remembers the highest value it has
 * seen can refuse writes from an older leader.
 */
export interface FencingToken {
  /** This replica's identity. */
  holderIdentity: string;
  /** `spec.leaseTransitions` when leadership was acquired. */
  leaseTransitions: number;
  /** `metadata.resourceVersion` of the write that acquired the Lease. */
  resourceVersion: string;
  /** `spec.acquireTime` written at acquisition (MicroTime). */
  acquireTime: string;
  /** `"<leaseTransitions>/<holderIdentity>"`, handy as a single string. */
  value: string;
}

/** What the leader's work receives. */
export interface LeaderContext {
  /** Aborts the moment this replica stops leading; stop the work then. */
  signal: AbortSignal;
  /** The fencing token of this term. */
  fencingToken: FencingToken;
}

/** Why leadership ended, given to `onStoppedLeading` and in the `stopped` event. */
export type StopReason =
  | "shutdown"
  | "renew-deadline"
  | "lease-taken"
  | "lease-deleted"
  | "lease-malformed"
  | "preferred-holder";

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

/** A snapshot of the elector's state, e.g. for a `/leader` endpoint. */
export interface ElectorState {
  /** Lease namespace/name. */
  lease: string;
  /** This replica's identity. */
  identity: string;
  /** Whether this replica leads now. */
  isLeader: boolean;
  /** The holder last observed (`""` when free, `undefined` before the first read). */
  leader: string | undefined;
  /** `leaseTransitions` last observed. */
  leaseTransitions: number | undefined;
  /** Wall time this replica started leading (ISO), if it leads. */
  leadingSince: string | undefined;
  /** The current fencing token, if leading. */
  fencingToken: FencingToken | undefined;
  /**
   * True from the end of a term until that term's work settled: the work was
   * told to stop but still runs. No new term starts meanwhile.
   */
  workSettling: boolean;
}

/** Counters kept by the elector, read by the metrics endpoint. */
export interface ElectorStats {
  /** Renewals that needed a GET before the PUT (client-go's slow path). */
  slowpathTotal: number;
  /** Terms started by this replica. */
  startedTotal: number;
  /** Changes of holder observed. */
  leaderChangesTotal: number;
  /** Failed requests by {@linkcode errorKind}. */
  errorsByKind: Record<string, number>;
  /** Successful renewals and the sum of their latencies (ms). */
  renewCount: number;
  /** Sum of renewal latencies in ms. */
  renewLatencySumMs: number;
  /** Requests sent, by verb. */
  requestsByVerb: Record<string, number>;
}

/**
 * Leadership ended; the reason of the signal handed to the leader's work.
 *
 * @example Usage
 * ```ts
 * import { LeadershipLostError } from "@leasehold/leasehold";
 * const e = new LeadershipLostError("shutdown", "stopping");
 * console.log(e.reason); // "shutdown"
 * ```
 */
export class LeadershipLostError extends LeaseholdError {
  /** Why leadership ended. */
  readonly reason: StopReason;
  /**
   * Milliseconds, counted from the moment the work's signal aborted, left before
   * another replica could take the Lease: leaseDuration after the start of this
   * replica's last successful write, minus the time since, on the monotonic
   * clock (0 when already past). A supervisor must have the work stopped within
   * it (for a shutdown whose release is still pending the same bound holds: the
   * release is written only after the work settled). The elector waits this long
   * for the work before it gives up on releasing, and never starts another term
   * while the work still runs.
   */
  readonly graceMs: number;
  /** Creates the error; `graceMs` defaults to 0 (no time left). */
  constructor(reason: StopReason, message: string, graceMs = 0) {
    super(message);
    this.name = "LeadershipLostError";
    this.reason = reason;
    this.graceMs = graceMs;
  }
}

/** The outcome of one acquire-or-renew attempt. */
type Attempt =
  | Acquired
  | { kind: "held" | "lost-taken" | "lost-deleted" | "lost-malformed" | "lost-preferred" };

/** A successful write that makes (or keeps) this replica the holder. */
interface Acquired {
  kind: "acquired";
  /** The write's response. */
  lease: Lease;
  /** The record written, as the response has it. */
  record: LeaderElectionRecord;
}

/** Set `abandoned` when the caller stopped waiting: a late answer then changes nothing. */
interface AttemptCtx {
  abandoned: boolean;
}

const HELD: Attempt = { kind: "held" };

interface Observed extends Observation {
  lease: Lease;
  /** Key of the record for change detection. */
  key: string;
  /** For an absence: the version seen before it (see #observeAbsent). */
  beforeAbsence?: Observed;
}

/** The same stored version of the Lease: same uid and resourceVersion (both known). */
function sameVersion(a: Lease, b: Lease): boolean {
  const x = a.metadata, y = b.metadata;
  return !!x?.uid && !!x.resourceVersion && x.uid === y?.uid && x.resourceVersion === y?.resourceVersion;
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

/**
 * Elects one leader among replicas through a Lease.
 *
 * Safety rules, in order: a replica leads only after its own write to the Lease
 * succeeded; expiry is judged from this process's monotonic clock since the
 * record last changed, never from the Lease's timestamps; a leader that cannot
 * renew within `renewDeadline` of the start of its last successful renewal stops
 * leading and aborts its work, at that deadline on the injected clock even when a
 * request (or the token source behind it) never answers; the fencing token is
 * taken from the acquiring write's answer; the Lease is released only after the
 * work settled, and only while this replica still holds it (a PUT guarded by the
 * resourceVersion of its own last write, else a fresh read first); no new term
 * starts while the last term's work still runs, nor sooner than one retryPeriod
 * after the term ended.
 *
 * Two cases decided on purpose. An acquiring write that landed although its
 * answer was lost (a record that is exactly what this replica wrote, unchanged
 * since) is adopted at the next attempt: nobody else can have written in between.
 * A live Lease that already names this identity at startup is not adopted: it is
 * waited out like any other holder (leaseDurationSeconds after it was first seen
 * unchanged), since another process with the same identity may still be running
 * (client-go would renew it at once).
 *
 * Events (an `EventTarget`): `newleader` (detail: identity), `started`
 * (detail: {@linkcode FencingToken}), `stopped` (detail: {@linkcode StopReason}),
 * `released` (detail: {@linkcode StopReason}). Order: `newleader(me)` before
 * `started`; `stopped` once per term, when the work is told to stop (leading is
 * already off then); `released` after `stopped`, once the work settled and the
 * release was written.
 *
 * @example Usage
 * ```ts
 * import { LeaderElector, MemoryLeaseApi } from "@leasehold/leasehold";
 * const stop = new AbortController();
 * const elector = new LeaderElector({
 *   lease: new MemoryLeaseApi("default", "my-lease"),
 *   identity: "pod-a",
 *   onStartedLeading: async ({ signal, fencingToken }) => {
 *     console.log("leading with token", fencingToken.value);
 *     stop.abort(); // do the work until signal aborts; here: stop at once
 *     await new Promise((r) => signal.addEventListener("abort", r));
 *   },
 * });
 * await elector.run(stop.signal);
 * ```
 */
export class LeaderElector extends EventTarget {
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
  #api: LeaseApi;
  #opts: LeaderElectorOptions;
  #clock: Clock;
  #log: Logger;
  #random: () => number;
  #observed?: Observed;
  #reportedLeader?: string;
  #leading = false;
  #leadingSince?: string;
  #token?: FencingToken;
  #lastRenew = 0;
  #running = false;
  #wake?: () => void;
  /** Whether a read of the Lease has answered (found or not): later changes are news, not start-up state. */
  #readOnce = false;
  /** Cuts the leader's wait between renewals short (coordinated election: another preferred holder). */
  #leaderWake?: AbortController;
  #watchHealthy = false;
  #lastError = "";
  #requestTimeout: number;
  /** Counts observed changes of the record (and deletions), to notice news. */
  #changes = 0;
  /** Acquiring writes sent since the last term (the latest few); one that landed but whose answer was lost is adopted. */
  #pendingAcquires: LeaderElectionRecord[] = [];
  #workSettling = false;
  #watchGen = 0;

  /**
   * Creates an elector; nothing happens until {@linkcode LeaderElector.run}.
   *
   * @throws {ConfigError} when the options break client-go's rules
   */
  constructor(options: LeaderElectorOptions) {
    super();
    const problems = validateElectorOptions({
      ...options,
      name: options.lease?.name,
      namespace: options.lease?.namespace,
    });
    if (!options.lease) problems.push("lease must be given");
    if (problems.length) throw new ConfigError(`invalid leader election settings: ${problems.join("; ")}`);
    this.#api = options.lease;
    this.#opts = options;
    this.identity = options.identity;
    this.leaseDuration = options.leaseDuration ?? 15000;
    this.renewDeadline = options.renewDeadline ?? 10000;
    this.retryPeriod = options.retryPeriod ?? 2000;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? silentLogger;
    this.#random = options.random ?? Math.random;
    this.#requestTimeout = Math.max(1000, this.renewDeadline / 2);
  }

  /** Whether this replica leads now. */
  get isLeader(): boolean {
    return this.#leading;
  }

  /** The holder last observed (`""` when free, `undefined` before the first read). */
  get leader(): string | undefined {
    return this.#observed?.holder;
  }

  /** True while an ended term's work still runs (see {@linkcode ElectorState.workSettling}). */
  get workSettling(): boolean {
    return this.#workSettling;
  }

  /** `metadata.uid` of the Lease last observed (the involvedObject of leadership Events). */
  get leaseUid(): string | undefined {
    return this.#observed?.lease.metadata.uid;
  }

  /** Whether the follower's watch is connected. */
  get watching(): boolean {
    return this.#watchHealthy;
  }

  /** A snapshot of the state. */
  state(): ElectorState {
    const rec = this.#observed?.record;
    return {
      lease: `${this.#api.namespace}/${this.#api.name}`,
      identity: this.identity,
      isLeader: this.#leading,
      leader: this.#observed?.holder,
      leaseTransitions: rec?.leaseTransitions,
      leadingSince: this.#leading ? this.#leadingSince : undefined,
      fencingToken: this.#leading ? this.#token : undefined,
      workSettling: this.#workSettling,
    };
  }

  /**
   * Health as client-go's HealthzAdaptor judges it: unhealthy only when this
   * replica leads but has not renewed for longer than leaseDuration + `graceMs`.
   * Returns an error message, or `undefined` when healthy.
   */
  check(graceMs = 20000): string | undefined {
    if (!this.#leading) return undefined;
    const since = this.#clock.now() - this.#lastRenew;
    if (since > this.leaseDuration + graceMs) {
      return `failed to renew leadership on lease ${this.#api.namespace}/${this.#api.name} for ${Math.round(since)} ms`;
    }
    return undefined;
  }

  /**
   * Runs the election until `signal` aborts (or, with `recontend: false`, until
   * the first term ends). When a term ends: leading turns off, the work's signal
   * aborts (with a {@linkcode LeadershipLostError} giving `graceMs`),
   * `onStoppedLeading` and the `stopped` event follow at once; then the work is
   * awaited for at most `graceMs`, and if it settled (and the Lease is still this
   * replica's) the Lease is released (`released` event). On abort the promise
   * resolves after that. Otherwise the elector contends again, but only once the
   * work has settled, however long that takes, and at least one retryPeriod
   * (jittered) later, so watching followers see the release first.
   *
   * @throws {LeaseholdError} when called while a previous call still runs
   */
  async run(signal?: AbortSignal): Promise<void> {
    if (this.#running) throw new LeaseholdError("LeaderElector.run is already running");
    this.#running = true;
    const stop = signal ?? new AbortController().signal;
    const onStop = () => this.#wake?.();
    stop.addEventListener("abort", onStop);
    try {
      for (;;) {
        const won = await this.#acquireLoop(stop);
        if (!won) break;
        const term = await this.#lead(stop, won);
        if (!(this.#opts.recontend ?? true) || stop.aborted) break;
        if (!term.settled) {
          this.#log.error("the last term's work still runs; not contending again until it has stopped", {});
          await this.#settledOrStopped(term.work, stop);
          if (stop.aborted) break;
          this.#log.info("the last term's work has stopped; contending again", {});
        }
        try {
          await this.#clock.sleep(clampDelay(this.#jittered(this.retryPeriod), 1), stop);
        } catch {
          break;
        }
      }
    } finally {
      stop.removeEventListener("abort", onStop);
      this.#running = false;
    }
  }

  async #settledOrStopped(work: Promise<unknown>, stop: AbortSignal): Promise<void> {
    let onAbort = () => {};
    try {
      await Promise.race([work, new Promise<void>((r) => stop.addEventListener("abort", onAbort = () => r()))]);
    } finally {
      stop.removeEventListener("abort", onAbort);
    }
  }

  // ---- observation ---------------------------------------------------------

  #observe(lease: Lease, at: number, own = false): Observed {
    const r = readRecord(lease);
    const ph = lease.spec?.preferredHolder;
    const preferredHolder = typeof ph === "string" && ph !== "" ? ph : undefined;
    const key = JSON.stringify(r.ok ? { ...r.record, preferredHolder } : { broken: lease.spec ?? null });
    if (this.#observed?.key === key) {
      this.#observed.lease = lease;
      this.#observed.deleted = false;
      return this.#observed;
    }
    // The version seen before an absence, unchanged (same uid and resourceVersion): the
    // absence was a stale answer (a 404 read before the Lease was created, answered after
    // the watch showed it), not a deletion. Nothing changed since that version was seen.
    const before = this.#observed?.beforeAbsence;
    if (before && sameVersion(lease, before.lease) && before.key === key) {
      this.#observed = { ...before, lease };
      return this.#observed;
    }
    if (!r.ok) {
      this.#log.warn(
        "lease record is malformed; not trusted, treated as held until it stays unchanged for leaseDuration",
        {
          lease: `${this.#api.namespace}/${this.#api.name}`,
          problems: r.problems,
        },
      );
    }
    this.#changes++;
    const named = !!this.#opts.coordinated && !own && r.ok && r.record.holderIdentity === this.identity &&
      this.#readOnce;
    this.#observed = {
      lease,
      key,
      record: r.ok ? r.record : undefined,
      holder: r.ok ? r.record.holderIdentity : (r.holderIdentity ?? "<malformed>"),
      durationMs: r.ok ? r.record.leaseDurationSeconds * 1000 : this.leaseDuration,
      at,
      preferredHolder,
      named,
      ownWrite: !own && r.ok && this.#pendingAcquires.some((w) => sameRecord(r.record, w)),
    };
    this.#reportLeader();
    if (this.#leading && this.#preferredOther(this.#observed)) this.#leaderWake?.abort();
    return this.#observed;
  }

  /** Under coordinated election: the controller prefers another holder. */
  #preferredOther(o: Observation | undefined): boolean {
    return !!this.#opts.coordinated && !!o?.preferredHolder && o.preferredHolder !== this.identity;
  }

  /**
   * The Lease is gone (a 404, or a DELETED event). Its absence is a change
   * observed now: whoever held it (the holder in the DELETED object, else the
   * last one seen, which may be stale) may not have noticed yet, so the Lease
   * counts as held for max(that record's duration, our leaseDuration) from the
   * first sign of absence. A leader that lost it notices within renewDeadline.
   * Before anything was ever seen, a missing Lease is simply missing.
   */
  #observeAbsent(now: number, gone?: Lease): void {
    if (this.#observed?.deleted) return;
    if (gone?.spec) this.#observe(gone, now);
    const prev = this.#observed;
    if (!prev) return;
    this.#observed = {
      ...prev,
      key: `${prev.key}#deleted`,
      beforeAbsence: prev,
      durationMs: Math.max(prev.durationMs, this.leaseDuration),
      at: now,
      deleted: true,
      ownWrite: false,
      named: false,
    };
    this.#changes++;
  }

  #reportLeader(): void {
    const holder = this.#observed?.holder;
    if (holder === "") this.#reportedLeader = "";
    if (holder === undefined || holder === "" || holder === this.#reportedLeader) return;
    if (holder === this.identity && !this.#leading) return; // reported when this replica takes it
    this.#reportedLeader = holder;
    this.stats.leaderChangesTotal++;
    this.#log.info("new leader", { leader: holder });
    this.#call("onNewLeader", () => this.#opts.onNewLeader?.(holder));
    this.dispatchEvent(new CustomEvent("newleader", { detail: holder }));
  }

  // ---- one attempt ----------------------------------------------------------

  /** `ms` × (1 + U[0,1) × JITTER_FACTOR), client-go's jitter; a broken `random` counts as 0. */
  #jittered(ms: number): number {
    return ms * (1 + this.#unitRandom() * JITTER_FACTOR);
  }

  /** A random number in [0, 1); a broken `random` option counts as 0. */
  #unitRandom(): number {
    const r = this.#random();
    return Number.isFinite(r) && r > 0 && r < 1 ? r : 0;
  }

  #count(verb: string) {
    this.stats.requestsByVerb[verb] = (this.stats.requestsByVerb[verb] ?? 0) + 1;
  }

  #requestSignal(stop: AbortSignal, budget: number): { signal: AbortSignal; done: () => void } {
    const ms = clampDelay(Math.min(this.#requestTimeout, budget), 1, this.#requestTimeout);
    const t = new AbortController();
    const cancel = new AbortController();
    this.#clock.sleep(ms, cancel.signal).then(
      () => t.abort(new TimeoutError(`lease request got no answer within ${ms} ms`)),
      () => {},
    );
    const linked = linkSignals([stop, t.signal]);
    return {
      signal: linked.signal,
      done: () => {
        cancel.abort();
        linked.dispose();
      },
    };
  }

  #desired(prev: LeaderElectionRecord | undefined, keepTerm: boolean, wall: string): LeaderElectionRecord {
    return desiredRecord(this.identity, this.leaseDuration, prev, keepTerm, wall);
  }

  #withRecord(lease: Lease, r: LeaderElectionRecord): Lease {
    return { ...lease, metadata: { ...lease.metadata }, spec: writeRecord(lease.spec, r) };
  }

  /** Our own write succeeded: the claim counts from before the request was sent. */
  #written(lease: Lease, sent: LeaderElectionRecord, start: number): Acquired {
    const o = this.#observe(lease, start, true);
    o.at = start;
    this.#lastRenew = start;
    const r = readRecord(lease);
    const record = r.ok && r.record.holderIdentity === this.identity ? r.record : sent;
    return { kind: "acquired", lease, record };
  }

  #notePendingAcquire(sent: LeaderElectionRecord): void {
    this.#pendingAcquires.push(sent);
    if (this.#pendingAcquires.length > 8) this.#pendingAcquires.shift();
  }

  /** PUTs `sent` over `lease`; an acquiring write is remembered until its answer is known. */
  #put(lease: Lease, sent: LeaderElectionRecord, signal: AbortSignal): Promise<Lease> {
    this.#count("update");
    if (!this.#leading) this.#notePendingAcquire(sent);
    return this.#api.update(this.#withRecord(lease, sent), signal);
  }

  /**
   * Waits for `p` at most `ms` on the injected clock, or until `stop` aborts;
   * `undefined` when it did not settle by then. Guards against a Lease API (or
   * token source) that never answers and ignores its abort signal.
   */
  async #within<T>(p: Promise<T>, ms: number, stop?: AbortSignal): Promise<{ value: T } | undefined> {
    const cancel = new AbortController();
    const linked = linkSignals([stop, cancel.signal]);
    try {
      return await Promise.race([
        p.then((value) => ({ value })),
        this.#clock.sleep(clampDelay(ms), linked.signal).then(() => undefined, () => undefined),
      ]);
    } finally {
      cancel.abort();
      linked.dispose();
    }
  }

  /** One acquire-or-renew attempt, as client-go's tryAcquireOrRenew, with safer rules. */
  async #attempt(stop: AbortSignal, budget: number, ctx: AttemptCtx): Promise<Attempt> {
    const start = this.#clock.now();
    const wall = formatMicroTime(this.#clock.wallTime());
    const remaining = () => budget - (this.#clock.now() - start);
    const o = this.#observed;
    // Under coordinated election a leader that sees another preferred holder ends its term.
    if (this.#leading && this.#preferredOther(o)) return { kind: "lost-preferred" };
    const fast = fastPath(this.identity, this.#leading, o, this.#opts.coordinated);
    // 1. Fast path: the leader PUTs its cached object; resourceVersion guards it.
    if (o?.record && fast === "renew") {
      const sent = this.#desired(o.record, true, wall);
      const req = this.#requestSignal(stop, budget);
      try {
        const updated = await this.#put(o.lease, sent, req.signal);
        if (ctx.abandoned) return HELD;
        this.#noteRenew(start);
        return this.#written(updated, sent, start);
      } catch (e) {
        if (stop.aborted) throw e;
        this.#noteError(e, "optimistic renew failed; falling back to GET + PUT", true);
      } finally {
        req.done();
      }
      if (ctx.abandoned) return HELD;
      this.stats.slowpathTotal++;
    } else if (o?.record && fast === "take-free") {
      // 1b. The Lease was free when last seen (a release delivered by the watch):
      // take it with one PUT of that object; a 409 means someone was faster.
      const sent = this.#desired(o.record, false, wall);
      const req = this.#requestSignal(stop, budget);
      try {
        const updated = await this.#put(o.lease, sent, req.signal);
        if (ctx.abandoned) return HELD;
        return this.#written(updated, sent, start);
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
    let req = this.#requestSignal(stop, remaining());
    let lease: Lease | undefined;
    try {
      this.#count("get");
      lease = await this.#api.get(req.signal);
    } finally {
      req.done();
    }
    if (ctx.abandoned) return HELD;
    const now = this.#clock.now();
    if (!lease) this.#observeAbsent(now);
    const last = this.#observed;
    const seen = lease ? this.#observe(lease, now) : undefined;
    this.#readOnce = true;
    // 3. Decide (see decideOnRead): renew, take over, adopt a lost write, create, wait or stop.
    const d = decideOnRead({
      identity: this.identity,
      leading: this.#leading,
      read: seen,
      last,
      now,
      ownWrites: this.#pendingAcquires,
      coordinated: this.#opts.coordinated,
    });
    this.#log.debug("read the lease", {
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
      const sent = this.#desired(undefined, false, wall);
      req = this.#requestSignal(stop, remaining());
      try {
        this.#count("create");
        this.#notePendingAcquire(sent);
        const created = await this.#api.create(
          { metadata: { name: this.#api.name, namespace: this.#api.namespace }, spec: writeRecord({}, sent) },
          req.signal,
        );
        if (ctx.abandoned) return HELD;
        return this.#written(created, sent, start);
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
      this.#log.info("the lease holds this replica's own write whose answer was lost; taking that term", {
        leaseTransitions: seen.record?.leaseTransitions,
      });
    }
    // 4. Write: renew or adopt (keep the term) or take over (a new term).
    const keep = d.action === "renew" || d.action === "adopt";
    const prev = seen.record ?? this.#salvage(lease);
    const sent = this.#desired(prev, keep, wall);
    req = this.#requestSignal(stop, remaining());
    try {
      const updated = await this.#put(lease, sent, req.signal);
      if (ctx.abandoned) return HELD;
      if (this.#leading) this.#noteRenew(start);
      return this.#written(updated, sent, start);
    } catch (e) {
      if (isConflict(e)) return HELD;
      throw e;
    } finally {
      req.done();
    }
  }

  /** Transition count to continue from when a malformed record is taken over. */
  #salvage(lease: Lease): LeaderElectionRecord {
    const t = lease.spec?.leaseTransitions;
    return {
      holderIdentity: "",
      leaseDurationSeconds: 1,
      acquireTime: "",
      renewTime: "",
      leaseTransitions: typeof t === "number" && Number.isInteger(t) && t >= 0 ? t : 0,
    };
  }

  #noteRenew(start: number) {
    this.stats.renewCount++;
    this.stats.renewLatencySumMs += this.#clock.now() - start;
  }

  #noteError(e: unknown, what: string, debugOnly = false) {
    const kind = errorKind(e);
    this.stats.errorsByKind[kind] = (this.stats.errorsByKind[kind] ?? 0) + 1;
    const msg = e instanceof Error ? e.message : String(e);
    if (debugOnly) {
      this.#log.debug(what, { kind, error: msg });
      return;
    }
    if (msg === this.#lastError) {
      this.#log.debug(what, { kind, error: msg, repeated: true });
      return;
    }
    this.#lastError = msg;
    (kind === "forbidden" || kind === "unauthorized" || kind === "config" ? this.#log.error : this.#log.warn)(what, {
      kind,
      error: msg,
    });
  }

  #call(name: string, fn: () => void) {
    try {
      fn();
    } catch (e) {
      this.#log.error(`${name} callback threw`, { error: e instanceof Error ? e.message : String(e) });
    }
  }

  // ---- acquire ---------------------------------------------------------------

  async #acquireLoop(stop: AbortSignal): Promise<Acquired | undefined> {
    const watcher = new AbortController();
    const linked = linkSignals([stop, watcher.signal]);
    // Not awaited when the loop ends: a watch that ignores its signal must not
    // hold up a term; the loop ignores whatever it delivers after the abort.
    if ((this.#opts.watch ?? true) && this.#api.watch) this.#watchLoop(linked.signal).catch(() => {});
    // One attempt makes up to three requests; it never outlasts renewDeadline.
    const budget = Math.min(this.#requestTimeout * 2, this.renewDeadline);
    try {
      for (;;) {
        if (stop.aborted) return undefined;
        let retryAfter = 0;
        const ctx: AttemptCtx = { abandoned: false };
        try {
          const r = await this.#within(this.#attempt(stop, budget, ctx), budget, stop);
          if (!r) {
            ctx.abandoned = true;
            if (stop.aborted) return undefined;
            this.#noteError(
              new TimeoutError(`an attempt to acquire the lease got no answer within ${budget} ms`),
              "could not acquire the lease",
            );
          } else if (r.value.kind === "acquired") {
            this.#lastError = "";
            this.#pendingAcquires = [];
            return r.value;
          }
        } catch (e) {
          if (stop.aborted) return undefined;
          this.#noteError(e, "could not acquire the lease");
          retryAfter = retryAfterMs(e);
        }
        await this.#waitForChance(stop, retryAfter);
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
  async #waitForChance(stop: AbortSignal, retryAfter: number): Promise<void> {
    const start = this.#clock.now();
    const changesAtStart = this.#changes;
    const pollAt = start + Math.max(this.#jittered(this.retryPeriod), retryAfter);
    for (;;) {
      if (stop.aborted) return;
      const now = this.#clock.now();
      const until = nextAttemptAt({
        start,
        retryAfterMs: retryAfter,
        pollAt,
        observed: this.#observed,
        changed: this.#changes !== changesAtStart,
        watching: this.#watchHealthy,
      });
      if (now >= until) return;
      const ctl = new AbortController();
      this.#wake = () => ctl.abort();
      const linked = linkSignals([stop, ctl.signal]);
      try {
        await this.#clock.sleep(clampDelay(until - now, 1), linked.signal);
      } catch {
        // woken: look again
      } finally {
        this.#wake = undefined;
        linked.dispose();
      }
    }
  }

  /**
   * Watches the Lease while following. Request rate: a watch is opened again at
   * once only after one that lived at least 10 s; after a shorter one (ended by
   * the server or failed) it waits a jittered, doubling backoff of 1 s to 30 s
   * ([b, 2b) for backoff b), reset after a watch that lived 10 s or delivered an
   * event; after a 403 at least 60 s. So a follower opens at most one watch per
   * second, and while watches keep ending at once without events, fewer than one
   * per 30 s after about a minute (plus its polls, one GET per jittered
   * retryPeriod, while it has no watch). A 410 Gone (or any ERROR event) restarts
   * the watch from the current state.
   */
  async #watchLoop(signal: AbortSignal): Promise<void> {
    const gen = ++this.#watchGen;
    const setHealthy = (v: boolean) => {
      if (gen === this.#watchGen) this.#watchHealthy = v;
    };
    let backoff = WATCH_BACKOFF_MIN_MS;
    let warnedForbidden = false;
    let rv = this.#observed?.lease.metadata?.resourceVersion;
    while (!signal.aborted) {
      const opened = this.#clock.now();
      let events = 0;
      let delay: number;
      try {
        for await (const ev of this.#api.watch!(rv, signal)) {
          if (signal.aborted) break;
          const obj = ev?.object;
          if (!obj || typeof obj !== "object" || !obj.metadata || typeof obj.metadata !== "object") continue;
          if (!this.#watchHealthy) {
            setHealthy(true);
            this.#log.debug("watching the lease", {});
          }
          const next = obj.metadata.resourceVersion;
          if (typeof next === "string" && next) rv = next;
          // A deletion changes nothing until the last record seen expires (see #attempt),
          // but it is news: the next attempt reads the Lease instead of writing over it.
          if (ev.type === "DELETED") {
            events++;
            this.#observeAbsent(this.#clock.now(), obj);
          } else if (ev.type !== "BOOKMARK") {
            events++;
            this.#observe(obj, this.#clock.now());
          }
          this.#wake?.();
        }
        if (signal.aborted) break;
        // The server (or a proxy) ended the stream.
        setHealthy(false);
        this.#wake?.();
        const lived = this.#clock.now() - opened;
        ({ delay, backoff } = watchReopen({ how: "closed", lived, events, backoff, random: this.#unitRandom() }));
        if (delay > 0) this.#log.debug("lease watch ended early; reopening it later", { lived, delay });
      } catch (e) {
        setHealthy(false);
        this.#wake?.();
        if (signal.aborted) break;
        const forbidden = errorKind(e) === "forbidden";
        if (forbidden && !warnedForbidden) {
          warnedForbidden = true;
          this.#log.warn(
            "watching the lease is forbidden; polling every retryPeriod instead (grant list and watch on leases to enable it)",
            { error: e instanceof Error ? e.message : String(e) },
          );
        } else if (!forbidden) {
          this.#log.debug("lease watch ended; reconnecting", { error: e instanceof Error ? e.message : String(e) });
        }
        const name = (e as { name?: string } | null)?.name;
        if (name === "WatchExpiredError" || (e as { code?: number } | null)?.code === 410) rv = undefined; // re-read: start from now
        const lived = this.#clock.now() - opened;
        ({ delay, backoff } = watchReopen({
          how: forbidden ? "forbidden" : "failed",
          lived,
          events,
          backoff,
          random: this.#unitRandom(),
        }));
      }
      if (delay > 0) {
        try {
          await this.#clock.sleep(delay, signal);
        } catch {
          break;
        }
      }
    }
    setHealthy(false);
  }

  // ---- lead -------------------------------------------------------------------

  /**
   * One term. The fencing token comes from the acquiring write's answer. When
   * the renewals end: leading turns off, the work's signal aborts, "stopped
   * leading" is reported at once; then the work is awaited (at most until the
   * Lease could be taken) and the Lease released (its own log line and event).
   */
  async #lead(stop: AbortSignal, won: Acquired): Promise<{ work: Promise<void>; settled: boolean }> {
    const leaderCtl = new AbortController();
    const rec = won.record;
    const token: FencingToken = {
      holderIdentity: this.identity,
      leaseTransitions: rec.leaseTransitions,
      resourceVersion: won.lease.metadata?.resourceVersion ?? "",
      acquireTime: rec.acquireTime,
      value: `${rec.leaseTransitions}/${this.identity}`,
    };
    // The acquiring write is what this replica last saw, whatever a watch said meanwhile.
    this.#observe(won.lease, this.#lastRenew, true).at = this.#lastRenew;
    this.#token = token;
    this.#leadingSince = this.#clock.wallTime().toISOString();
    this.#leading = true;
    this.stats.startedTotal++;
    this.#reportLeader();
    this.#log.info("started leading", { lease: `${this.#api.namespace}/${this.#api.name}`, fencingToken: token.value });
    let workDone = false;
    let work: Promise<unknown>;
    try {
      work = Promise.resolve(this.#opts.onStartedLeading?.({ signal: leaderCtl.signal, fencingToken: token }));
    } catch (e) {
      work = Promise.reject(e);
    }
    const settledWork = work.then(
      () => {},
      (e) => {
        if (!leaderCtl.signal.aborted || e !== leaderCtl.signal.reason) {
          this.#log.error("leader work failed", { error: e instanceof Error ? e.message : String(e) });
        }
      },
    ).then(() => {
      workDone = true;
      if (this.#workSettling) this.#log.info("the last term's work has settled", {});
      this.#workSettling = false;
    });
    this.dispatchEvent(new CustomEvent("started", { detail: token }));

    // Under coordinated election the leader watches too: the controller moves
    // leadership by setting preferredHolder, and the term should end at once.
    const leaderWatch = new AbortController();
    if (this.#opts.coordinated && (this.#opts.watch ?? true) && this.#api.watch) {
      const linked = linkSignals([stop, leaderWatch.signal]);
      this.#watchLoop(linked.signal).catch(() => {}).finally(() => linked.dispose());
    }
    let reason: StopReason;
    try {
      reason = await this.#renewLoop(stop);
    } finally {
      leaderWatch.abort();
    }

    // Stop leading: flip the state, abort the work and say so, all at once; then
    // wait for the work, bounded by the time left before another replica could
    // take the Lease, and release it.
    const graceMs = graceLeft(this.#lastRenew, this.leaseDuration, this.#clock.now());
    this.#leading = false;
    this.#token = undefined;
    this.#workSettling = !workDone;
    const messages: Record<StopReason, string> = {
      "shutdown": "stopping: shutdown requested",
      "renew-deadline": `could not renew the lease within renewDeadline (${this.renewDeadline} ms)`,
      "lease-taken": `the lease was taken by ${this.#observed?.holder}`,
      "lease-deleted": "the lease was deleted",
      "lease-malformed": "the lease was overwritten with a malformed record",
      "preferred-holder": `the election controller prefers ${this.#observed?.preferredHolder} as holder`,
    };
    leaderCtl.abort(new LeadershipLostError(reason, messages[reason], graceMs));
    this.#log.info("stopped leading", { reason, detail: messages[reason], graceMs: Math.round(graceMs) });
    this.#call("onStoppedLeading", () => this.#opts.onStoppedLeading?.(reason));
    this.dispatchEvent(new CustomEvent("stopped", { detail: reason }));

    const settled = workDone || await this.#settleWithin(settledWork, graceMs);
    if (!settled) {
      this.#log.error(
        "leader work did not stop before the lease could be taken by another replica; it may overlap with the next leader",
        { waitedMs: Math.round(graceMs) },
      );
    }
    if (mayRelease(reason, settled, this.#opts.releaseOnCancel ?? true)) {
      await this.#release(reason);
    }
    return { work: settledWork, settled };
  }

  async #settleWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
    const r = await this.#within(work, ms);
    return r !== undefined;
  }

  /**
   * Renews every retryPeriod; after a failure retries every retryPeriod / 2 (or
   * the server's Retry-After) until renewDeadline has passed since the start of
   * the last successful renewal. Every wait and every attempt is cut at that
   * deadline on the injected clock, so a call that never returns cannot keep
   * this replica leading past it.
   */
  async #renewLoop(stop: AbortSignal): Promise<StopReason> {
    let wait = this.retryPeriod;
    for (;;) {
      let left = this.#lastRenew + this.renewDeadline - this.#clock.now();
      if (left <= 0) return "renew-deadline";
      if (this.#preferredOther(this.#observed)) return "preferred-holder";
      const wake = this.#leaderWake = new AbortController();
      const linked = linkSignals([stop, wake.signal]);
      try {
        await this.#clock.sleep(clampDelay(Math.min(wait, left), 1), linked.signal);
      } catch {
        if (stop.aborted) return "shutdown";
        if (this.#preferredOther(this.#observed)) return "preferred-holder";
      } finally {
        linked.dispose();
        this.#leaderWake = undefined;
      }
      left = this.#lastRenew + this.renewDeadline - this.#clock.now();
      if (left <= 0) return "renew-deadline";
      const ctx: AttemptCtx = { abandoned: false };
      try {
        const r = await this.#within(this.#attempt(stop, left, ctx), left, stop);
        if (!r) {
          ctx.abandoned = true;
          if (stop.aborted) return "shutdown";
          continue; // the deadline has passed
        }
        switch (r.value.kind) {
          case "acquired":
            this.#lastError = "";
            wait = this.retryPeriod;
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
        wait = this.retryPeriod / 2;
      } catch (e) {
        if (stop.aborted) return "shutdown";
        this.#noteError(e, "failed to renew the lease");
        wait = Math.max(this.retryPeriod / 2, retryAfterMs(e));
      }
    }
  }

  /** PUTs the release record (holder "", 1 s, times now, transitions kept) over `lease`. */
  async #writeRelease(
    lease: Lease,
    record: LeaderElectionRecord,
    signal: AbortSignal,
    ctx: AttemptCtx,
    reason: StopReason,
  ): Promise<void> {
    const wall = formatMicroTime(this.#clock.wallTime());
    this.#count("update");
    const updated = await this.#api.update(
      this.#withRecord(lease, releaseRecord(record, wall)),
      signal,
    );
    if (ctx.abandoned) return;
    this.#observe(updated, this.#clock.now());
    this.#log.info("released the lease", { lease: `${this.#api.namespace}/${this.#api.name}`, reason });
    this.dispatchEvent(new CustomEvent("released", { detail: reason }));
  }

  /**
   * Writes an empty holder, but only while this replica still holds the Lease;
   * gives up after renewDeadline (on the injected clock, even if a call hangs).
   */
  async #release(reason: StopReason): Promise<void> {
    const ctx: AttemptCtx = { abandoned: false };
    const r = await this.#within(this.#releaseAttempts(ctx, reason), this.renewDeadline);
    if (!r) {
      ctx.abandoned = true;
      this.#noteError(
        new TimeoutError(`releasing the lease got no answer within ${this.renewDeadline} ms`),
        "could not release the lease; it will expire after leaseDuration",
      );
    }
  }

  async #releaseAttempts(ctx: AttemptCtx, reason: StopReason): Promise<void> {
    const deadline = this.#clock.now() + this.renewDeadline;
    const never = new AbortController().signal;
    // First the cached object of our last write: its resourceVersion makes the PUT
    // fail with 409 if anyone wrote since, so it can only blank our own record.
    const o = this.#observed;
    if (o?.record && o.holder === this.identity && !o.deleted) {
      const req = this.#requestSignal(never, deadline - this.#clock.now());
      try {
        await this.#writeRelease(o.lease, o.record, req.signal, ctx, reason);
        return;
      } catch (e) {
        if (!isConflict(e)) {
          this.#noteError(e, "could not release the lease; it will expire after leaseDuration");
          return;
        }
      } finally {
        req.done();
      }
    }
    // Then a fresh read: release only what this replica still holds.
    for (let i = 0; i < 10 && !ctx.abandoned; i++) {
      const left = deadline - this.#clock.now();
      if (left <= 0) break;
      const req = this.#requestSignal(never, left);
      try {
        this.#count("get");
        const lease = await this.#api.get(req.signal);
        const r = lease ? readRecord(lease) : undefined;
        if (!lease || !r?.ok || r.record.holderIdentity !== this.identity) {
          this.#log.debug("release skipped: the lease is not held by this replica", {});
          return;
        }
        await this.#writeRelease(lease, r.record, req.signal, ctx, reason);
        return;
      } catch (e) {
        if (!isConflict(e)) {
          this.#noteError(e, "could not release the lease; it will expire after leaseDuration");
          return;
        }
      } finally {
        req.done();
      }
      // Someone wrote meanwhile: look again after a short jittered pause, not in a burst.
      const pause = Math.min(this.#jittered(this.retryPeriod / 4), deadline - this.#clock.now());
      if (pause > 0) await this.#clock.sleep(pause).catch(() => {});
    }
  }
}
