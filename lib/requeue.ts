/**
 * The wait of a reconcile loop between two passes: until the time the last
 * pass asked to look again (its requeue-after), or earlier when something it
 * watches changed.
 *
 * @module
 */

import type { Clock } from "./clock.ts";

/**
 * Sleeps a reconcile loop until its next pass is due or {@linkcode Requeue.trigger}
 * is called. A trigger that comes while no wait is under way is kept, so the
 * next wait ends at once: no change is missed between two passes.
 *
 * @example Usage
 * ```ts
 * import { ManualClock } from "@leasehold/leasehold";
 * import { Requeue } from "./requeue.ts";
 * const clock = new ManualClock();
 * const requeue = new Requeue(clock);
 * requeue.trigger(); // a change arrived during the pass
 * await requeue.wait(clock.now() + 60000, new AbortController().signal); // ends at once
 * ```
 */
export class Requeue {
  #clock: Clock;
  #kick?: () => void;
  #kicked = false;

  /** Creates a requeue on `clock` (monotonic time). */
  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Something changed: the wait under way, or else the next one, ends at once. */
  trigger(): void {
    this.#kicked = true;
    this.#kick?.();
  }

  /**
   * Waits until `until` (monotonic ms), a {@linkcode Requeue.trigger}, or
   * `stop` aborting; never rejects. After a trigger it still yields once, so
   * the other events of the same moment arrive before the next pass.
   */
  async wait(until: number, stop: AbortSignal): Promise<void> {
    if (this.#kicked) {
      this.#kicked = false;
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
