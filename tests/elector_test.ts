// Elector unit tests: a manual clock and the in-memory Lease store, so every
// timing rule is checked deterministically.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { shutdown, until } from "./support/manual_clock_wait.ts";
import {
  ConfigError,
  KubeApiError,
  type LeaderContext,
  LeaderElector,
  type LeaderElectorOptions,
  ManualClock,
  type MemoryLeaseApi,
  MemoryLeaseStore,
  settle,
  type StopReason,
} from "../mod.ts";

const NS = "default";
const NAME = "unit-lease";

interface Replica {
  elector: LeaderElector;
  api: MemoryLeaseApi;
  stop: AbortController;
  done: Promise<void>;
  events: string[];
  /** Work intervals: [start, end] in clock ms; end undefined while running. */
  terms: { start: number; end?: number; token: string; signal: AbortSignal }[];
}

function replica(
  store: MemoryLeaseStore,
  clock: ManualClock,
  identity: string,
  extra: Partial<LeaderElectorOptions> = {},
): Replica {
  const api = store.api(NS, NAME);
  const events: string[] = [];
  const terms: Replica["terms"] = [];
  const stop = new AbortController();
  const elector = new LeaderElector({
    lease: api,
    identity,
    clock,
    random: () => 0.5,
    onStartedLeading: async ({ signal, fencingToken }: LeaderContext) => {
      const term: Replica["terms"][number] = { start: clock.now(), token: fencingToken.value, signal };
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

/** No two terms overlap in time. */
function assertNoOverlap(rs: Replica[]) {
  const all = rs.flatMap((r) => r.terms.map((t) => ({ ...t, who: r.elector.identity })));
  all.sort((a, b) => a.start - b.start);
  for (let i = 1; i < all.length; i++) {
    const prev = all[i - 1];
    assert.ok(prev.end !== undefined && prev.end <= all[i].start, `${prev.who} still led when ${all[i].who} started`);
  }
}

test("a lone candidate creates the Lease, leads, and renews once per retryPeriod with one PUT", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await until(clock, () => a.elector.isLeader);
  const lease = store.peek(NS, NAME)!;
  assert.equal(lease.spec?.holderIdentity, "a");
  assert.equal(lease.spec?.leaseDurationSeconds, 15);
  assert.equal(lease.spec?.leaseTransitions, 0);
  assert.match(String(lease.spec?.renewTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  assert.deepEqual(a.events, ["leader:a", "started"]);
  assert.equal(a.terms[0].token, "0/a");
  const before = store.log.length;
  await clock.advance(10 * 2000);
  const ops = store.log.slice(before);
  assert.equal(ops.length, 10, `10 renewals expected, got ${JSON.stringify(ops)}`);
  assert.ok(ops.every((o) => o.op === "update" && o.ok));
  assert.equal(a.elector.stats.slowpathTotal, 0);
  await shutdown(clock, a);
  assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "", "released on shutdown");
  assert.equal(store.peek(NS, NAME)?.spec?.leaseDurationSeconds, 1);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseTransitions, 0, "release keeps transitions");
  assert.deepEqual(a.events, ["leader:a", "started", "stopped:shutdown"]);
});

test("three candidates elect exactly one leader", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const rs = ["a", "b", "c"].map((id) => replica(store, clock, id));
  await until(clock, () => rs.some((r) => r.elector.isLeader));
  await clock.advance(30000);
  assert.equal(rs.filter((r) => r.elector.isLeader).length, 1);
  const leader = rs.find((r) => r.elector.isLeader)!;
  for (const r of rs) assert.equal(r.elector.leader, leader.elector.identity);
  await shutdown(clock, ...rs);
  assertNoOverlap(rs);
});

test("graceful shutdown: work settles, the Lease is released, a watching follower takes over at once", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  const b = replica(store, clock, "b");
  await clock.advance(5000);
  assert.equal(b.elector.isLeader, false);
  assert.equal(b.elector.watching, true);
  a.stop.abort();
  const took = await until(clock, () => b.elector.isLeader, 20000, 10);
  assert.ok(took <= 50, `follower took ${took} ms of clock time after the release`);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseTransitions, 1);
  assert.equal(b.terms[0].token, "1/b");
  assert.ok(b.events.includes("leader:b"));
  await shutdown(clock, a, b);
  assertNoOverlap([a, b]);
});

