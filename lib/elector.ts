/**
 * The leader elector: client-go's Lease algorithm, with the leader's work
 * bounded by an AbortSignal, re-contention after loss, and watch-driven followers.
 *
 * @module
 */

import { clampDelay } from "./clock.ts";
import { ConfigError, LeaseholdError } from "./errors.ts";
import { ElectorCore } from "./elector_core.ts";
import { type LeaderElectorOptions, validateElectorOptions } from "./elector_options.ts";
import type { ElectorState, ElectorStats } from "./elector_types.ts";
import { acquireLoop } from "./elector_acquire.ts";
import { lead } from "./elector_term.ts";
import { followSignal } from "./signal.ts";

export {
  JITTER_FACTOR,
  type LeaderElectorOptions,
  MAX_RETRY_AFTER_MS,
  retryAfterMs,
  validateElectorOptions,
} from "./elector_options.ts";
export {
  type ElectorState,
  type ElectorStats,
  type FencingToken,
  type LeaderContext,
  LeadershipLostError,
  type StopReason,
} from "./elector_types.ts";

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
  readonly stats: ElectorStats;
  #c: ElectorCore;
  #running = false;

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
    const c = this.#c = new ElectorCore(this, options);
    this.identity = c.identity;
    this.leaseDuration = c.leaseDuration;
    this.renewDeadline = c.renewDeadline;
    this.retryPeriod = c.retryPeriod;
    this.stats = c.stats;
  }

  /** Whether this replica leads now. */
  get isLeader(): boolean {
    return this.#c.leading;
  }

  /** The holder last observed (`""` when free, `undefined` before the first read). */
  get leader(): string | undefined {
    return this.#c.observed?.holder;
  }

  /** True while an ended term's work still runs (see {@linkcode ElectorState.workSettling}). */
  get workSettling(): boolean {
    return this.#c.workSettling;
  }

  /** `metadata.uid` of the Lease last observed (the involvedObject of leadership Events). */
  get leaseUid(): string | undefined {
    return this.#c.observed?.lease.metadata.uid;
  }

  /** Whether the follower's watch is connected. */
  get watching(): boolean {
    return this.#c.watchHealthy;
  }

  /** A snapshot of the state. */
  state(): ElectorState {
    const rec = this.#c.observed?.record;
    return {
      lease: `${this.#c.api.namespace}/${this.#c.api.name}`,
      identity: this.identity,
      isLeader: this.#c.leading,
      leader: this.#c.observed?.holder,
      leaseTransitions: rec?.leaseTransitions,
      leadingSince: this.#c.leading ? this.#c.leadingSince : undefined,
      fencingToken: this.#c.leading ? this.#c.token : undefined,
      workSettling: this.#c.workSettling,
    };
  }

  /**
   * Health as client-go's HealthzAdaptor judges it: unhealthy only when this
   * replica leads but has not renewed for longer than leaseDuration + `graceMs`.
   * Returns an error message, or `undefined` when healthy.
   */
  check(graceMs = 20000): string | undefined {
    if (!this.#c.leading) return undefined;
    const since = this.#c.clock.now() - this.#c.lastRenew;
    if (since > this.leaseDuration + graceMs) {
      return `failed to renew leadership on lease ${this.#c.api.namespace}/${this.#c.api.name} for ${
        Math.round(since)
      } ms`;
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
    // One listener on the caller's signal for all electors that share it (see
    // followSignal); every wait and request links to this elector's own signal.
    // Adding and removing a listener costs time linear in the listeners a signal
    // has: per step, that grew with the number of electors.
    const own = followSignal(signal);
    const stop = own.signal;
    const onStop = () => this.#c.wake?.();
    stop.addEventListener("abort", onStop);
    try {
      for (;;) {
        const won = await acquireLoop(this.#c, stop);
        if (!won) break;
        const term = await lead(this.#c, stop, won);
        if (!(this.#c.opts.recontend ?? true) || stop.aborted) break;
        if (!term.settled) {
          this.#c.log.error("the last term's work still runs; not contending again until it has stopped", {});
          await this.#settledOrStopped(term.work, stop);
          if (stop.aborted) break;
          this.#c.log.info("the last term's work has stopped; contending again", {});
        }
        try {
          await this.#c.clock.sleep(clampDelay(this.#c.jittered(this.retryPeriod), 1), stop);
        } catch {
          break;
        }
      }
    } finally {
      stop.removeEventListener("abort", onStop);
      own.dispose();
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
}
