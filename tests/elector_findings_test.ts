// Elector regression tests for reproduced bugs: each test here failed on the code
// before its fix. A manual clock and the in-memory Lease store keep them deterministic.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { shutdown, until as untilStep } from "./support/manual_clock_wait.ts";
const until = (clock: ManualClock, pred: () => boolean, maxMs = 60000, step = 100) =>
  untilStep(clock, pred, maxMs, step);
import {
  ConfigError,
  KubeApiError,
  type LeaderContext,
  LeaderElector,
  type LeaderElectorOptions,
  LeadershipLostError,
  type Lease,
  type LeaseApi,
  type LeaseWatchEvent,
  ManualClock,
  type MemoryLeaseApi,
  MemoryLeaseStore,
  settle,
  type StopReason,
  TimeoutError,
  WatchExpiredError,
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
    const took = await until(clock, () => b.elector.isLeader, 30000);
    assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "b");
    // The deletion is a change seen now: someone may have taken the Lease unseen just
    // before it (the simulator's seed 547), so it is re-created once leaseDuration has
    // passed since the first sign of absence (the DELETED event, or the poller's 404).
    assert.ok(took >= 15000, `re-created only ${took} ms after the deletion`);
    assert.ok(took <= 15000 + (watch ? 200 : 4400), `re-created ${took} ms after the deletion`);
    await shutdown(clock, a, b);
  });
}

// ---- issue 9, finding 4: a hung Lease API cannot keep a leader leading -------------------

test("a renewal that never returns (and ignores its signal) ends leadership at renewDeadline", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const hooked = new HookedApi(store.api(NS, NAME));
  let hang = false;
  let lastOkStart = 0;
  hooked.onUpdate = async (lease, signal) => {
    if (hang) return never<Lease>(); // as a wedged connection or token source would
    const t = clock.now();
    const r = await hooked.inner.update(lease, signal);
    lastOkStart = t;
    return r;
  };
  hooked.onGet = (signal) => (hang ? never<Lease | undefined>() : hooked.inner.get(signal));
  const a = replica(store, clock, "a", { watch: false }, hooked);
  await until(clock, () => a.elector.isLeader);
  await clock.advance(3000);
  hang = true;
  await until(clock, () => !a.elector.isLeader, 30000, 50);
  assert.ok(clock.now() - lastOkStart <= 10000 + 50, `led ${clock.now() - lastOkStart} ms after its last renewal`);
  assert.equal(a.terms[0].signal.aborted, true);
  assert.ok(a.events.includes("stopped:renew-deadline"), a.events.join());
  await shutdown(clock, a);
});

// ---- issue 9, finding 7: the fencing token comes from the acquiring write -----------------

for (const malformed of [false, true]) {
  test(`a lagging ${malformed ? "malformed " : ""}watch event cannot change the new term's fencing token`, async () => {
    const clock = new ManualClock();
    const store = new MemoryLeaseStore();
    const a = replica(store, clock, "a");
    await until(clock, () => a.elector.isLeader);
    const old = store.peek(NS, NAME)!; // a's record: the previous term
    const stale: LeaseWatchEvent = {
      type: "MODIFIED",
      object: malformed ? { ...old, spec: { holderIdentity: 5 as never, leaseDurationSeconds: "x" as never } } : old,
    };
    const hooked = new HookedApi(store.api(NS, NAME));
    // b's watch had one old event still buffered when its stream was closed.
    hooked.onWatch = async function* (rv, signal) {
      for await (const ev of hooked.inner.watch(rv, signal)) yield ev;
      if (signal.aborted) yield stale;
    };
    const b = replica(store, clock, "b", {}, hooked);
    await clock.advance(1000);
    a.stop.abort();
    await until(clock, () => b.terms.length === 1, 20000);
    const written = store.peek(NS, NAME)!;
    assert.equal(written.spec?.holderIdentity, "b");
    assert.equal(written.spec?.leaseTransitions, 1);
    assert.equal(b.terms[0].token, "1/b");
    const st = b.elector.state();
    assert.equal(st.fencingToken?.leaseTransitions, 1);
    assert.equal(st.fencingToken?.acquireTime, written.spec?.acquireTime);
    await shutdown(clock, a, b);
  });
}

// ---- issue 9, finding 12: "stopped leading" when the work is told to stop -----------------

