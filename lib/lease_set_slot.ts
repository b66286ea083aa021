/**
 * One shard a replica of a sharded lease set contends for or holds: its own
 * {@linkcode LeaderElector} (one term, then the slot ends), the writes it has
 * on their way, and the last term's work, which must settle before the
 * replica may contend for the shard again.
 *
 * @module
 */

import { LeaderElector } from "./elector.ts";
import type { FencingToken, LeaderContext, StopReason } from "./elector.ts";
import type { Lease } from "./lease.ts";
import type { LeaseApi } from "./lease_api.ts";
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

/** Timings and identity shared by every elector of a set. */
export interface SetElectorOptions {
  /** This replica's identity. */
  identity: string;
  /** Lease duration in ms. */
  leaseDuration?: number;
  /** Renew deadline in ms. */
  renewDeadline?: number;
  /** Retry period in ms. */
  retryPeriod?: number;
  /** Time source. */
  clock?: Clock;
  /** Logger. */
  logger?: Logger;
  /** Random numbers in [0, 1). */
  random?: () => number;
}

/**
 * The elector settings of `o` alone (a set's options carry more, such as its
 * per-shard callbacks, which no single elector must see).
 *
 * @example Usage
 * ```ts
 * import { pickElectorOptions } from "./lease_set_slot.ts";
 * const setOptions = { identity: "a", retryPeriod: 1000, prefix: "work" };
 * console.log(Object.keys(pickElectorOptions(setOptions)).includes("prefix")); // false
 * ```
 */
export function pickElectorOptions(o: SetElectorOptions): SetElectorOptions {
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

/**
 * `api` with its reads passed through `read` and its writes reported to
 * `wrote` (the write's promise, before the caller sees it settle).
 *
 * @example Usage
 * ```ts
 * import { MemoryLeaseApi } from "@leasehold/leasehold";
 * import { watchedLeaseApi } from "./lease_set_slot.ts";
 * let writes = 0;
 * const api = watchedLeaseApi(new MemoryLeaseApi("default", "x"), (r) => r, (p) => (writes++, p));
 * await api.create({ metadata: {}, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } });
 * console.log(writes); // 1
 * ```
 */
export function watchedLeaseApi(
  api: LeaseApi,
  read: (p: Promise<Lease | undefined>) => Promise<Lease | undefined>,
  wrote: (p: Promise<Lease>) => Promise<Lease>,
): LeaseApi {
  return {
    namespace: api.namespace,
    name: api.name,
    get: (signal) => read(api.get(signal)),
    create: (lease, signal) => wrote(api.create(lease, signal)),
    update: (lease, signal) => wrote(api.update(lease, signal)),
    watch: api.watch ? (rv, signal) => api.watch!(rv, signal) : undefined,
    clock: api.clock,
  };
}

/** What a {@linkcode ShardSlot} reports to its set. */
export interface SlotHooks {
  /** The shard's Lease API (the set's shared watch behind it). */
  api: LeaseApi;
  /** Passes a read through the set's view (see `LeaseSetView.fresh`). */
  read: (p: Promise<Lease | undefined>) => Promise<Lease | undefined>;
  /** The shard's work. */
  work?: (ctx: LeaderContext) => void | Promise<unknown>;
  /** A term started. */
  started: (token: FencingToken) => void;
  /** A term ended: given up by the set, or for `reason`. */
  stopped: (reason: StopReason, givenUp: boolean) => void;
  /** The Lease was released after the term. */
  released: () => void;
  /** Something changed that the set should look at (a write answered). */
  wake: () => void;
  /** The slot is over: the elector ended and the last work settled. */
  free: () => void;
  /** Logger. */
  log: Logger;
}

/**
 * One shard's elector for one term, as a slot of a sharded lease set.
 *
 * @example Usage
 * ```ts
 * import { MemoryLeaseApi, silentLogger } from "@leasehold/leasehold";
 * import { ShardSlot } from "./lease_set_slot.ts";
 * const slot = new ShardSlot(0, { identity: "a" }, {
 *   api: new MemoryLeaseApi("default", "work-0"), read: (r) => r, log: silentLogger,
 *   started() {}, stopped() {}, released() {}, wake() {}, free() {},
 * });
 * slot.giveUp(); // nothing written yet: stops at once
 * await slot.done;
 * ```
 */
export class ShardSlot {
  /** The shard's index. */
  readonly shard: number;
  /** The shard's elector. */
  readonly elector: LeaderElector;
  /** The elector's run ended (after at most the term's grace for its work). */
  readonly done: Promise<void>;
  /** The set asked it to stop. */
  givingUp = false;
  /** Writes to the shard's Lease not yet answered. */
  writing = 0;
  /** A write of this slot made it the holder: it is about to lead (or adopts that write at its next attempt). */
  won = false;
  #stop = new AbortController();
  #work: Promise<unknown> = Promise.resolve();

  /** Creates the slot and starts its elector. */
  constructor(shard: number, o: SetElectorOptions, hooks: SlotHooks) {
    this.shard = shard;
    const wrote = (p: Promise<Lease>) => {
      this.writing++;
      p.then((l) => {
        if (l?.spec?.holderIdentity === o.identity) this.won = true;
      }, () => {});
      return p.finally(() => {
        this.writing--;
        hooks.wake();
      });
    };
    const work = hooks.work;
    this.elector = new LeaderElector({
      ...o,
      lease: watchedLeaseApi(hooks.api, hooks.read, wrote),
      releaseOnCancel: true,
      recontend: false,
      onStartedLeading: work
        ? (ctx) => {
          const w = (async () => await work(ctx))();
          this.#work = w.catch(() => {});
          return w;
        }
        : undefined,
    });
    this.elector.addEventListener("started", (e) => hooks.started((e as CustomEvent<FencingToken>).detail));
    this.elector.addEventListener(
      "stopped",
      (e) => hooks.stopped((e as CustomEvent<StopReason>).detail, this.givingUp),
    );
    this.elector.addEventListener("released", () => hooks.released());
    this.done = this.elector.run(this.#stop.signal).catch((e) => {
      hooks.log.error("shard election failed", { shard, error: e instanceof Error ? e.message : String(e) });
    });
    // The slot (and so the shard, for this replica) is free only once the last
    // term's work settled: a new elector knows nothing of a term before it, and
    // the elector's run ends after at most the term's grace even if the work runs on.
    this.done.then(() => this.#work).finally(() => hooks.free());
  }

  /** Whether it holds the shard now. */
  get isLeader(): boolean {
    return this.elector.isLeader;
  }

  /**
   * Stops the slot (a leader releases after its work settled). False for a
   * contender whose write is unanswered or made it the holder: stopped now, its
   * elector would drop an acquisition that landed and leave a claim nobody
   * renews (others would wait it out); it leads first and is then given up.
   */
  giveUp(): boolean {
    if (this.givingUp) return true;
    if (!this.elector.isLeader && (this.writing > 0 || this.won)) return false;
    this.givingUp = true;
    this.#stop.abort();
    return true;
  }
}
