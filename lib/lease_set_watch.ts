/**
 * The run of a sharded lease set's shared LIST + WATCH, listed and watched
 * again when it no longer delivers this replica's own writes back.
 *
 * @module
 */

import type { LeaseWatchHub } from "./lease_hub.ts";
import type { LeaseSetView } from "./lease_set_view.ts";
import type { Logger } from "./log.ts";

/** What a {@linkcode LeaseSetWatch} runs and reports to. */
export interface LeaseSetWatchOptions {
  /** The shared watch of the set's Leases. */
  hub: LeaseWatchHub;
  /** The view fed by the hub; it tells which own writes are not yet delivered back. */
  view: LeaseSetView;
  /** Logger. */
  logger: Logger;
  /** Whether the set is stopping: a stale watch is then not opened again. */
  stopping: () => boolean;
  /** The watch was opened again. */
  restarted: () => void;
}

/**
 * Runs the set's {@linkcode LeaseWatchHub} and opens it again when stale: a
 * stream that stays open but delivers nothing (a connection black-holed and
 * healed) would otherwise leave the replica's view of the members and shards
 * frozen until the watch's idle timeout.
 *
 * @example Usage
 * ```ts
 * import { LeaseWatchHub, ManualClock, MemoryLeaseStore, SHARD_SET_LABEL, silentLogger } from "@leasehold/leasehold";
 * import { LeaseSetView } from "./lease_set_view.ts";
 * import { LeaseSetWatch } from "./lease_set_watch.ts";
 * const clock = new ManualClock();
 * const label = { key: SHARD_SET_LABEL, value: "work" };
 * const view = new LeaseSetView({ clock, defaultDurationMs: 15000, onChange: () => {} });
 * const hub = new LeaseWatchHub({ source: view.tap(new MemoryLeaseStore().listSource("default", label)), label, clock });
 * const watch = new LeaseSetWatch({ hub, view, logger: silentLogger, stopping: () => false, restarted() {} });
 * watch.start();
 * watch.check(clock.now(), 2000); // nothing written yet: nothing to miss
 * await watch.stop();
 * console.log(watch.restarts); // 0
 * ```
 */
export class LeaseSetWatch {
  #o: LeaseSetWatchOptions;
  #stop = new AbortController();
  #done: Promise<void> = Promise.resolve();
  #restarting?: Promise<void>;
  #restarts = 0;

  /** Creates the runner; the hub runs from {@linkcode LeaseSetWatch.start}. */
  constructor(options: LeaseSetWatchOptions) {
    this.#o = options;
  }

  /** Times the watch was found stale and opened again. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Starts the hub, forgetting the own writes awaited by an earlier run. */
  start(): void {
    this.#o.view.clearUnechoed();
    this.#stop = new AbortController();
    this.#done = this.#o.hub.run(this.#stop.signal);
  }

  /**
   * Opens the watch again when a write of this replica's own member Lease has
   * not come back on it within max(2 × retryPeriod, 1 s) of `now`.
   */
  check(now: number, retryPeriod: number): void {
    const { hub, view } = this.#o;
    if (this.#restarting || this.#o.stopping() || !hub.synced) return;
    const oldest = view.oldestUnechoed();
    if (now - oldest <= Math.max(2 * retryPeriod, 1000)) return;
    this.#restarts++;
    this.#o.logger.warn("the shared lease watch missed this replica's own write; listing and watching again", {
      missedForMs: Math.round(now - oldest),
    });
    view.clearUnechoed();
    const old = this.#done;
    this.#stop.abort();
    this.#restarting = (async () => {
      await old.catch(() => {});
      if (!this.#o.stopping()) {
        this.#stop = new AbortController();
        this.#done = hub.run(this.#stop.signal);
      }
      this.#restarting = undefined;
      this.#o.restarted();
    })();
  }

  /** Stops the hub (after a reopening under way) and awaits its end. */
  async stop(): Promise<void> {
    await this.#restarting;
    this.#stop.abort();
    await this.#done.catch(() => {});
  }
}