test("stopped leading is reported when the work is told to stop, before the work settles and the release", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", {
    onStartedLeading: async ({ signal }) => {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      await clock.sleep(3000); // the work takes 3 s to stop
    },
  });
  const released: string[] = [];
  a.elector.addEventListener("released", (e) => released.push((e as CustomEvent).detail));
  await until(clock, () => a.elector.isLeader);
  a.stop.abort();
  await settle();
  assert.ok(a.events.includes("stopped:shutdown"), `no stop reported at the abort: ${a.events.join()}`);
  assert.equal(a.elector.isLeader, false);
  assert.equal(a.elector.state().isLeader, false);
  assert.equal(a.elector.state().fencingToken, undefined);
  assert.equal(a.elector.state().workSettling, true);
  assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "a", "released before the work settled");
  assert.deepEqual(released, []);
  await until(clock, () => store.peek(NS, NAME)?.spec?.holderIdentity === "", 10000);
  assert.deepEqual(released, ["shutdown"]);
  assert.equal(a.elector.state().workSettling, false);
  await shutdown(clock, a);
});

// ---- issue 9, finding 2: no new term while the last term's work runs; graceMs -------------

test("the work's abort reason is a LeadershipLostError whose graceMs is the time left before a takeover", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  let reason: unknown;
  let abortedAt = -1;
  const a = replica(store, clock, "a", {
    watch: false,
    onStartedLeading: async ({ signal }) => {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      reason = signal.reason;
      abortedAt = clock.now();
    },
  });
  let lastOk = 0;
  let cut = false;
  a.api.fault = (op) => {
    if (cut) return new Promise(() => {});
    if (op === "update") lastOk = clock.now();
    return undefined;
  };
  await until(clock, () => a.elector.isLeader);
  await clock.advance(3100);
  cut = true;
  await until(clock, () => abortedAt >= 0, 30000, 50);
  assert.ok(reason instanceof LeadershipLostError, String(reason));
  const e = reason as LeadershipLostError & { graceMs?: number };
  assert.equal(e.reason, "renew-deadline");
  assert.equal(typeof e.graceMs, "number");
  assert.equal(e.graceMs, lastOk + 15000 - abortedAt);
  assert.ok(e.graceMs! > 0 && e.graceMs! <= 5000);
  a.api.fault = undefined;
  await shutdown(clock, a);
});

test("run() does not start a new term while the last term's work still runs, and says so in state()", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  let running = 0;
  let maxRunning = 0;
  let starts = 0;
  let cut = false;
  const settling: boolean[] = [];
  const a = replica(store, clock, "a", {
    watch: false,
    onStartedLeading: async ({ signal }) => {
      starts++;
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      cut = false; // the API heals once the work was told to stop
      await clock.sleep(40000); // but the work takes 40 s to stop
      running--;
    },
  });
  a.api.fault = () => (cut ? new Promise(() => {}) : undefined);
  await until(clock, () => a.elector.isLeader);
  cut = true;
  await until(clock, () => !a.elector.isLeader, 20000);
  for (let i = 0; i < 30; i++) {
    await clock.advance(1000);
    settling.push(a.elector.state().workSettling);
  }
  assert.equal(maxRunning, 1, "a second term started while the first term's work still ran");
  assert.equal(starts, 1);
  assert.ok(settling.every((x) => x === true), `workSettling: ${settling.join()}`);
  await until(clock, () => starts === 2, 30000);
  assert.equal(maxRunning, 1);
  await shutdown(clock, a);
});

// ---- issue 9, finding 11: no retake of its own release before followers see it ----------

test("after its renewals fail and it releases, a replica waits a retryPeriod before contending again", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  let failing = false;
  let abortedAt = -1;
  const ops: { op: string; t: number }[] = [];
  const a = replica(store, clock, "a", {
    onStartedLeading: async ({ signal }) => {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      if (abortedAt < 0) abortedAt = clock.now();
      failing = false; // the API is back in time for the release
    },
  });
  a.api.fault = (op) => {
    ops.push({ op, t: clock.now() });
    return failing && op === "update" ? apiError(500, "InternalError") : undefined;
  };
  await until(clock, () => a.elector.isLeader);
  const b = replica(store, clock, "b");
  await clock.advance(1000);
  failing = true;
  await until(clock, () => abortedAt >= 0, 20000);
  await clock.advance(10000);
  const after = ops.filter((o) => o.t >= abortedAt);
  assert.equal(after[0]?.op, "update", "the release");
  assert.ok(after.length >= 2, `a did not contend again: ${JSON.stringify(after)}`);
  assert.ok(after[1].t - after[0].t >= 2000, `contended again ${after[1].t - after[0].t} ms after its release`);
  await shutdown(clock, a, b);
});

