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
import type { FencingToken, StopReason } from "./elector.ts";
import { ConfigError, LeaseholdError } from "./errors.ts";
import type { Lease } from "./lease.ts";
import { KubeLeaseApi } from "./lease_api.ts";
import { kubeLeaseListSource, LeaseWatchHub } from "./lease_hub.ts";
import type { KubeClient } from "./kube_client.ts";
import { type Logger, silentLogger } from "./log.ts";
import {
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

export {
  MAX_SHARDS,
  memberLeaseName,
  SHARD_SET_LABEL,
  type ShardedLeaseSetOptions,
  type ShardedLeaseSetState,
  shardQuotas,
  type ShardState,
  validateShardedLeaseSetOptions,
} from "./lease_set_rules.ts";

interface Slot {
  shard: number;
  elector: LeaderElector;
  stop: AbortController;
  /** The elector's run ended (after at most the term's grace for its work). */
  done: Promise<void>;
  /** The last term's work, until it settled: no new elector for the shard before. */
  work: Promise<unknown>;
  givingUp: boolean;
  /** Writes to the shard's Lease not yet answered: a contender is not stopped while one may still land. */
  writing: number;
  /** A write of this contender made it the holder: it is about to lead (or adopts that write at its next attempt). */
  won: boolean;
}

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
  #slots = new Map<number, Slot>();
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
    this.#member = this.#elector(this.memberLease, {});
    this.#members = [this.identity];
    this.#quota = shardQuotas(this.shardCount, this.#members).get(this.identity) ?? 0;
  }

  /** The Lease name of shard `i`. */
  shardLease(i: number): string {
    return `${this.prefix}-${i}`;
  }

  /** Shards this replica holds now, ascending. */
  held(): number[] {
    return [...this.#slots.values()].filter((s) => s.elector.isLeader).map((s) => s.shard).sort((a, b) => a - b);
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
    const member = this.#member ??= this.#elector(this.memberLease, {});
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
    const leading = active.filter((s) => s.elector.isLeader);
    let contending = active.filter((s) => !s.elector.isLeader && !s.elector.workSettling);
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
    let room = -surplus;
    if (room > 0 && !this.#stopping) {
      const free: number[] = [], orphaned: number[] = [];
      for (let i = 0; i < this.shardCount; i++) {
        if (this.#slots.has(i)) continue;
        const seen = this.#view.seen.get(this.shardLease(i));
        if (!seen || seen.holder === "") free.push(i);
        // Held by a replica that is gone, or by this one without an elector (a write
        // that landed after its elector stopped), or unchanged past its duration:
        // each shard's own elector waits the claim out before it takes it.
        else if (seen.holder === this.identity || !live.has(seen.holder) || this.#view.expired(seen, now)) {
          orphaned.push(i);
        }
      }
      const byScore = (a: number, b: number) => this.#score(b) - this.#score(a);
      for (const i of [...free.sort(byScore), ...orphaned.sort(byScore)]) {
        if (room <= 0) break;
        this.#contend(i);
        room--;
      }
    }
    return Math.min(nextExpiry, now + retry);
  }

  #elector(name: string, hooks: { shard?: number; slot?: Slot }): LeaderElector {
    const o = this.#o;
    const shard = hooks.shard;
    const slot = hooks.slot;
    const api = this.hub.api(o.leaseApi(name));
    const track = <T>(p: Promise<T>): Promise<T> => {
      if (!slot) {
        // The member Lease: only this replica writes it, so each write must come back on the watch.
        p.then((l) => this.#view.ownWrite(name, l as Lease | undefined), () => {});
        return p;
      }
      slot.writing++;
      p.then((l) => {
        if ((l as Lease | undefined)?.spec?.holderIdentity === o.identity) slot.won = true;
      }, () => {});
      return p.finally(() => {
        slot.writing--;
        this.#wake();
      });
    };
    return new LeaderElector({
      lease: {
        namespace: api.namespace,
        name: api.name,
        get: (signal) => this.#view.fresh(name, api.get(signal)),
        create: (lease, signal) => track(api.create(lease, signal)),
        update: (lease, signal) => track(api.update(lease, signal)),
        watch: api.watch ? (rv, signal) => api.watch!(rv, signal) : undefined,
      },
      identity: o.identity,
      leaseDuration: o.leaseDuration,
      renewDeadline: o.renewDeadline,
      retryPeriod: o.retryPeriod,
      releaseOnCancel: true,
      recontend: shard === undefined,
      clock: o.clock,
      logger: o.logger,
      random: o.random,
      onStartedLeading: shard === undefined || !o.onStartedLeading || !slot ? undefined : (ctx) => {
        const work = (async () => await o.onStartedLeading!(shard, ctx))();
        slot.work = work.catch(() => {});
        return work;
      },
    });
  }

  #contend(shard: number): void {
    const stop = new AbortController();
    const slot = {
      shard,
      stop,
      givingUp: false,
      done: Promise.resolve(),
      work: Promise.resolve(),
      writing: 0,
      won: false,
    } as Slot;
    const elector = slot.elector = this.#elector(this.shardLease(shard), { shard, slot });
    const counters = this.#counters[shard];
    elector.addEventListener("started", (e) => {
      counters.startedTotal++;
      this.#log.info("holding shard", { shard, fencingToken: (e as CustomEvent<FencingToken>).detail.value });
      this.dispatchEvent(new CustomEvent("started", { detail: { shard, fencingToken: (e as CustomEvent).detail } }));
      this.#wake();
    });
    elector.addEventListener("stopped", (e) => {
      const reason = (e as CustomEvent<StopReason>).detail;
      const why = slot.givingUp && !this.#stopping ? "given-up" : reason;
      if (why !== "given-up" && reason !== "shutdown") counters.lostTotal++;
      this.#log.info("stopped holding shard", { shard, reason: why });
      try {
        this.#o.onStoppedLeading?.(shard, why);
      } catch (err) {
        this.#log.error("onStoppedLeading callback threw", { error: err instanceof Error ? err.message : String(err) });
      }
      this.dispatchEvent(new CustomEvent("stopped", { detail: { shard, reason: why } }));
      this.#wake();
    });
    elector.addEventListener("released", () => {
      this.dispatchEvent(new CustomEvent("released", { detail: { shard } }));
    });
    slot.done = elector.run(stop.signal).catch((e) => {
      this.#log.error("shard election failed", { shard, error: e instanceof Error ? e.message : String(e) });
    });
    // The slot (and so the shard, for this replica) is free only once the last
    // term's work settled: a new elector knows nothing of a term before it, and
    // the elector's run ends after at most the term's grace even if the work runs on.
    slot.done.then(() => slot.work).finally(() => {
      if (this.#slots.get(shard) === slot) this.#slots.delete(shard);
      this.#wake();
    });
    this.#slots.set(shard, slot);
  }

  /**
   * Stops a slot (a leader releases after its work settled). False for a
   * contender whose write is unanswered or made it the holder: stopped now, its
   * elector would drop an acquisition that landed and leave a claim nobody
   * renews (others would wait it out); it leads first and is then given up.
   */
  #giveUp(slot: Slot, why: string): boolean {
    if (slot.givingUp) return true;
    if (!slot.elector.isLeader && (slot.writing > 0 || slot.won)) return false;
    slot.givingUp = true;
    if (slot.elector.isLeader) this.#log.info("giving up shard", { shard: slot.shard, why });
    slot.stop.abort();
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

/** Options of {@linkcode kubeShardedLeaseSet}: those of the set without the Lease access. */
export type KubeShardedLeaseSetOptions = Omit<ShardedLeaseSetOptions, "leaseApi" | "source"> & {
  /** A watch silent for this long is ended and opened again. @default 90000 */
  watchIdleTimeoutMs?: number;
};

/**
 * A {@linkcode ShardedLeaseSet} against a real API server, every request
 * through `client` (one connection): per-Lease reads and writes, and one
 * LIST + WATCH of the set's labelled Leases. RBAC: get, create, update, list
 * and watch on leases in the namespace.
 *
 * @example Usage
 * ```ts ignore
 * import { inClusterConfig, KubeClient, kubeShardedLeaseSet } from "@leasehold/leasehold";
 * const client = new KubeClient(await inClusterConfig());
 * const set = kubeShardedLeaseSet(client, {
 *   namespace: "default",
 *   prefix: "work",
 *   shards: 16,
 *   identity: Deno.env.get("POD_NAME")!,
 *   onStartedLeading: async (shard, { signal, fencingToken }) => {
 *     while (!signal.aborted) await processShard(shard, fencingToken, signal);
 *   },
 * });
 * await set.run(stopSignal);
 * ```
 */
export function kubeShardedLeaseSet(client: KubeClient, options: KubeShardedLeaseSetOptions): ShardedLeaseSet {
  const label = { key: SHARD_SET_LABEL, value: options.prefix };
  const idle = { watchIdleTimeoutMs: options.watchIdleTimeoutMs };
  return new ShardedLeaseSet({
    ...options,
    leaseApi: (name) => new KubeLeaseApi(client, options.namespace, name, idle),
    source: kubeLeaseListSource(client, options.namespace, label, idle),
  });
}
