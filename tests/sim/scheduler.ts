// One virtual time line for the whole simulation. An event is a function run at a
// true (virtual) time; after each event the microtask queue is drained to
// quiescence (one macrotask turn: nothing in the simulation uses real timers), so
// the code it woke runs to its next wait before the next event. A "step" is one
// such event.

/** Something that can die (a crashed process): its pending events are dropped. */
export interface Owner {
  alive: boolean;
}

interface Ev {
  at: number;
  seq: number;
  fn: () => void;
  owner?: Owner;
  cancelled: boolean;
}

/** A handle to cancel a scheduled event. */
export interface Scheduled {
  cancel(): void;
  readonly at: number;
}

const drain: () => Promise<void> = (() => {
  const si = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  if (si) return () => new Promise<void>((r) => si(r));
  const mc = new MessageChannel();
  const waiting: (() => void)[] = [];
  mc.port1.onmessage = () => waiting.shift()?.();
  return () =>
    new Promise<void>((r) => {
      waiting.push(r);
      mc.port2.postMessage(0);
    });
})();

/** Lets every pending promise job run (the whole microtask queue). */
export function quiesce(): Promise<void> {
  return drain();
}

export class Scheduler {
  /** True time in ms. */
  now = 0;
  /** Events run so far. */
  steps = 0;
  #heap: Ev[] = [];
  #seq = 0;

  get size(): number {
    return this.#heap.length;
  }

  at(t: number, fn: () => void, owner?: Owner): Scheduled {
    const ev: Ev = { at: Math.max(t, this.now), seq: this.#seq++, fn, owner, cancelled: false };
    this.#push(ev);
    return {
      at: ev.at,
      cancel: () => {
        ev.cancelled = true;
      },
    };
  }

  after(dt: number, fn: () => void, owner?: Owner): Scheduled {
    return this.at(this.now + Math.max(0, dt), fn, owner);
  }

  /** Time of the next live event, or undefined. */
  peekTime(): number | undefined {
    while (this.#heap.length) {
      const e = this.#heap[0];
      if (e.cancelled || (e.owner && !e.owner.alive)) {
        this.#pop();
        continue;
      }
      return e.at;
    }
    return undefined;
  }

  /**
   * Runs the next event due at or before `until` and drains microtasks.
   * Returns false when there is none.
   */
  async step(until: number): Promise<boolean> {
    const t = this.peekTime();
    if (t === undefined || t > until) return false;
    const e = this.#pop()!;
    this.now = e.at;
    this.steps++;
    e.fn();
    await drain();
    return true;
  }

  #push(e: Ev) {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p], e)) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = e;
  }

  #pop(): Ev | undefined {
    const h = this.#heap;
    if (!h.length) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length) {
      let i = 0;
      const n = h.length;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        let mv = last;
        if (l < n && less(h[l], mv)) {
          m = l;
          mv = h[l];
        }
        if (r < n && less(h[r], mv)) {
          m = r;
          mv = h[r];
        }
        if (m === i) break;
        h[i] = h[m];
        i = m;
      }
      h[i] = last;
    }
    return top;
  }
}

function less(a: Ev, b: Ev): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