// ---- issue 9, finding 8: an acquiring write whose answer was lost is adopted ---------------

test("an acquiring PUT that was applied but whose answer was lost is adopted at the next attempt", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, { spec: { holderIdentity: "", leaseDurationSeconds: 1, leaseTransitions: 3 } });
  const hooked = new HookedApi(store.api(NS, NAME));
  let lose = true;
  hooked.onUpdate = async (lease, signal) => {
    const r = await hooked.inner.update(lease, signal);
    if (lose && lease.spec?.holderIdentity === "a") {
      lose = false;
      throw new TimeoutError("the answer was lost");
    }
    return r;
  };
  const a = replica(store, clock, "a", { watch: false }, hooked);
  const took = await until(clock, () => a.elector.isLeader, 30000);
  assert.ok(took <= 5000, `led only ${took} ms after its own write landed`);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseTransitions, 4, "the term of the lost write is kept");
  assert.equal(a.terms[0].token, "4/a");
  await shutdown(clock, a);
});

test("an acquire whose answer was lost is adopted after one retry period while the watch delivered that write", async () => {
  // Found by the fault suite's soak: the follower's watch showed its own applied write,
  // which it then waited out like another holder's claim (until leaseDuration expired).
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, { spec: { holderIdentity: "", leaseDurationSeconds: 1, leaseTransitions: 3 } });
  const hooked = new HookedApi(store.api(NS, NAME));
  let lose = true;
  hooked.onUpdate = async (lease, signal) => {
    const r = await hooked.inner.update(lease, signal);
    if (lose && lease.spec?.holderIdentity === "a") {
      lose = false;
      await settle(); // the watch event of the applied write arrives first
      throw new TimeoutError("the answer was lost");
    }
    return r;
  };
  const a = replica(store, clock, "a", {}, hooked);
  const took = await until(clock, () => a.elector.isLeader, 30000);
  assert.ok(hooked.calls.watch >= 1, "the follower was watching");
  assert.ok(took <= 2000 * 2.2 + 500, `led ${took} ms after its own write landed, not at its expiry (15 s)`);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseTransitions, 4, "the term of the lost write is kept");
  await shutdown(clock, a);
});

test("at startup a live Lease held by this same identity is waited out like any other holder", async () => {
  // The safe choice: another process may still run with this identity (a restarted
  // container whose old process lingers, a duplicated pod name). It may lead again
  // only after the record it finds has stayed unchanged for its leaseDurationSeconds.
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, {
    spec: {
      holderIdentity: "a",
      leaseDurationSeconds: 15,
      leaseTransitions: 2,
      acquireTime: "2026-01-01T00:00:00.000000Z",
      renewTime: "2026-01-01T00:00:00.000000Z",
    },
  });
  const a = replica(store, clock, "a");
  await clock.advance(14000);
  assert.equal(a.elector.isLeader, false, "took over its own identity's live Lease");
  await until(clock, () => a.elector.isLeader, 5000);
  assert.ok(clock.now() >= 15000);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseTransitions, 3, "a new term");
  await shutdown(clock, a);
});

// ---- issue 9, finding 6: a watch ended at once is not reopened in a tight loop -------------

test("watches that the server ends at once are reopened with a growing backoff", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  const hooked = new HookedApi(store.api(NS, NAME));
  let opened = 0;
  // deno-lint-ignore require-yield
  hooked.onWatch = async function* (_rv, signal) {
    // After 200 watches hang instead, so a tight loop fails the test instead of hanging it.
    if (++opened > 200) await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
  };
  const b = replica(store, clock, "b", {}, hooked);
  await clock.advance(60000);
  // 1 s, 2 s, 4 s ... 30 s, each × 1.5 (jitter 0.5): six watches in the first minute.
  assert.ok(opened <= 8, `${opened} watches opened in 60 s`);
  assert.ok(opened >= 3, `${opened} watches opened in 60 s`);
  const gets = b.elector.stats.requestsByVerb.get ?? 0;
  assert.ok(gets <= 20, `${gets} GETs in 60 s while the watch kept ending`);
  assert.equal(b.elector.isLeader, false);
  await shutdown(clock, a, b);
});

