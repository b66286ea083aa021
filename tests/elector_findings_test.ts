// Elector regression tests for reproduced bugs: each test here failed on the code
// before its fix. A manual clock and the in-memory Lease store keep them deterministic.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ConfigError,
  KubeApiError,
  type LeaderContext,
  LeaderElector,
  type LeaderElectorOptions,
  type Lease,
  type LeaseApi,
  type LeaseWatchEvent,
  ManualClock,
  type MemoryLeaseApi,
  MemoryLeaseStore,
  settle,
  type StopReason,
} from "../mod.ts";

const NS = "default";
const NAME = "findings-lease";

interface Term {
  start: number;
  end?: number;
  token: string;
  signal: AbortSignal;
}

interface Replica {
  elector: LeaderElector;
  api: MemoryLeaseApi;
  stop: AbortController;
  done: Promise<void>;
  events: string[];
  terms: Term[];
}

function replica(
  store: MemoryLeaseStore,
  clock: ManualClock,
  identity: string,
  extra: Partial<LeaderElectorOptions> = {},
  lease?: LeaseApi,
): Replica {
  const api = store.api(NS, NAME);
  const events: string[] = [];
  const terms: Term[] = [];
  const stop = new AbortController();
  const elector = new LeaderElector({
    lease: lease ?? api,
    identity,
    clock,
    random: () => 0.5,
    onStartedLeading: async ({ signal, fencingToken }: LeaderContext) => {
      const term: Term = { start: clock.now(), token: fencingToken.value, signal };
      terms.push(term);
      events.push("started");
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      term.end = clock.now();
    },
    onStoppedLeading: (reason: StopReason) => events.push(`stopped:${reason}`),
    onNewLeader: (id: string) => events.push(`leader:${id}`),
    ...extra,
  });
  const done = elector.run(stop.signal);
  return { elector, api, stop, done, events, terms };
}

/** Advances the clock in steps until `pred` holds; fails after `maxMs` of clock time. */
async function until(clock: ManualClock, pred: () => boolean, maxMs = 60000, step = 100): Promise<number> {
  const start = clock.now();
  await settle();
  while (!pred()) {
    if (clock.now() - start > maxMs) throw new Error(`condition not met within ${maxMs} ms of clock time`);
    await clock.advance(step);
  }
  return clock.now() - start;
}

async function shutdown(clock: ManualClock, ...rs: Replica[]) {
  for (const r of rs) r.stop.abort();
  let finished = false;
  Promise.all(rs.map((r) => r.done)).then(() => (finished = true));
  await until(clock, () => finished, 60000, 500);
}

function apiError(code: number, reason: string, retryAfterSeconds?: number): KubeApiError {
  return new KubeApiError(`${code} ${reason}`, {
    code,
    reason: reason as never,
    method: "PUT",
    url: "memory://",
    retryAfterSeconds,
  });
}

/**
 * A LeaseApi around a MemoryLeaseApi with hooks: what each call does can be
 * replaced, including calls that never return and ignore their signal.
 */
class HookedApi implements LeaseApi {
  readonly namespace = NS;
  readonly name = NAME;
  readonly inner: MemoryLeaseApi;
  readonly calls: Record<string, number> = {};
  onGet?: (signal?: AbortSignal) => Promise<Lease | undefined>;
  onCreate?: (lease: Lease, signal?: AbortSignal) => Promise<Lease>;
  onUpdate?: (lease: Lease, signal?: AbortSignal) => Promise<Lease>;
  onWatch?: (rv: string | undefined, signal: AbortSignal) => AsyncIterable<LeaseWatchEvent>;
  constructor(inner: MemoryLeaseApi) {
    this.inner = inner;
  }
  #count(v: string) {
    this.calls[v] = (this.calls[v] ?? 0) + 1;
  }
  get(signal?: AbortSignal): Promise<Lease | undefined> {
    this.#count("get");
    return this.onGet ? this.onGet(signal) : this.inner.get(signal);
  }
  create(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    this.#count("create");
    return this.onCreate ? this.onCreate(lease, signal) : this.inner.create(lease, signal);
  }
  update(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    this.#count("update");
    return this.onUpdate ? this.onUpdate(lease, signal) : this.inner.update(lease, signal);
  }
  watch(rv: string | undefined, signal: AbortSignal): AsyncIterable<LeaseWatchEvent> {
    this.#count("watch");
    return this.onWatch ? this.onWatch(rv, signal) : this.inner.watch(rv, signal);
  }
}

const never = <T>() => new Promise<T>(() => {});

// ---- issue 9, finding 1: fractional lease durations ------------------------------

test("a leaseDuration that is not whole seconds is refused with a ConfigError naming the fix", () => {
  const api = new MemoryLeaseStore().api(NS, NAME);
  for (const leaseDuration of [1500, 15500, 2000.5]) {
    assert.throws(
      () => new LeaderElector({ lease: api, identity: "a", leaseDuration, renewDeadline: 1400, retryPeriod: 500 }),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match((e as Error).message, /whole number of seconds/);
        assert.match((e as Error).message, /--lease-duration \d+s/);
        return true;
      },
    );
  }
  // Whole seconds stay accepted.
  new LeaderElector({ lease: api, identity: "a", leaseDuration: 2000, renewDeadline: 1400, retryPeriod: 500 });
});
