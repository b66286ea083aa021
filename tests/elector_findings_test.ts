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

/**
 * A ManualClock that records every sleep asked for and passes only sane values
 * on (so code that asks for NaN sleeps fails an assertion instead of hanging the test).
 */
class RecordingClock extends ManualClock {
  readonly asked: number[] = [];
  override sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.asked.push(ms);
    // NaN would loop forever on a manual clock: park it instead, the assertion reports it.
    return super.sleep(Number.isNaN(ms) ? 1e12 : ms, signal);
  }
  /** Sleeps asked for that are NaN, negative or above 2^31 - 1 ms. */
  get insane(): number[] {
    return this.asked.filter((ms) => !(ms >= 0 && ms <= 2 ** 31 - 1));
  }
}

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

// ---- issue 9, finding 9: Retry-After hints and durations are validated and clamped --------

// The server's JSON can carry anything in details.retryAfterSeconds: "soon" * 1000 is NaN.
const BAD_HINT = "soon" as unknown as number;

test("a Retry-After that is not a number does not make a follower spin", async () => {
  const clock = new RecordingClock();
  const store = new MemoryLeaseStore();
  let calls = 0;
  const a = replica(store, clock, "a", { watch: false });
  // After 100 calls the fault heals, so a spinning elector ends its spin and the test fails instead of hanging.
  a.api.fault = () => (++calls <= 100 ? apiError(429, "TooManyRequests", BAD_HINT) : undefined);
  await clock.advance(10000);
  assert.deepEqual(clock.insane, [], "sleeps of NaN or negative ms were scheduled");
  assert.ok(calls <= 5, `${calls} attempts in 10 s of clock time`);
  a.api.fault = undefined;
  await shutdown(clock, a);
});

test("a Retry-After that is not a number does not make a leader spin on its renewals", async () => {
  const clock = new RecordingClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await until(clock, () => a.elector.isLeader);
  let calls = 0;
  a.api.fault = () => (++calls <= 100 ? apiError(429, "TooManyRequests", BAD_HINT) : undefined);
  await clock.advance(4000);
  assert.deepEqual(clock.insane, [], "sleeps of NaN or negative ms were scheduled");
  assert.ok(calls <= 10, `${calls} renewal requests in 4 s of clock time`);
  a.api.fault = undefined;
  await shutdown(clock, a);
});

test("a huge Retry-After is cut to a bounded wait", async () => {
  const clock = new RecordingClock();
  const store = new MemoryLeaseStore();
  let calls = 0;
  const a = replica(store, clock, "a", { watch: false });
  a.api.fault = () => (++calls === 1 ? apiError(429, "TooManyRequests", 1e12) : undefined);
  await until(clock, () => a.elector.isLeader, 120000, 1000);
  assert.ok(clock.now() <= 61000, `waited ${clock.now()} ms for a retry hint of 1e12 s`);
  assert.deepEqual(clock.insane, [], "a sleep above 2^31 - 1 ms was scheduled");
  await shutdown(clock, a);
});

test("durations above the longest timer are refused", () => {
  const api = new MemoryLeaseStore().api(NS, NAME);
  assert.throws(
    () => new LeaderElector({ lease: api, identity: "a", leaseDuration: 2 ** 32 * 1000, renewDeadline: 10000 }),
    /must be at most 2147483647 ms/,
  );
});

test("a system clock sleep longer than 2^31 - 1 ms does not fire at once", async () => {
  // setTimeout fires at once for delays above 2^31 - 1 ms; the system clock must not.
  const { systemClock } = await import("../mod.ts");
  const cancel = new AbortController();
  let fired = false;
  systemClock.sleep(2 ** 31 + 1000, cancel.signal).then(() => (fired = true), () => {});
  await new Promise((r) => setTimeout(r, 30));
  cancel.abort();
  await settle();
  assert.equal(fired, false, "a sleep of 2^31 + 1000 ms ended within 30 ms");
});

// ---- issue 9, finding 3: a deleted free Lease must not leave everyone leaderless ---------

for (const watch of [true, false]) {
  test(`a free Lease deleted by hand is re-created (${watch ? "watching" : "polling"} follower)`, async () => {
    const clock = new ManualClock();
    const store = new MemoryLeaseStore();
    const a = replica(store, clock, "a", { watch });
    await until(clock, () => a.elector.isLeader);
    const b = replica(store, clock, "b", { watch });
    await clock.advance(1000);
    // b cannot write while a releases, so b keeps seeing a free Lease it has not taken.
    b.api.fault = (op) => (op === "update" ? apiError(500, "InternalError") : undefined);
    a.stop.abort();
    await until(clock, () => store.peek(NS, NAME)?.spec?.holderIdentity === "", 10000);
    await until(clock, () => (b.elector.stats.errorsByKind.server ?? 0) > 0, 10000);
    store.delete(NS, NAME);
    b.api.fault = undefined;
    const took = await until(clock, () => b.elector.isLeader, 20000);
    assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "b");
    // A watcher acts on the DELETED event; a poller on its next attempt.
    assert.ok(took <= (watch ? 200 : 4400), `re-created ${took} ms after the deletion`);
    await shutdown(clock, a, b);
  });
}
