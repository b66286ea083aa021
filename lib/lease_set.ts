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
import { LeaderElector } from "./elector.ts";
import { ConfigError, LeaseholdError } from "./errors.ts";
import { LeaseWatchHub } from "./lease_hub.ts";
import { type Logger, silentLogger } from "./log.ts";
import {
  assignShards,
  fnv1a,
  memberLeaseName,
  SHARD_SET_LABEL,
  type ShardedLeaseSetOptions,
  type ShardedLeaseSetState,
  shardQuotas,
  type ShardState,
  validateShardedLeaseSetOptions,
} from "./lease_set_rules.ts";
import { LeaseSetView } from "./lease_set_view.ts";
import { ShardSlot, watchedLeaseApi } from "./lease_set_slot.ts";

export {
  assignShards,
  MAX_SHARDS,
  memberLeaseName,
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
  #hubStop = new AbortController();
  #hubDone: Promise<void> = Promise.resolve();
  #restarting?: Promise<void>;
  #watchRestarts = 0;
  #slots = new Map<number, ShardSlot>();
  #counters: ShardCounters[];
  #running = false;
  #stopping = false;
  #kick?: () => void;
  #kicked = false;
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
    // Checks identity and timings now (a ConfigError), as every shard's elector will.
    this.#member = this.#memberElector();
    this.#members = [this.identity];
    this.#quota = shardQuotas(this.shardCount, this.#members).get(this.identity) ?? 0;
  }

  /** The Lease name of shard `i`. */
  shardLease(i: number): string {
    return `${this.prefix}-${i}`;
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
    this.#view.clearUnechoed();
    this.#hubStop = new AbortController();
    this.#hubDone = this.hub.run(this.#hubStop.signal);
    const memberStop = new AbortController();
    const member = this.#member ??= this.#memberElector();
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
      await this.#restarting;
      this.#hubStop.abort();
      await this.#hubDone.catch(() => {});
      this.#members = [];
      this.#quota = 0;
      this.#running = false;
      this.#changed();
    }
  }

  // ---- balancing -------------------------------------------------------------

  /**
   * The shared watch is stale when a write of this replica's own member Lease
   * has not come back on it within max(2 × retryPeriod, 1 s): a stream that
   * stays open but delivers nothing (a connection black-holed and healed) would
   * otherwise leave this replica's view of the members and shards frozen until
   * the watch's idle timeout. It is listed and watched again.
   */
  #checkWatch(now: number, retry: number): void {
    if (this.#restarting || this.#stopping || !this.hub.synced) return;
    const oldest = this.#view.oldestUnechoed();
    const limit = Math.max(2 * retry, 1000);
    if (now - oldest <= limit) return;
    this.#watchRestarts++;
    this.#log.warn("the shared lease watch missed this replica's own write; listing and watching again", {
      missedForMs: Math.round(now - oldest),
    });
    this.#view.clearUnechoed();
    const old = this.#hubDone;
    this.#hubStop.abort();
    this.#restarting = (async () => {
      await old.catch(() => {});
      if (!this.#stopping) {
        this.#hubStop = new AbortController();
        this.#hubDone = this.hub.run(this.#hubStop.signal);
      }
      this.#restarting = undefined;
      this.#wake();
    })();
  }

  /** Times the shared watch was found stale and opened again. */
  get watchRestarts(): number {
    return this.#watchRestarts;
  }

  /** Rendezvous order: this replica's preference for a shard (higher first). */
  #score(shard: number): number {
    return fnv1a(`${this.identity}/${this.prefix}/${shard}`);
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
    this.#checkWatch(now, retry);
    if (!this.#view.listed) return now + retry;
    const active = [...this.#slots.values()].filter((s) => !s.givingUp);
    const leading = active.filter((s) => s.isLeader);
    let contending = active.filter((s) => !s.isLeader && !s.elector.workSettling);
    // A contender whose shard a live member (not this replica) now holds steps back.
    for (const s of contending) {
      const seen = this.#view.seen.get(this.shardLease(s.shard));
      if (
        seen && seen.holder && seen.holder !== this.identity && live.has(seen.holder) && !this.#view.expired(seen, now)
      ) {
        this.#giveUp(s, "held by a live member");
      }
    }
    contending = contending.filter((s) => !s.givingUp);
    // Over the share: give up the least preferred shards, contenders first. A
    // contender whose write is on its way keeps going until it is answered (it
    // may have won, and a won shard is then given up properly, released).
    let surplus = leading.length + contending.length - quota;
    for (const s of [...contending].sort((a, b) => this.#score(a.shard) - this.#score(b.shard))) {
      if (surplus <= 0) break;
      if (this.#giveUp(s, "over quota")) surplus--;
    }
    for (const s of [...leading].sort((a, b) => this.#score(a.shard) - this.#score(b.shard))) {
      if (surplus <= 0) break;
      this.#counters[s.shard].givenUpTotal++;
      this.#giveUp(s, "over quota");
      surplus--;
    }
    // Under the share: contend for free shards first, then those of holders that are gone.
    // Every replica assigns them the same way from what it sees (each to the live member
    // with room that scores it highest), so replicas seldom race for one shard: a loser's
    // next elector would start observing a claim afresh and wait it out again.
    let room = -surplus;
    if (room > 0 && !this.#stopping) {
      const free: number[] = [], orphaned: number[] = [];
      const heldBy = new Map<string, number>();
      for (let i = 0; i < this.shardCount; i++) {
        const seen = this.#view.seen.get(this.shardLease(i));
        if (!seen || seen.holder === "") free.push(i);
        // Held by a replica that is gone, or by this one without an elector (a write
        // that landed after its elector stopped), or unchanged past its duration:
        // each shard's own elector waits the claim out before it takes it.
        else if (
          (seen.holder === this.identity && !this.#slots.has(i)) || !live.has(seen.holder) ||
          this.#view.expired(seen, now)
        ) orphaned.push(i);
        else heldBy.set(seen.holder, (heldBy.get(seen.holder) ?? 0) + 1);
      }
      const assigned = assignShards(this.prefix, this.shardCount, members, [...free, ...orphaned], heldBy);
      for (const [i, m] of assigned) {
        if (m !== this.identity || this.#slots.has(i)) continue;
        if (room <= 0) break;
        this.#contend(i);
        room--;
      }
    }
    return Math.min(nextExpiry, now + retry);
  }

  /** The member Lease's elector: only this replica writes that Lease, so each write must come back on the watch. */
  #memberElector(): LeaderElector {
    const o = this.#o;
    const name = this.memberLease;
    return new LeaderElector({
      lease: watchedLeaseApi(this.hub.api(o.leaseApi(name)), (r) => r, (p) => {
        p.then((l) => this.#view.ownWrite(name, l), () => {});
        return p;
      }),
      ...this.#electorOptions(),
      releaseOnCancel: true,
    });
  }

  #electorOptions() {
    const o = this.#o;
    return {
      identity: o.identity,
      leaseDuration: o.leaseDuration,
      renewDeadline: o.renewDeadline,
      retryPeriod: o.retryPeriod,
      clock: o.clock,
      logger: o.logger,
      random: o.random,
    };
  }

  #contend(shard: number): void {
    const name = this.shardLease(shard);
    const counters = this.#counters[shard];
    const o = this.#o;
    const slot: ShardSlot = new ShardSlot(shard, this.#electorOptions(), {
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
    this.#kicked = true;
    this.#kick?.();
  }

  #changed(): void {
    this.dispatchEvent(new Event("change"));
  }

  async #sleep(until: number, stop: AbortSignal): Promise<void> {
    this.#changed();
    if (this.#kicked) {
      this.#kicked = false;
      // Let the events of the same moment arrive before looking again.
      await Promise.resolve();
      return;
    }
    const ctl = new AbortController();
    this.#kick = () => ctl.abort();
    const onStop = () => ctl.abort();
    stop.addEventListener("abort", onStop, { once: true });
    try {
      await this.#clock.sleep(Math.max(1, until - this.#clock.now()), ctl.signal);
    } catch {
      // woken
    } finally {
      stop.removeEventListener("abort", onStop);
      this.#kick = undefined;
      this.#kicked = false;
    }
  }
}
