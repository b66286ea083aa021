/**
 * Joining abort signals without `AbortSignal.any`, whose dependent signals
 * Node 20 keeps alive for as long as the long-lived source signal lives.
 *
 * @module
 */

/**
 * The abort reason of a timer or link cancelled because its operation ended.
 * Made once: `abort()` without a reason builds a new `DOMException` (and its
 * stack) every time, at every request.
 *
 * @example Usage
 * ```ts
 * import { ENDED } from "./signal.ts";
 * const timer = new AbortController();
 * timer.abort(ENDED);
 * console.log(timer.signal.reason === ENDED); // true
 * ```
 */
export const ENDED: DOMException = new DOMException("the operation ended", "AbortError");

/** A signal that aborts when any source does, and a `dispose` that unlinks it. */
export interface LinkedSignal {
  /** Aborts with the first source's reason. */
  signal: AbortSignal;
  /** Removes the listeners from the sources; call it when the operation ends. */
  dispose(): void;
}

/**
 * Links `sources` into one signal; `dispose()` removes every listener again.
 *
 * @example Usage
 * ```ts
 * import { linkSignals } from "./signal.ts";
 * const a = new AbortController();
 * const linked = linkSignals([a.signal]);
 * a.abort();
 * console.log(linked.signal.aborted); // true
 * linked.dispose();
 * ```
 */
export function linkSignals(sources: (AbortSignal | undefined)[]): LinkedSignal {
  const ctl = new AbortController();
  const hooked: [AbortSignal, () => void][] = [];
  const dispose = () => {
    for (const [s, fn] of hooked) s.removeEventListener("abort", fn);
    hooked.length = 0;
  };
  for (const s of sources) {
    if (!s) continue;
    if (s.aborted) {
      ctl.abort(s.reason);
      dispose();
      break;
    }
    const fn = () => {
      ctl.abort(s.reason);
      dispose();
    };
    s.addEventListener("abort", fn, { once: true });
    hooked.push([s, fn]);
  }
  return { signal: ctl.signal, dispose };
}