// ---- issue 16: behaviour that had no test -------------------------------------------------

test("release checks the holder: a Lease taken meanwhile is not blanked", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  let cut = false;
  const a = replica(store, clock, "a", {
    watch: false,
    recontend: false,
    onStartedLeading: async ({ signal }) => {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      cut = false; // the API answers again in time for the release
    },
  });
  a.api.fault = () => (cut ? apiError(500, "InternalError") : undefined);
  await until(clock, () => a.elector.isLeader);
  cut = true;
  await clock.advance(1000);
  // While a cannot reach the API, the Lease is given to someone else by hand.
  const cur = store.peek(NS, NAME)!;
  store.put(NS, NAME, { ...cur, spec: { ...cur.spec, holderIdentity: "intruder", leaseTransitions: 7 } });
  let done = false;
  a.done.then(() => (done = true));
  await until(clock, () => done, 30000);
  assert.ok(a.events.includes("stopped:renew-deadline"), a.events.join());
  const after = store.peek(NS, NAME)!;
  assert.equal(after.spec?.holderIdentity, "intruder", "the release blanked a Lease held by someone else");
  assert.equal(after.spec?.leaseTransitions, 7);
  assert.ok(store.log.some((o) => o.op === "update" && !o.ok), "the cached release PUT must have been refused");
});

test("a 410 Gone on a watch restarts it from the current state instead of the expired resourceVersion", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  const hooked = new HookedApi(store.api(NS, NAME));
  let compactedBelow = 0;
  let kick = new AbortController();
  const asked: (string | undefined)[] = [];
  hooked.onWatch = async function* (rv, signal) {
    asked.push(rv);
    if (rv !== undefined && Number(rv) < compactedBelow) {
      throw new WatchExpiredError("watch ended by the server: 410 Expired too old resource version", 410);
    }
    const own = new AbortController();
    const end = () => own.abort();
    signal.addEventListener("abort", end, { once: true });
    kick.signal.addEventListener("abort", end, { once: true });
    try {
      for await (const ev of hooked.inner.watch(rv, own.signal)) yield ev;
    } finally {
      signal.removeEventListener("abort", end);
      kick.signal.removeEventListener("abort", end);
    }
  };
  const b = replica(store, clock, "b", {}, hooked);
  await clock.advance(3000);
  assert.equal(b.elector.watching, true);
  // The server drops b's watch and compacts history past everything b has seen.
  kick.abort();
  kick = new AbortController();
  compactedBelow = Number(store.peek(NS, NAME)!.metadata.resourceVersion) + 1;
  await until(clock, () => b.elector.watching, 20000);
  assert.ok(asked.includes(undefined), `watch requests: ${JSON.stringify(asked)}`);
  // The new watch carries the release to b at once.
  a.stop.abort();
  const took = await until(clock, () => b.elector.isLeader, 20000, 50);
  assert.ok(took <= 200, `b took ${took} ms to see the release`);
  await shutdown(clock, a, b);
});

test("a follower whose watch is forbidden polls every jittered retryPeriod and still sees a release", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  const hooked = new HookedApi(store.api(NS, NAME));
  // deno-lint-ignore require-yield
  hooked.onWatch = async function* () {
    throw apiError(403, "Forbidden");
  };
  const b = replica(store, clock, "b", {}, hooked);
  await clock.advance(32000);
  const gets = hooked.calls.get ?? 0;
  // One GET per 2000 × (1 + 0.5 × 1.2) = 3200 ms.
  assert.ok(gets >= 9 && gets <= 11, `${gets} GETs in 32 s`);
  assert.ok((hooked.calls.watch ?? 0) <= 1, `${hooked.calls.watch} forbidden watches retried within 32 s`);
  assert.equal(b.elector.watching, false);
  a.stop.abort();
  const took = await until(clock, () => b.elector.isLeader, 20000, 100);
  assert.ok(took <= 3300, `b took ${took} ms to notice the release by polling`);
  await shutdown(clock, a, b);
});