test("a watching follower makes no requests while the leader renews", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  const b = replica(store, clock, "b");
  await clock.advance(3000);
  const bBefore = { ...b.elector.stats.requestsByVerb };
  await clock.advance(60000);
  assert.deepEqual(b.elector.stats.requestsByVerb, bBefore, "follower sent requests while its watch was healthy");
  assert.equal(a.elector.stats.requestsByVerb.update! >= 29, true);
  await shutdown(clock, a, b);
});

test("a polling follower waits retryPeriod × (1 + jitter × 1.2) between attempts", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await until(clock, () => a.elector.isLeader);
  const b = replica(store, clock, "b", { watch: false, random: () => 0.5 });
  await settle();
  const gets = () => b.elector.stats.requestsByVerb.get ?? 0;
  const g0 = gets();
  await clock.advance(3200 - 1);
  assert.equal(gets(), g0, "no attempt before 2000 × (1 + 0.5 × 1.2) ms");
  await clock.advance(2);
  assert.equal(gets(), g0 + 1);
  await shutdown(clock, a, b);
});

test("a partitioned leader stops at renewDeadline; the follower takes over only after leaseDuration; no overlap", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  const b = replica(store, clock, "b");
  await clock.advance(1000);
  const partitionedAt = clock.now();
  a.api.fault = () => new Promise(() => {}); // every request hangs
  await until(clock, () => !a.elector.isLeader, 20000);
  const lostAfter = clock.now() - partitionedAt;
  assert.ok(lostAfter <= 10000, `leader noticed only after ${lostAfter} ms`);
  assert.equal(a.terms[0].signal.aborted, true);
  await until(clock, () => b.elector.isLeader, 30000);
  const takeover = clock.now() - partitionedAt;
  assert.ok(takeover >= 13000, `follower took over too early (${takeover} ms)`);
  assert.ok(takeover <= 17500, `follower took over too late (${takeover} ms)`);
  assertNoOverlap([a, b]);
  assert.ok(a.events.includes("stopped:renew-deadline"));
  a.api.fault = undefined;
  await shutdown(clock, a, b);
  assertNoOverlap([a, b]);
});

test("a leader that loses its lease to a hand edit stops at its next renewal and does not release", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { recontend: false });
  await until(clock, () => a.elector.isLeader);
  const cur = store.peek(NS, NAME)!;
  store.put(NS, NAME, { ...cur, spec: { ...cur.spec, holderIdentity: "intruder", leaseTransitions: 5 } });
  await until(clock, () => !a.elector.isLeader, 5000);
  await until(clock, () => a.events.some((e) => e.startsWith("stopped")), 5000);
  assert.ok(a.events.includes("stopped:lease-taken"));
  assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "intruder", "must not blank someone else's lease");
  await shutdown(clock, a);
});

test("a deleted Lease stops the leader, which then contends again and re-creates it", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  await until(clock, () => a.elector.isLeader);
  store.delete(NS, NAME);
  await until(clock, () => a.events.includes("stopped:lease-deleted"), 5000);
  await until(clock, () => a.elector.isLeader, 20000);
  assert.equal(a.terms.length, 2);
  assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "a");
  await shutdown(clock, a);
  assertNoOverlap([a]);
});

test("a follower does not re-create a deleted Lease before the last record it saw expired", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader);
  const b = replica(store, clock, "b");
  await clock.advance(1000);
  a.api.fault = () => new Promise(() => {}); // the leader is cut off and cannot notice the deletion
  const deletedAt = clock.now();
  store.delete(NS, NAME);
  await until(clock, () => b.elector.isLeader, 30000, 10);
  assert.ok(clock.now() - deletedAt >= 13000, `re-created ${clock.now() - deletedAt} ms after the deletion`);
  assertNoOverlap([a, b]);
  a.api.fault = undefined;
  await shutdown(clock, a, b);
  assertNoOverlap([a, b]);
});

