/**
 * Sharded work over replicas: N shards, each one Lease `<prefix>-<i>`, spread
 * over however many replicas are alive, each replica holding at most
 * ceil(N / live replicas) of them.
 *
 * Who is alive: every replica keeps a small member Lease
 * `<prefix>-member-<identity>` that it holds and renews like any Lease; a
 * member counts as alive while its Lease names a holder and has changed within
 * its leaseDurationSeconds, judged on this process's monotonic clock (as every
 * expiry in leasehold). A replica that holds no shard yet is still seen, which
 * counting the holders of shards alone would miss.
 *
 * Who holds what: the live members sorted by identity; the first N mod M of
 * them hold ceil(N / M) shards, the others floor(N / M), so the counts sum to
 * N and differ by at most one. A replica over its share gives shards up (their
 * work is told to stop, awaited, then the Lease released); a replica under its
 * share contends for shards that are free or whose holder is not a live member
 * (it takes them as they are released or expire). Safety (never two holders of
 * one shard) comes from each shard's own {@linkcode LeaderElector}; the
 * balancing only decides which shards this replica contends for.
 *
 * Every Lease of the set carries the label
 * {@linkcode SHARD_SET_LABEL}`=<prefix>`, so one LIST + WATCH (a
 * {@linkcode LeaseWatchHub}) serves every shard's and member's elector.
 *
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";
import type { LeaderElector } from "./elector.ts";
import { ConfigError, LeaseholdError } from "./errors.ts";
import { LeaseWatchHub } from "./lease_hub.ts";
import { type Logger, silentLogger } from "./log.ts";
import { balanceShards } from "./lease_set_balance.ts";
import { memberElector } from "./lease_set_member.ts";
import {
  memberLeaseName,
  SHARD_SET_LABEL,
  type ShardedLeaseSetOptions,
  type ShardedLeaseSetState,
  shardLeaseName,
  shardQuotas,
  type ShardState,
  validateShardedLeaseSetOptions,
} from "./lease_set_rules.ts";
import { LeaseSetView } from "./lease_set_view.ts";
import { LeaseSetWatch } from "./lease_set_watch.ts";
import { pickElectorOptions, ShardSlot } from "./lease_set_slot.ts";
import { Requeue } from "./requeue.ts";

export {
  assignShards,
  MAX_SHARDS,
  memberLeaseName,
  type MemberOwner,
  SHARD_SET_LABEL,
  type ShardedLeaseSetOptions,
  type ShardedLeaseSetState,
  shardQuotas,
  type ShardState,
  validateShardedLeaseSetOptions,
} from "./lease_set_rules.ts";

interface ShardCounters {
  startedTotal: number;
  givenUpTotal: number;
  lostTotal: number;
}

/**
 * N shards of work spread over the live replicas, one Lease each; see the
 * module documentation for the rules. Events (an `EventTarget`): `started`
 * (detail: `{ shard, fencingToken }`), `stopped` (detail: `{ shard, reason }`),
 * `released` (detail: `{ shard }`), and `change` whenever the members, the
 * quota or the held shards may have changed.
 *
 * @example Usage
 * ```ts
 * import { MemoryLeaseStore, SHARD_SET_LABEL, ShardedLeaseSet } from "@leasehold/leasehold";
 * const store = new MemoryLeaseStore();
 * const stop = new AbortController();
 * const set = new ShardedLeaseSet({
 *   namespace: "default",
 *   prefix: "work",
 *   shards: 4,
 *   identity: "pod-a",
 *   leaseApi: (name) => store.api("default", name),
 *   source: store.listSource("default", { key: SHARD_SET_LABEL, value: "work" }),
 *   onStartedLeading: async (shard, { signal, fencingToken }) => {
 *     console.log("working on shard", shard, "with token", fencingToken.value);
 *     await new Promise((r) => signal.addEventListener("abort", r));
 *   },
 * });
 * set.addEventListener("change", () => {
 *   if (set.held().length === 4) stop.abort(); // alone, it holds every shard
 * });
 * await set.run(stop.signal); // resolves after every shard's work settled and was released
 * ```
 */
export class ShardedLeaseSet extends EventTarget {
  /** This replica's identity. */
  readonly identity: string;
  /** Namespace of the Leases. */
  readonly namespace: string;
  /** Name prefix of the Leases. */
  readonly prefix: string;
  /** Number of shards. */
  readonly shardCount: number;
  /** The member Lease of this replica. */
  readonly memberLease: string;
  /** The shared watch of the set's Leases. */
  readonly hub: LeaseWatchHub;
  #o: ShardedLeaseSetOptions;
  #clock: Clock;
  #log: Logger;
  #view: LeaseSetView;
  #watch: LeaseSetWatch;
  #requeue: Requeue;
  #slots = new Map<number, ShardSlot>();
  #counters: ShardCounters[];
  #running = false;
  #stopping = false;
  #member?: LeaderElector;
  #quota = 0;
  #members: string[] = [];

