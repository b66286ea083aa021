/**
 * The leader elector: client-go's Lease algorithm, with the leader's work
 * bounded by an AbortSignal, re-contention after loss, and watch-driven followers.
 *
 * @module
 */

import { clampDelay, type Clock, MAX_TIMER_MS, systemClock } from "./clock.ts";
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
export type StopReason = "shutdown" | "renew-deadline" | "lease-taken" | "lease-deleted" | "lease-malformed";

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
  /** Followers watch the Lease (if the API supports it) instead of polling. @default true */
  watch?: boolean;
  /** Called when this replica becomes leader; stop when `ctx.signal` aborts. */
  onStartedLeading?: (ctx: LeaderContext) => void | Promise<unknown>;
  /** Called once after each term, when the work has settled and the Lease was released. */
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
  /** Creates the error. */
  constructor(reason: StopReason, message: string) {
    super(message);
    this.name = "LeadershipLostError";
    this.reason = reason;
  }
}

type Attempt = "acquired" | "held" | "lost-taken" | "lost-deleted" | "lost-malformed";

interface Observed {
  lease: Lease;
  /** Key of the record for change detection. */
  key: string;
  /** Parsed record, or undefined when malformed. */
  record?: LeaderElectionRecord;
  /** Holder as far as it can be read. */
  holder: string;
  /** Duration (ms) the record claims; for a malformed record, our own leaseDuration. */
  durationMs: number;
  /** Monotonic time the current record was first observed. */
  at: number;
  /** A watch reported the Lease deleted since this record was seen. */
  deleted?: boolean;
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
 * renew within `renewDeadline` of its last successful renewal stops leading and
 * aborts its work; the Lease is released only after the work settled, and only
 * while this replica still holds it (a PUT guarded by the resourceVersion of its
 * own last write, else a fresh read first).
 *
 * Events (an `EventTarget`): `newleader` (detail: identity), `started`
 * (detail: {@linkcode FencingToken}), `stopped` (detail: {@linkcode StopReason}).
 * Order: `newleader(me)` before `started`; `stopped` only after `started`, once per term.
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
  #watchHealthy = false;
  #lastError = "";
  #requestTimeout: number;
  /** Counts observed changes of the record (and deletions), to notice news. */
  #changes = 0;

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
   * the first term ends). On abort while leading: the work's signal aborts, the
   * work is awaited, the Lease is released, `onStoppedLeading` runs, then this
   * promise resolves.
   *
   * @throws {LeaseholdError} when called twice concurrently
   */
  async run(signal?: AbortSignal): Promise<void> {
    if (this.#running) throw new LeaseholdError("LeaderElector.run is already running");
    this.#running = true;
    const stop = signal ?? new AbortController().signal;
    const onStop = () => this.#wake?.();
    stop.addEventListener("abort", onStop);
    try {
      do {
        if (!(await this.#acquireLoop(stop))) break;
        await this.#lead(stop);
      } while ((this.#opts.recontend ?? true) && !stop.aborted);
    } finally {
      stop.removeEventListener("abort", onStop);
      this.#running = false;
    }
  }

  // ---- observation ---------------------------------------------------------

  #observe(lease: Lease, at: number): Observed {
    const r = readRecord(lease);
    const key = JSON.stringify(r.ok ? r.record : { broken: lease.spec ?? null });
    if (this.#observed?.key === key) {
      this.#observed.lease = lease;
      this.#observed.deleted = false;
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
    this.#observed = {
      lease,
      key,
      record: r.ok ? r.record : undefined,
      holder: r.ok ? r.record.holderIdentity : (r.holderIdentity ?? "<malformed>"),
      durationMs: r.ok ? r.record.leaseDurationSeconds * 1000 : this.leaseDuration,
      at,
    };
    this.#reportLeader();
    return this.#observed;
  }

  #observeDeleted(): void {
    if (!this.#observed || this.#observed.deleted) return;
    this.#observed.deleted = true;
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

  #expiresAt(o: Observed): number {
    return o.at + o.durationMs;
  }

  #heldByOther(o: Observed, now: number): boolean {
    return o.holder !== "" && now < this.#expiresAt(o);
  }

  // ---- one attempt ----------------------------------------------------------

  /** `ms` × (1 + U[0,1) × JITTER_FACTOR), client-go's jitter; a broken `random` counts as 0. */
  #jittered(ms: number): number {
    const r = this.#random();
    return ms * (1 + (Number.isFinite(r) && r > 0 && r < 1 ? r : 0) * JITTER_FACTOR);
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
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.floor(this.leaseDuration / 1000),
      acquireTime: keepTerm && prev?.acquireTime ? prev.acquireTime : wall,
      renewTime: wall,
      leaseTransitions: keepTerm ? (prev?.leaseTransitions ?? 0) : (prev ? prev.leaseTransitions + 1 : 0),
    };
  }

  #withRecord(lease: Lease, r: LeaderElectionRecord): Lease {
    return { ...lease, metadata: { ...lease.metadata }, spec: writeRecord(lease.spec, r) };
  }

  #written(lease: Lease, start: number): void {
    const o = this.#observe(lease, start);
    o.at = start; // our own write: the claim counts from before the request was sent
    this.#lastRenew = start;
  }

  /** One acquire-or-renew attempt, as client-go's tryAcquireOrRenew, with safer rules. */
  async #attempt(stop: AbortSignal, budget: number): Promise<Attempt> {
    const start = this.#clock.now();
    const wall = formatMicroTime(this.#clock.wallTime());
    const o = this.#observed;
    // 1. Fast path: the leader PUTs its cached object; resourceVersion guards it.
    if (this.#leading && o?.record && o.holder === this.identity) {
      const req = this.#requestSignal(stop, budget);
      try {
        this.#count("update");
        const updated = await this.#api.update(
          this.#withRecord(o.lease, this.#desired(o.record, true, wall)),
          req.signal,
        );
        this.#written(updated, start);
        this.#noteRenew(start);
        return "acquired";
      } catch (e) {
        if (stop.aborted) throw e;
        this.#noteError(e, "optimistic renew failed; falling back to GET + PUT", true);
      } finally {
        req.done();
      }
      this.stats.slowpathTotal++;
    } else if (!this.#leading && o?.record && o.holder === "" && !o.deleted) {
      // 1b. The Lease was free when last seen (a release delivered by the watch):
      // take it with one PUT of that object; a 409 means someone was faster.
      const req = this.#requestSignal(stop, budget);
      try {
        this.#count("update");
        const updated = await this.#api.update(
          this.#withRecord(o.lease, this.#desired(o.record, false, wall)),
          req.signal,
        );
        this.#written(updated, start);
        return "acquired";
      } catch (e) {
        // 409: someone was faster; 404: the Lease was deleted. Either way read it
        // again and go on under the usual rules (create only what has expired).
        if (stop.aborted || !(isConflict(e) || isNotFound(e))) throw e;
      } finally {
        req.done();
      }
    }
    // 2. Read the Lease.
    const remaining = () => budget - (this.#clock.now() - start);
    let req = this.#requestSignal(stop, remaining());
    let lease: Lease | undefined;
    try {
      this.#count("get");
      lease = await this.#api.get(req.signal);
    } finally {
      req.done();
    }
    const now = this.#clock.now();
    if (!lease) {
      if (this.#leading) return "lost-deleted";
      // A Lease deleted under a live holder: that holder may not have noticed yet.
      // Create it only once the last record seen has expired, as if it still stood.
      if (this.#observed && this.#heldByOther(this.#observed, now)) return "held";
      req = this.#requestSignal(stop, remaining());
      try {
        this.#count("create");
        const created = await this.#api.create(
          {
            metadata: { name: this.#api.name, namespace: this.#api.namespace },
            spec: writeRecord({}, this.#desired(undefined, false, wall)),
          },
          req.signal,
        );
        this.#written(created, start);
        return "acquired";
      } catch (e) {
        if (isAlreadyExists(e) || isConflict(e)) return "held";
        throw e;
      } finally {
        req.done();
      }
    }
    const seen = this.#observe(lease, now);
    // 3. Decide.
    if (this.#leading) {
      if (!seen.record) return "lost-malformed";
      if (seen.holder !== this.identity) return "lost-taken";
    } else if (this.#heldByOther(seen, now)) {
      return "held";
    }
    // 4. Write: renew (keep the term) or take over (a new term).
    const keep = this.#leading;
    const prev = seen.record ?? this.#salvage(lease);
    req = this.#requestSignal(stop, remaining());
    try {
      this.#count("update");
      const updated = await this.#api.update(this.#withRecord(lease, this.#desired(prev, keep, wall)), req.signal);
      this.#written(updated, start);
      if (keep) this.#noteRenew(start);
      return "acquired";
    } catch (e) {
      if (isConflict(e)) return "held";
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

  async #acquireLoop(stop: AbortSignal): Promise<boolean> {
    const watcher = new AbortController();
    const linked = linkSignals([stop, watcher.signal]);
    const watching = (this.#opts.watch ?? true) && this.#api.watch ? this.#watchLoop(linked.signal) : undefined;
    try {
      for (;;) {
        if (stop.aborted) return false;
        let retryAfter = 0;
        try {
          const r = await this.#attempt(stop, this.#requestTimeout * 2);
          if (r === "acquired") {
            this.#lastError = "";
            return true;
          }
        } catch (e) {
          if (stop.aborted) return false;
          this.#noteError(e, "could not acquire the lease");
          retryAfter = retryAfterMs(e);
        }
        await this.#waitForChance(stop, retryAfter);
      }
    } finally {
      watcher.abort();
      await watching;
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
    const earliest = start + retryAfter;
    const pollAt = start + Math.max(this.#jittered(this.retryPeriod), retryAfter);
    for (;;) {
      if (stop.aborted) return;
      const now = this.#clock.now();
      const o = this.#observed;
      let until = pollAt;
      if (o && (o.holder === "" || o.deleted) && this.#changes !== changesAtStart) {
        until = earliest;
      } else if (o && o.holder !== "") {
        const exp = this.#expiresAt(o);
        if (exp > start) until = Math.max(earliest, this.#watchHealthy ? exp : Math.min(exp, pollAt));
      }
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

  async #watchLoop(signal: AbortSignal): Promise<void> {
    let backoff = 500;
    let warnedForbidden = false;
    let rv = this.#observed?.lease.metadata.resourceVersion;
    while (!signal.aborted) {
      try {
        for await (const ev of this.#api.watch!(rv, signal)) {
          if (!this.#watchHealthy) {
            this.#watchHealthy = true;
            this.#log.debug("watching the lease", {});
          }
          backoff = 500;
          const next = ev.object?.metadata?.resourceVersion;
          if (typeof next === "string" && next) rv = next;
          // A deletion changes nothing until the last record seen expires (see #attempt),
          // but it is news: the next attempt reads the Lease instead of writing over it.
          if (ev.type === "DELETED") this.#observeDeleted();
          else if (ev.type !== "BOOKMARK") this.#observe(ev.object, this.#clock.now());
          this.#wake?.();
        }
        // The server closed the stream (its timeout): reconnect at once.
      } catch (e) {
        this.#watchHealthy = false;
        this.#wake?.();
        if (signal.aborted) return;
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
        if ((e as { name?: string }).name === "WatchExpiredError") rv = undefined; // start from now
        try {
          await this.#clock.sleep(forbidden ? Math.max(backoff, 60000) : backoff, signal);
        } catch {
          return;
        }
        backoff = Math.min(backoff * 2, 30000);
      }
    }
    this.#watchHealthy = false;
  }

  // ---- lead -------------------------------------------------------------------

  async #lead(stop: AbortSignal): Promise<void> {
    const leaderCtl = new AbortController();
    const o = this.#observed!;
    const rec = o.record!;
    this.#leading = true;
    this.#leadingSince = this.#clock.wallTime().toISOString();
    this.stats.startedTotal++;
    this.#token = {
      holderIdentity: this.identity,
      leaseTransitions: rec.leaseTransitions,
      resourceVersion: o.lease.metadata.resourceVersion ?? "",
      acquireTime: rec.acquireTime,
      value: `${rec.leaseTransitions}/${this.identity}`,
    };
    const token = this.#token;
    this.#reportLeader();
    this.#log.info("started leading", { lease: `${this.#api.namespace}/${this.#api.name}`, fencingToken: token.value });
    let work: Promise<unknown>;
    try {
      work = Promise.resolve(this.#opts.onStartedLeading?.({ signal: leaderCtl.signal, fencingToken: token }));
    } catch (e) {
      work = Promise.reject(e);
    }
    work = work.then(
      () => {},
      (e) => {
        if (!leaderCtl.signal.aborted || e !== leaderCtl.signal.reason) {
          this.#log.error("leader work failed", { error: e instanceof Error ? e.message : String(e) });
        }
      },
    );
    this.dispatchEvent(new CustomEvent("started", { detail: token }));

    const reason = await this.#renewLoop(stop);

    // Stop leading: abort the work first, then wait for it, bounded by the time
    // left before another replica could take the Lease.
    this.#leading = false;
    const messages: Record<StopReason, string> = {
      "shutdown": "stopping: shutdown requested",
      "renew-deadline": `could not renew the lease within renewDeadline (${this.renewDeadline} ms)`,
      "lease-taken": `the lease was taken by ${this.#observed?.holder}`,
      "lease-deleted": "the lease was deleted",
      "lease-malformed": "the lease was overwritten with a malformed record",
    };
    leaderCtl.abort(new LeadershipLostError(reason, messages[reason]));
    const bound = clampDelay(this.#lastRenew + this.leaseDuration - this.#clock.now());
    const settled = await this.#settleWithin(work, bound);
    if (!settled) {
      this.#log.error(
        "leader work did not stop before the lease could be taken by another replica; it may overlap with the next leader",
        {
          waitedMs: Math.round(bound),
        },
      );
    }
    if ((this.#opts.releaseOnCancel ?? true) && settled && reason !== "lease-taken" && reason !== "lease-deleted") {
      await this.#release();
    }
    this.#log.info("stopped leading", { reason, detail: messages[reason] });
    this.#token = undefined;
    this.#call("onStoppedLeading", () => this.#opts.onStoppedLeading?.(reason));
    this.dispatchEvent(new CustomEvent("stopped", { detail: reason }));
  }

  async #settleWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
    const cancel = new AbortController();
    try {
      return await Promise.race([
        work.then(() => true),
        this.#clock.sleep(ms, cancel.signal).then(() => false, () => false),
      ]);
    } finally {
      cancel.abort();
    }
  }

  async #renewLoop(stop: AbortSignal): Promise<StopReason> {
    for (;;) {
      try {
        await this.#clock.sleep(this.retryPeriod, stop);
      } catch {
        return "shutdown";
      }
      // Retry until renewDeadline has passed since the last successful renewal.
      for (;;) {
        const left = this.#lastRenew + this.renewDeadline - this.#clock.now();
        if (left <= 0) return "renew-deadline";
        let retryAfter = 0;
        try {
          const r = await this.#attempt(stop, left);
          if (r === "acquired") {
            this.#lastError = "";
            break;
          }
          if (r === "lost-taken") return "lease-taken";
          if (r === "lost-deleted") return "lease-deleted";
          if (r === "lost-malformed") return "lease-malformed";
        } catch (e) {
          if (stop.aborted) return "shutdown";
          this.#noteError(e, "failed to renew the lease");
          retryAfter = retryAfterMs(e);
        }
        const left2 = this.#lastRenew + this.renewDeadline - this.#clock.now();
        if (left2 <= 0) return "renew-deadline";
        try {
          await this.#clock.sleep(clampDelay(Math.min(Math.max(this.retryPeriod / 2, retryAfter), left2), 1), stop);
        } catch {
          return "shutdown";
        }
      }
    }
  }

  /** PUTs the release record (holder "", 1 s, times now, transitions kept) over `lease`. */
  async #writeRelease(lease: Lease, record: LeaderElectionRecord, signal: AbortSignal): Promise<void> {
    const wall = formatMicroTime(this.#clock.wallTime());
    this.#count("update");
    const updated = await this.#api.update(
      this.#withRecord(lease, {
        ...record,
        holderIdentity: "",
        leaseDurationSeconds: 1,
        acquireTime: wall,
        renewTime: wall,
      }),
      signal,
    );
    this.#observe(updated, this.#clock.now());
    this.#log.info("released the lease", { lease: `${this.#api.namespace}/${this.#api.name}` });
  }

  /** Writes an empty holder, but only while this replica still holds the Lease. */
  async #release(): Promise<void> {
    const deadline = this.#clock.now() + this.renewDeadline;
    const never = new AbortController().signal;
    // First the cached object of our last write: its resourceVersion makes the PUT
    // fail with 409 if anyone wrote since, so it can only blank our own record.
    const o = this.#observed;
    if (o?.record && o.holder === this.identity) {
      const req = this.#requestSignal(never, deadline - this.#clock.now());
      try {
        await this.#writeRelease(o.lease, o.record, req.signal);
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
    for (let i = 0; i < 10; i++) {
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
        await this.#writeRelease(lease, r.record, req.signal);
        return;
      } catch (e) {
        if (isConflict(e)) continue;
        this.#noteError(e, "could not release the lease; it will expire after leaseDuration");
        return;
      } finally {
        req.done();
      }
    }
  }
}
