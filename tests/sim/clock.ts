// A replica's clock in the simulation: implements lib/clock.ts's Clock over the
// scheduler's true time, running at a rate that drifts within [1 - MAX_DRIFT, 1 + MAX_DRIFT].
// sleep() behaves like setTimeout: a delay that is NaN or above 2^31 - 1 ms fires
// after 1 ms (as Node does), a negative one at once.

import type { Clock } from "../../lib/clock.ts";
import type { Owner, Scheduled, Scheduler } from "./scheduler.ts";

/**
 * Documented bound of the simulation: a clock's rate stays within 1 % of true time.
 * (The library tolerates rate differences up to about leaseDuration / renewDeadline;
 * real quartz clocks and NTP slewing stay below 0.05 %.)
 */
export const MAX_DRIFT = 0.01;

interface Sleeper {
  localAt: number;
  ev: Scheduled;
  fire: () => void;
}

export class SimClock implements Clock {
  #sched: Scheduler;
  #owner: Owner;
  #anchorTrue: number;
  #anchorLocal: number;
  #rate: number;
  #wallBase: number;
  #sleepers = new Set<Sleeper>();
  /** A woken sleeper sees at least the time it asked for, despite float rounding. */
  #floor = -Infinity;
  /** Timer firings, for the spin check. */
  fired = 0;

  constructor(sched: Scheduler, owner: Owner, opts: { origin: number; rate: number; wallBase: number }) {
    this.#sched = sched;
    this.#owner = owner;
    this.#anchorTrue = sched.now;
    this.#anchorLocal = opts.origin;
    this.#rate = opts.rate;
    this.#wallBase = opts.wallBase;
  }

  get rate(): number {
    return this.#rate;
  }

  /** Pending sleeps (timers). */
  get pending(): number {
    return this.#sleepers.size;
  }

  now(): number {
    const t = this.#anchorLocal + (this.#sched.now - this.#anchorTrue) * this.#rate;
    return t > this.#floor ? t : this.#floor;
  }

  /** Wall time; not used for decisions by the elector. */
  wallTime(): Date {
    return new Date(this.#wallBase + this.now());
  }

  /** Jumps the wall clock (the monotonic clock is untouched). */
  jumpWall(ms: number): void {
    this.#wallBase += ms;
  }

  /** True time at which this clock reads `local`. */
  trueAt(local: number): number {
    return this.#anchorTrue + (local - this.#anchorLocal) / this.#rate;
  }

  setRate(rate: number): void {
    const local = this.now();
    this.#anchorTrue = this.#sched.now;
    this.#anchorLocal = local;
    this.#rate = rate;
    for (const s of this.#sleepers) {
      s.ev.cancel();
      s.ev = this.#sched.at(this.trueAt(s.localAt), s.fire, this.#owner);
    }
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      let d = Number(ms);
      if (Number.isNaN(d) || d > 2147483647) d = 1;
      if (d < 0) d = 0;
      const s: Sleeper = {
        localAt: this.now() + d,
        ev: undefined as unknown as Scheduled,
        fire: () => {
          this.#sleepers.delete(s);
          signal?.removeEventListener("abort", onAbort);
          if (s.localAt > this.#floor) this.#floor = s.localAt;
          this.fired++;
          resolve();
        },
      };
      const onAbort = () => {
        this.#sleepers.delete(s);
        s.ev.cancel();
        reject(signal!.reason);
      };
      s.ev = this.#sched.at(this.trueAt(s.localAt), s.fire, this.#owner);
      this.#sleepers.add(s);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}