  /**
   * Creates the set; nothing is requested until {@linkcode ShardedLeaseSet.run}.
   *
   * @throws {ConfigError} when the settings are invalid (each problem named)
   */
  constructor(options: ShardedLeaseSetOptions) {
    super();
    const problems = validateShardedLeaseSetOptions(options);
    if (problems.length) throw new ConfigError(`invalid sharded lease set settings: ${problems.join("; ")}`);
    this.#o = options;
    this.identity = options.identity;
    this.namespace = options.namespace;
    this.prefix = options.prefix;
    this.shardCount = options.shards;
    this.memberLease = memberLeaseName(options.prefix, options.identity);
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? silentLogger;
    this.#counters = Array.from({ length: options.shards }, () => ({ startedTotal: 0, givenUpTotal: 0, lostTotal: 0 }));
    this.#requeue = new Requeue(this.#clock);
    this.#view = new LeaseSetView({
      clock: this.#clock,
      defaultDurationMs: options.leaseDuration ?? 15000,
      onChange: () => this.#wake(),
      logger: this.#log,
    });
    this.hub = new LeaseWatchHub({
      source: this.#view.tap(options.source),
      label: { key: SHARD_SET_LABEL, value: options.prefix },
      clock: this.#clock,
      logger: this.#log,
      random: options.random,
    });
    this.#watch = new LeaseSetWatch({
      hub: this.hub,
      view: this.#view,
      logger: this.#log,
      stopping: () => this.#stopping,
      restarted: () => this.#wake(),
    });
    // Checks identity and timings now (a ConfigError), as every shard's elector will.
    this.#member = memberElector(options, this.hub, this.#view);
    this.#members = [this.identity];
    this.#quota = shardQuotas(this.shardCount, this.#members).get(this.identity) ?? 0;
  }

  /** The Lease name of shard `i`. */
  shardLease(i: number): string {
    return shardLeaseName(this.prefix, i);
  }

  /** Shards this replica holds now, ascending. */
  held(): number[] {
    return [...this.#slots.values()].filter((s) => s.isLeader).map((s) => s.shard).sort((a, b) => a - b);
  }

  /** Live members as seen now, sorted (this replica included while it runs). */
  members(): string[] {
    return [...this.#members];
  }

  /** How many shards this replica may hold now. */
  get quota(): number {
    return this.#quota;
  }

  /** Whether the shared watch is listed and watching. */
  get synced(): boolean {
    return this.hub.synced;
  }

  /**
   * Health as client-go's HealthzAdaptor judges it, per held shard: an error
   * message when this replica holds a shard it has not renewed for
   * leaseDuration + `graceMs`, else `undefined`.
   */
  check(graceMs = 20000): string | undefined {
    for (const slot of this.#slots.values()) {
      const e = slot.elector.check(graceMs);
      if (e) return `shard ${slot.shard}: ${e}`;
    }
    return undefined;
  }

  /** A snapshot of the set. */
  state(): ShardedLeaseSetState {
    return {
      set: `${this.namespace}/${this.prefix}`,
      identity: this.identity,
      shards: this.shardCount,
      members: this.members(),
      quota: this.#quota,
      held: this.held(),
    };
  }

  /** Every shard as this replica sees it, by index. */
  shards(): ShardState[] {
    return this.#counters.map((c, shard) => {
      const slot = this.#slots.get(shard);
      const st = slot?.elector.isLeader ? slot.elector.state() : undefined;
      return {
        shard,
        lease: `${this.namespace}/${this.shardLease(shard)}`,
        holderIdentity: this.#view.holder(this.shardLease(shard)),
        isLeader: !!st,
        fencingToken: st?.fencingToken,
        leadingSince: st?.leadingSince,
        ...c,
      };
    });
  }

  /**
   * Runs until `signal` aborts: keeps the member Lease, contends for and gives
   * up shards as the members change. On abort every shard's work is told to
   * stop and awaited, its Lease released, and the member Lease released; the
   * promise resolves after that.
   *
   * @throws {LeaseholdError} when called while a previous call still runs
   */
  async run(signal?: AbortSignal): Promise<void> {
    if (this.#running) throw new LeaseholdError("ShardedLeaseSet.run is already running");
    this.#running = true;
    this.#stopping = false;
    const stop = signal ?? new AbortController().signal;
    this.#watch.start();
    const memberStop = new AbortController();
    const member = this.#member ??= memberElector(this.#o, this.hub, this.#view);
    this.#member = undefined; // a new one for the next run
    const memberDone = member.run(memberStop.signal);
    const onStop = () => this.#wake();
    stop.addEventListener("abort", onStop);
    try {
      while (!stop.aborted) {
        const next = this.#reconcile();
        await this.#sleep(next, stop);
      }
    } finally {
      stop.removeEventListener("abort", onStop);
      this.#stopping = true;
      this.#log.info("stopping: giving up every shard and the member lease", { held: this.held() });
      memberStop.abort();
      // A contender whose write is unanswered stops once it is answered (a won
      // shard is then released like the others), not leaving a claim nobody renews.
      for (;;) {
        for (const s of this.#slots.values()) this.#giveUp(s, "shutdown");
        const waiting = [...this.#slots.values()].filter((s) => !s.givingUp);
        if (!waiting.length) break;
        await this.#sleep(this.#clock.now() + (this.#o.retryPeriod ?? 2000), new AbortController().signal);
      }
      await Promise.all([memberDone.catch(() => {}), ...[...this.#slots.values()].map((s) => s.done)]);
      await this.#watch.stop();
      this.#members = [];
      this.#quota = 0;
      this.#running = false;
      this.#changed();
    }
  }

  /** Times the shared watch was found stale (it missed this replica's own write) and opened again. */
  get watchRestarts(): number {
    return this.#watch.restarts;
  }

  /** One balancing step; returns when to look again (monotonic ms). */
  #reconcile(): number {
    const now = this.#clock.now();
    const { live, nextExpiry } = this.#view.liveMembers(this.prefix, this.identity, now);
    const members = [...live].sort();
    const quota = shardQuotas(this.shardCount, members).get(this.identity) ?? 0;
    const changed = quota !== this.#quota || members.join("\n") !== this.#members.join("\n");
    this.#members = members;
    this.#quota = quota;
    if (changed) this.#log.info("shard quota", { quota, members: members.length });
    const retry = this.#o.retryPeriod ?? 2000;
    this.#watch.check(now, retry);
    if (!this.#view.listed) return now + retry;
    const set = { identity: this.identity, prefix: this.prefix, shardCount: this.shardCount, view: this.#view };
    balanceShards({ ...set, members, live, quota, now, stopping: this.#stopping, slots: this.#slots }, {
      giveUp: (slot, why) => this.#giveUp(slot, why),
      shed: (slot) => {
        this.#counters[slot.shard].givenUpTotal++;
        this.#giveUp(slot, "over quota");
      },
      contend: (shard) => this.#contend(shard),
    });
    return Math.min(nextExpiry, now + retry);
  }

  #contend(shard: number): void {
    const name = this.shardLease(shard);
    const counters = this.#counters[shard];
    const o = this.#o;
    const slot: ShardSlot = new ShardSlot(shard, pickElectorOptions(o), {
      api: this.hub.api(o.leaseApi(name)),
      read: (r) => this.#view.fresh(name, r),
      work: o.onStartedLeading ? (ctx) => o.onStartedLeading!(shard, ctx) : undefined,
      log: this.#log,
      wake: () => this.#wake(),
      started: (fencingToken) => {
        counters.startedTotal++;
        this.#log.info("holding shard", { shard, fencingToken: fencingToken.value });
        this.dispatchEvent(new CustomEvent("started", { detail: { shard, fencingToken } }));
        this.#wake();
      },
      stopped: (reason, givenUp) => {
        const why = givenUp && !this.#stopping ? "given-up" : reason;
        if (why !== "given-up" && reason !== "shutdown") counters.lostTotal++;
        this.#log.info("stopped holding shard", { shard, reason: why });
        try {
          o.onStoppedLeading?.(shard, why);
        } catch (err) {
          this.#log.error("onStoppedLeading callback threw", {
            error: err instanceof Error ? err.message : String(err),
          });
        }
        this.dispatchEvent(new CustomEvent("stopped", { detail: { shard, reason: why } }));
        this.#wake();
      },
      released: () => this.dispatchEvent(new CustomEvent("released", { detail: { shard } })),
      free: () => {
        if (this.#slots.get(shard) === slot) this.#slots.delete(shard);
        this.#wake();
      },
    });
    this.#slots.set(shard, slot);
  }

  /** Asks a slot to stop; false while it cannot yet (see {@linkcode ShardSlot.giveUp}). */
  #giveUp(slot: ShardSlot, why: string): boolean {
    const leading = slot.isLeader && !slot.givingUp;
    if (!slot.giveUp()) return false;
    if (leading) this.#log.info("giving up shard", { shard: slot.shard, why });
    return true;
  }

  // ---- waiting ---------------------------------------------------------------

  #wake(): void {
    this.#requeue.trigger();
  }

  #changed(): void {
    this.dispatchEvent(new Event("change"));
  }

  #sleep(until: number, stop: AbortSignal): Promise<void> {
    this.#changed();
    return this.#requeue.wait(until, stop);
  }
}