test("Retry-After is honoured on the leader's renewals (within renewDeadline)", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await until(clock, () => a.elector.isLeader);
  const times: number[] = [];
  a.api.fault = (op) => {
    if (op !== "update") return undefined;
    times.push(clock.now());
    return apiError(429, "TooManyRequests", 3);
  };
  await until(clock, () => !a.elector.isLeader, 20000, 50);
  // Renewal attempts only: the release that follows the stop is no renewal.
  const attempts = [...new Set(times)].filter((t) => t < a.terms[0].end!);
  assert.ok(attempts.length >= 2, `attempts at ${attempts.join()}`);
  for (let i = 1; i < attempts.length; i++) {
    assert.ok(attempts[i] - attempts[i - 1] >= 3000, `renewed again ${attempts[i] - attempts[i - 1]} ms after a 429`);
  }
  a.api.fault = undefined;
  await shutdown(clock, a);
});

test("a renewal through the slow path (GET + PUT) keeps the term", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await until(clock, () => a.elector.isLeader);
  const before = store.peek(NS, NAME)!;
  // Someone touches the object (a label, say): the leader's cached resourceVersion is stale.
  store.put(NS, NAME, { ...before, metadata: { ...before.metadata, labels: { touched: "yes" } } });
  await clock.advance(2500);
  const after = store.peek(NS, NAME)!;
  assert.equal(a.elector.stats.slowpathTotal, 1);
  assert.equal(a.elector.isLeader, true);
  assert.equal(after.spec?.holderIdentity, "a");
  assert.notEqual(after.spec?.renewTime, before.spec?.renewTime, "renewed");
  assert.equal(after.spec?.leaseTransitions, before.spec?.leaseTransitions, "a renewal is no new term");
  assert.equal(after.spec?.acquireTime, before.spec?.acquireTime);
  assert.equal(a.terms.length, 1);
  assert.equal(a.elector.state().fencingToken?.value, a.terms[0].token);
  await shutdown(clock, a);
});

test("a leader that reads a malformed record stops leading, leaves it alone, and retakes it only after expiry", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await until(clock, () => a.elector.isLeader);
  const cur = store.peek(NS, NAME)!;
  store.put(NS, NAME, { ...cur, spec: { ...cur.spec, leaseDurationSeconds: "15" as never } });
  const editedAt = clock.now();
  await until(clock, () => a.events.includes("stopped:lease-malformed"), 5000);
  assert.equal(a.terms[0].signal.aborted, true);
  assert.equal(((a.terms[0].signal.reason) as LeadershipLostError).reason, "lease-malformed");
  await clock.advance(3000);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseDurationSeconds, "15", "the malformed record was overwritten early");
  await until(clock, () => a.terms.length === 2, 30000);
  assert.ok(clock.now() - editedAt >= 15000, `retaken ${clock.now() - editedAt} ms after the edit`);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseDurationSeconds, 15);
  await shutdown(clock, a);
});

test("run() called while running rejects; after it returned it can run again", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  await assert.rejects(a.elector.run(), /already running/);
  assert.equal(a.elector.isLeader, true, "the second call disturbed the first");
  await shutdown(clock, a);
  const again = new AbortController();
  let done = false;
  a.elector.run(again.signal).then(() => (done = true));
  await until(clock, () => a.elector.isLeader, 10000);
  again.abort();
  await until(clock, () => done, 20000);
  assert.equal(a.terms.length, 2);
});

// ---- found by the simulator after the fixes: deletions and release bursts -------------------

test("a deleted Lease whose DELETED event names a holder this replica never saw is not re-created at once (sim seed 547)", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, { spec: { holderIdentity: "", leaseDurationSeconds: 1, leaseTransitions: 1 } });
  const hooked = new HookedApi(store.api(NS, NAME));
  // b's watch loses the event of c's takeover; everything else arrives.
  hooked.onWatch = async function* (rv, signal) {
    for await (const ev of hooked.inner.watch(rv, signal)) {
      if (ev.type !== "DELETED" && ev.object.spec?.holderIdentity === "c") continue;
      yield ev;
    }
  };
  // b's writes fail, so it keeps seeing a free Lease it has not taken.
  hooked.onUpdate = () => Promise.reject(apiError(500, "InternalError"));
  const b = replica(store, clock, "b", {}, hooked);
  await clock.advance(3000);
  const cur = store.peek(NS, NAME)!;
  store.put(NS, NAME, {
    metadata: cur.metadata,
    spec: { ...cur.spec, holderIdentity: "c", leaseDurationSeconds: 15, leaseTransitions: 2 },
  });
  await clock.advance(30); // c leads; b did not see it
  store.delete(NS, NAME); // the DELETED object names c
  hooked.onUpdate = undefined;
  const took = await until(clock, () => b.elector.isLeader, 40000);
  assert.ok(took >= 14000, `b re-created the Lease ${took} ms after c's record was deleted`);
  await shutdown(clock, b);
});

