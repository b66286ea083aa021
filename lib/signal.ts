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
  /** Aborts the linked signal itself with `reason` (unless it already was), then disposes. */
  abort(reason: unknown): void;
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
 * const own = linkSignals([new AbortController().signal]);
 * own.abort("done"); // aborts the linked signal alone, and unlinks it
 * console.log(own.signal.reason); // "done"
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
  return {
    signal: ctl.signal,
    dispose,
    abort(reason) {
      dispose();
      if (!ctl.signal.aborted) ctl.abort(reason);
    },
  };
}

/** The followers of each source signal, served by one listener on it. */
const followers = new WeakMap<AbortSignal, { fns: Set<() => void>; onAbort: () => void }>();

/**
 * A signal that aborts when `source` does, like `linkSignals([source])`, except
 * that all followers of one source share a single listener on it. Many electors
 * share the caller's signal: one listener each would make Node warn of a
 * possible leak past 10 of them, and make every add or remove slower. The shared
 * listener goes when the last follower is disposed.
 *
 * @example Usage
 * ```ts
 * import { followSignal } from "./signal.ts";
 * const source = new AbortController();
 * const a = followSignal(source.signal);
 * const b = followSignal(source.signal);
 * source.abort();
 * console.log(a.signal.aborted && b.signal.aborted); // true
 * ```
 */
export function followSignal(source: AbortSignal | undefined): LinkedSignal {
  const ctl = new AbortController();
  const abortOwn = (reason: unknown) => {
    if (!ctl.signal.aborted) ctl.abort(reason);
  };
  if (!source) return { signal: ctl.signal, dispose() {}, abort: abortOwn };
  if (source.aborted) {
    ctl.abort(source.reason);
    return { signal: ctl.signal, dispose() {}, abort: abortOwn };
  }
  let entry = followers.get(source);
  if (!entry) {
    const fns = new Set<() => void>();
    const onAbort = () => {
      followers.delete(source);
      for (const fn of [...fns]) fn();
      fns.clear();
    };
    entry = { fns, onAbort };
    followers.set(source, entry);
    source.addEventListener("abort", onAbort, { once: true });
  }
  const { fns } = entry;
  const fn = () => abortOwn(source.reason);
  fns.add(fn);
  const dispose = () => {
    if (!fns.delete(fn) || fns.size > 0) return;
    const e = followers.get(source);
    if (e?.fns !== fns) return;
    followers.delete(source);
    source.removeEventListener("abort", e.onAbort);
  };
  return {
    signal: ctl.signal,
    dispose,
    abort(reason) {
      dispose();
      abortOwn(reason);
    },
  };
}
