/**
 * Time, injectable. Expiry is judged with {@linkcode Clock.now} (monotonic) only;
 * {@linkcode Clock.wallTime} only fills the Lease's timestamps.
 *
 * @module
 */

/** The elector's view of time. */
export interface Clock {
  /** Monotonic milliseconds from an arbitrary origin (like `performance.now()`). */
  now(): number;
  /** Wall-clock time, written into `acquireTime` and `renewTime`. Never compared. */
  wallTime(): Date;
  /** Resolves after `ms`; rejects with `signal.reason` when the signal aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * The longest delay a JavaScript timer honours: `setTimeout` fires at once for
 * anything above 2^31 - 1 ms (about 24.8 days).
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A delay that is safe to schedule: clamped to `[min, max]`, with NaN and
 * non-numbers read as `min`. Pass a `min` above zero wherever a zero delay
 * could repeat in a loop.
 *
 * @example Usage
 * ```ts
 * import { clampDelay, MAX_TIMER_MS } from "@leasehold/leasehold";
 * console.log(clampDelay(-5)); // 0
 * console.log(clampDelay(NaN, 100)); // 100
 * console.log(clampDelay(1e15) === MAX_TIMER_MS); // true
 * ```
 */
export function clampDelay(ms: number, min = 0, max: number = MAX_TIMER_MS): number {
  if (typeof ms !== "number" || Number.isNaN(ms)) return min;
  return Math.min(Math.max(ms, min), max);
}

/**
 * The real clock: `performance.now()`, `new Date()` and `setTimeout`. A sleep
 * longer than {@linkcode MAX_TIMER_MS} is split into several timers (one timer
 * would fire at once); NaN and negative sleeps end at the next turn.
 *
 * @example Usage
 * ```ts
 * import { systemClock } from "@leasehold/leasehold";
 * const t0 = systemClock.now();
 * await systemClock.sleep(1);
 * console.log(systemClock.now() >= t0); // true
 * ```
 */
export const systemClock: Clock = {
  now: () => performance.now(),
  wallTime: () => new Date(),
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const deadline = performance.now() + clampDelay(ms, 0, Infinity);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      const arm = () => {
        const left = deadline - performance.now();
        if (left <= 0 && timer !== undefined) {
          signal?.removeEventListener("abort", onAbort);
          return resolve();
        }
        timer = setTimeout(arm, clampDelay(left));
      };
      arm();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
};

interface Sleeper {
  at: number;
  seq: number;
  resolve: () => void;
}

/**
 * A clock that moves only when told to, for deterministic tests of timing logic.
 * `wallTime()` starts at `wallStart` and moves with `now()`, plus any `skewWall` offset.
 *
 * @example Usage
 * ```ts
 * import { ManualClock } from "@leasehold/leasehold";
 * const clock = new ManualClock();
 * let woke = false;
 * clock.sleep(1000).then(() => (woke = true));
 * await clock.advance(1000);
 * console.log(woke); // true
 * ```
 */
export class ManualClock implements Clock {
  #now = 0;
  #seq = 0;
  #wallStart: number;
  #wallOffset = 0;
  #sleepers: Sleeper[] = [];

  /** Creates a clock at monotonic 0 and the given wall time. */
  constructor(wallStart: Date = new Date("2026-01-01T00:00:00.000Z")) {
    this.#wallStart = wallStart.getTime();
  }

  /** Current monotonic time in ms. */
  now(): number {
    return this.#now;
  }

  /** Current wall time: start + elapsed + skew. */
  wallTime(): Date {
    return new Date(this.#wallStart + this.#now + this.#wallOffset);
  }

  /** Moves only the wall clock (a clock jump); monotonic time is untouched. */
  skewWall(ms: number): void {
    this.#wallOffset += ms;
  }

  /** Number of pending sleeps. */
  get pending(): number {
    return this.#sleepers.length;
  }

  /** Monotonic time of the earliest pending sleep, if any. */
  get nextAt(): number | undefined {
    return this.#sleepers.length ? Math.min(...this.#sleepers.map((s) => s.at)) : undefined;
  }

  /** Resolves when `advance` moves past `now() + ms`. */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const s: Sleeper = { at: this.#now + clampDelay(ms, 0, Infinity), seq: this.#seq++, resolve: () => {} };
      const onAbort = () => {
        this.#sleepers = this.#sleepers.filter((x) => x !== s);
        reject(signal!.reason);
      };
      s.resolve = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      this.#sleepers.push(s);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Moves time forward by `ms`, waking sleepers in time order and letting the
   * code they resume run (to its next sleep or I/O) before moving on.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      this.#sleepers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.#sleepers[0];
      if (!next || next.at > target) break;
      this.#sleepers.shift();
      this.#now = Math.max(this.#now, next.at);
      next.resolve();
      await settle();
    }
    this.#now = target;
    await settle();
  }
}

/** Lets pending promise jobs and zero-delay timers run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await new Promise<void>((r) => setTimeout(r, 0));
  }
}