test("409 on a stale write is re-read, never overwritten", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, { spec: { holderIdentity: "", leaseDurationSeconds: 1, leaseTransitions: 3 } });
  const a = replica(store, clock, "a", { watch: false });
  let first = true;
  // Someone else writes between a's GET and its PUT.
  a.api.fault = (op) => {
    if (op === "update" && first) {
      first = false;
      const cur = store.peek(NS, NAME)!;
      store.put(NS, NAME, {
        ...cur,
        spec: { ...cur.spec, holderIdentity: "z", leaseDurationSeconds: 15, leaseTransitions: 4 },
      });
    }
    return undefined;
  };
  await clock.advance(100);
  assert.equal(a.elector.isLeader, false);
  assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "z");
  assert.ok(store.log.some((o) => o.op === "update" && !o.ok), "the stale PUT was refused");
  // z never renews: a takes over after z's lease expires, as transition 5.
  await until(clock, () => a.elector.isLeader, 20000);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseTransitions, 5);
  await shutdown(clock, a);
});

test("expiry ignores the wall clock: a replica whose clock is hours off behaves the same", async () => {
  for (const skew of [-6 * 3600_000, 6 * 3600_000]) {
    const clock = new ManualClock();
    const store = new MemoryLeaseStore();
    const a = replica(store, clock, "a");
    await until(clock, () => a.elector.isLeader);
    const b = replica(store, clock, "b");
    await clock.advance(1000);
    clock.skewWall(skew);
    await clock.advance(60000);
    assert.equal(a.elector.isLeader, true);
    assert.equal(b.elector.isLeader, false, `skew ${skew} let a follower take a live lease`);
    await shutdown(clock, a, b);
  }
});

test("a follower does not take over a lease whose holder still renews, even with a past renewTime", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, {
    spec: {
      holderIdentity: "other",
      leaseDurationSeconds: 15,
      renewTime: "2001-01-01T00:00:00.000000Z",
      acquireTime: "2001-01-01T00:00:00.000000Z",
      leaseTransitions: 1,
    },
  });
  const a = replica(store, clock, "a");
  await clock.advance(10000);
  assert.equal(a.elector.isLeader, false, "timestamps in the past must not count as expired");
  await until(clock, () => a.elector.isLeader, 10000);
  assert.ok(clock.now() >= 15000);
  await shutdown(clock, a);
});

for (
  const [label, spec] of [
    ["missing spec", undefined],
    ["leaseDurationSeconds 0", { holderIdentity: "x", leaseDurationSeconds: 0 }],
    ["negative leaseDurationSeconds", { holderIdentity: "x", leaseDurationSeconds: -5 }],
    ["string leaseDurationSeconds", { holderIdentity: "x", leaseDurationSeconds: "15" }],
    ["garbage renewTime", { holderIdentity: "x", leaseDurationSeconds: 15, renewTime: "yesterday" }],
    ["numeric holder", { holderIdentity: 7, leaseDurationSeconds: 15 }],
  ] as const
) {
  test(`a malformed Lease (${label}) is not trusted: no crash, no early takeover, extra fields kept`, async () => {
    const clock = new ManualClock();
    const store = new MemoryLeaseStore();
    store.put(NS, NAME, { spec: spec as never, extraTopLevel: { keep: true } } as never);
    const a = replica(store, clock, "a");
    await clock.advance(10000);
    assert.equal(a.elector.isLeader, false, "took a malformed lease before leaseDuration");
    await until(clock, () => a.elector.isLeader, 10000);
    const lease = store.peek(NS, NAME)!;
    assert.equal(lease.spec?.holderIdentity, "a");
    assert.deepEqual((lease as Record<string, unknown>).extraTopLevel, { keep: true });
    await shutdown(clock, a);
  });
}

test("a null holderIdentity on a sound spec reads as free and is taken at once", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, { spec: { holderIdentity: null, leaseDurationSeconds: 15, leaseTransitions: 2, strategy: "X" } });
  const a = replica(store, clock, "a");
  await until(clock, () => a.elector.isLeader, 100);
  assert.equal(store.peek(NS, NAME)?.spec?.leaseTransitions, 3);
  assert.equal(store.peek(NS, NAME)?.spec?.strategy, "X", "fields we do not own are kept");
  await shutdown(clock, a);
});

test("work that ignores its signal blocks the release; the lease is left to expire", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const lines: string[] = [];
  const a = replica(store, clock, "a", {
    onStartedLeading: () => new Promise(() => {}), // never settles
    logger: { debug() {}, info() {}, warn() {}, error: (m) => lines.push(m) },
  });
  await until(clock, () => a.elector.isLeader);
  a.stop.abort();
  let done = false;
  a.done.then(() => (done = true));
  await until(clock, () => done, 20000);
  assert.equal(store.peek(NS, NAME)?.spec?.holderIdentity, "a", "released while the work still ran");
  assert.ok(lines.some((l) => l.includes("did not stop")));
});