test("a release that meets 409s pauses between attempts instead of a burst (sim seed 367)", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const hooked = new HookedApi(store.api(NS, NAME));
  const a = replica(store, clock, "a", {}, hooked);
  await until(clock, () => a.elector.isLeader);
  // Every release PUT conflicts (someone keeps writing); count the requests of the release.
  hooked.onUpdate = (lease, signal) =>
    lease.spec?.holderIdentity === "" ? Promise.reject(apiError(409, "Conflict")) : hooked.inner.update(lease, signal);
  const before = (hooked.calls.get ?? 0) + (hooked.calls.update ?? 0);
  a.stop.abort();
  await clock.advance(1000);
  const inOneSecond = (hooked.calls.get ?? 0) + (hooked.calls.update ?? 0) - before;
  assert.ok(inOneSecond <= 10, `${inOneSecond} release requests within one second`);
  await until(clock, () => false, 12000, 500).catch(() => {});
  await a.done;
});

/** A Lease "a" claimed once and never renewed (a partitioned or dead holder). */
const UNRENEWED_BY_A = {
  spec: {
    holderIdentity: "a",
    leaseDurationSeconds: 15,
    acquireTime: "2026-11-26T22:00:00.000000Z",
    renewTime: "2026-11-26T22:00:00.000000Z",
    leaseTransitions: 0,
  },
};

test("a 404 read before the Lease was created, answered after the watch showed it, does not double the wait for its expiry", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const hooked = new HookedApi(store.api(NS, NAME));
  // b's first read is served before the Lease exists, its answer arrives late.
  let answerFirstRead: (() => void) | undefined;
  hooked.onGet = () => {
    hooked.onGet = undefined;
    return new Promise((resolve) => (answerFirstRead = () => resolve(undefined)));
  };
  const b = replica(store, clock, "b", {}, hooked);
  await until(clock, () => answerFirstRead !== undefined, 1000, 10);
  // a creates the Lease and never renews it (a partitioned or dead holder).
  store.put(NS, NAME, UNRENEWED_BY_A);
  const created = clock.now();
  await until(clock, () => b.events.includes("leader:a"), 1000, 10); // the watch showed it
  answerFirstRead!(); // now the stale 404 arrives
  await until(clock, () => b.elector.isLeader, 40000);
  const took = clock.now() - created;
  assert.ok(took >= 15000, `b took a live claim ${took} ms after it was created`);
  assert.ok(
    took <= 15000 + 2 * 2000 * 2.2,
    `b took the unrenewed Lease ${took} ms after it was created; its expiry was 15000 ms (the stale 404 restarted the wait)`,
  );
  await shutdown(clock, b);
});

test("a watch event's observedAt (a shared watch that saw the version first) times the claim, only on the same clock", async () => {
  for (const sameClock of [true, false]) {
    const clock = new ManualClock();
    const store = new MemoryLeaseStore();
    store.put(NS, NAME, UNRENEWED_BY_A);
    await clock.advance(10000); // a shared watch saw that version 10 s before b starts
    const seenAt = clock.now() - 10000;
    const hooked = new HookedApi(store.api(NS, NAME));
    const api = Object.assign(hooked, { clock: sameClock ? clock : new ManualClock() });
    hooked.onWatch = async function* (rv, signal) {
      for await (const ev of hooked.inner.watch(rv, signal)) yield { ...ev, observedAt: seenAt };
    };
    const start = clock.now();
    const b = replica(store, clock, "b", {}, api);
    await until(clock, () => b.elector.isLeader, 40000);
    const took = clock.now() - start;
    if (sameClock) {
      assert.ok(took <= 5000 + 2 * 2000 * 2.2, `b took over ${took} ms after start; the claim had 5 s left`);
    } else assert.ok(took >= 15000, `b took over ${took} ms after start, trusting a time from another clock`);
    await shutdown(clock, b);
  }
});