test("work that settles late delays the release until it settled", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  let settledAt = -1;
  const a = replica(store, clock, "a", {
    onStartedLeading: async ({ signal }) => {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      await clock.sleep(3000);
      settledAt = clock.now();
    },
  });
  await until(clock, () => a.elector.isLeader);
  a.stop.abort();
  await until(clock, () => store.peek(NS, NAME)?.spec?.holderIdentity === "", 10000);
  assert.ok(settledAt > 0 && clock.now() >= settledAt, "released before the work settled");
  await shutdown(clock, a);
});

test("429 Retry-After is honoured by a follower", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a", { watch: false });
  let calls = 0;
  a.api.fault = () => {
    calls++;
    return new KubeApiError("TooManyRequests", {
      code: 429,
      reason: "TooManyRequests",
      method: "GET",
      url: "x",
      retryAfterSeconds: 20,
    });
  };
  await clock.advance(19000);
  assert.equal(calls, 1);
  await clock.advance(1500);
  assert.equal(calls, 2);
  a.api.fault = undefined;
  await shutdown(clock, a);
});

test("a failing takeover of a free Lease is retried once per jittered retryPeriod, not in a tight loop", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  store.put(NS, NAME, { spec: { holderIdentity: "", leaseDurationSeconds: 1, leaseTransitions: 1 } });
  const a = replica(store, clock, "a");
  a.api.fault = (op) =>
    op === "update"
      ? new KubeApiError("Forbidden", { code: 403, reason: "Forbidden", method: "PUT", url: "x" })
      : undefined;
  await clock.advance(10000);
  const updates = store.log.filter((o) => o.op === "update").length;
  // 2000 × (1 + 0.5 × 1.2) = 3200 ms between attempts: 4 attempts in 10 s.
  assert.ok(updates >= 3 && updates <= 5, `${updates} update attempts in 10 s`);
  assert.equal(a.elector.isLeader, false);
  a.api.fault = undefined;
  await shutdown(clock, a);
});

test("options are validated as client-go does, with one clear error", () => {
  const api = new MemoryLeaseStore().api(NS, NAME);
  const bad: [Partial<LeaderElectorOptions>, RegExp][] = [
    [{ leaseDuration: 10000, renewDeadline: 10000 }, /leaseDuration \(10000 ms\) must be greater than renewDeadline/],
    [{ renewDeadline: 2400, retryPeriod: 2000 }, /renewDeadline \(2400 ms\) must be greater than retryPeriod × 1.2/],
    [{ retryPeriod: 0 }, /retryPeriod must be greater than zero/],
    [{ identity: "" }, /identity must not be empty/],
    [{ leaseDuration: 900, renewDeadline: 500, retryPeriod: 100 }, /at least 1000 ms/],
  ];
  for (const [opts, re] of bad) {
    assert.throws(() => new LeaderElector({ lease: api, identity: "a", ...opts }), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match((e as Error).message, re);
      return true;
    });
  }
  assert.throws(
    () => new LeaderElector({ lease: new MemoryLeaseStore().api(NS, "Bad_Name"), identity: "a" }),
    /lease name "Bad_Name"/,
  );
});

test("health check fails only for a leader that has not renewed within leaseDuration + grace", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, "a");
  assert.equal(a.elector.check(), undefined);
  await until(clock, () => a.elector.isLeader);
  assert.equal(a.elector.check(), undefined);
  await clock.advance(10000);
  assert.equal(a.elector.check(1000), undefined);
  await shutdown(clock, a);
});

test("events arrive in order: newleader before started, stopped once per term, none before started", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const seen: string[] = [];
  const a = replica(store, clock, "a");
  for (const t of ["newleader", "started", "stopped"]) a.elector.addEventListener(t, () => seen.push(t));
  await until(clock, () => a.elector.isLeader);
  await shutdown(clock, a);
  assert.deepEqual(seen, ["newleader", "started", "stopped"]);
  assert.equal(a.events.filter((e) => e.startsWith("stopped")).length, 1);
});
