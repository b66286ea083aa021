// The sharded lease set on the in-memory store and a manual clock: quotas,
// balance after a join, a graceful leave and a death, no overlap per shard.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { shutdown, until } from "./support/manual_clock_wait.ts";
import { type ShardReplica, type ShardReplicaOptions, startShardReplica } from "./support/shard_replica.ts";
import {
  assignShards,
  ConfigError,
  ManualClock,
  memberLeaseName,
  MemoryLeaseStore,
  SHARD_SET_LABEL,
  ShardedLeaseSet,
  shardQuotas,
  validateShardedLeaseSetOptions,
} from "../mod.ts";

const NS = "default";
const PREFIX = "work";
// Short timings, as the integration tests use: leaseDuration 4s, renewDeadline 3s, retryPeriod 500ms.
const TIMING = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };

/** Which replicas run each shard's work now; an overlap is two at once. */
class Work {
  active = new Map<number, Set<string>>();
  overlaps: string[] = [];
  tokens: { shard: number; id: string; token: string; transitions: number }[] = [];
  start(shard: number, id: string): void {
    const s = this.active.get(shard) ?? new Set();
    this.active.set(shard, s);
    if (s.size) this.overlaps.push(`shard ${shard}: ${id} started while ${[...s].join(",")} worked`);
    s.add(id);
  }
  end(shard: number, id: string): void {
    this.active.get(shard)?.delete(id);
  }
}

function replica(
  store: MemoryLeaseStore,
  clock: ManualClock,
  work: Work,
  id: string,
  shards = 16,
  extra: Partial<ShardReplicaOptions> = {},
): ShardReplica {
  return startShardReplica(store, {
    namespace: NS,
    prefix: PREFIX,
    shards,
    identity: id,
    ...TIMING,
    clock,
    random: () => 0.5,
    onStartedLeading: async (shard, { signal, fencingToken }) => {
      work.start(shard, id);
      work.tokens.push({ shard, id, token: fencingToken.value, transitions: fencingToken.leaseTransitions });
      await new Promise((res) => signal.addEventListener("abort", res, { once: true }));
      work.end(shard, id);
    },
    ...extra,
  });
}

const counts = (rs: ShardReplica[]) => rs.map((r) => r.set.held().length);
const balanced = (rs: ShardReplica[], shards = 16) => {
  const c = counts(rs);
  return c.reduce((a, b) => a + b, 0) === shards && Math.max(...c) - Math.min(...c) <= 1;
};
/** Replicas a, b and c over 16 shards on a fresh store and clock, run until balanced. */
async function threeBalanced() {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const work = new Work();
  const rs = ["a", "b", "c"].map((id) => replica(store, clock, work, id));
  await until(clock, () => balanced(rs));
  return { clock, store, work, rs };
}
/** Every shard's holder as the store has it. */
const holders = (store: MemoryLeaseStore, shards = 16) =>
  Array.from({ length: shards }, (_, i) => store.peek(NS, `${PREFIX}-${i}`)?.spec?.holderIdentity ?? "");

test("lease set: quotas sum to the shard count and differ by at most one", () => {
  assert.deepEqual([...shardQuotas(16, ["c", "a", "b"])], [["a", 6], ["b", 5], ["c", 5]]);
  assert.deepEqual([...shardQuotas(16, ["a", "b"])], [["a", 8], ["b", 8]]);
  assert.deepEqual([...shardQuotas(2, ["a", "b", "c"])], [["a", 1], ["b", 1], ["c", 0]]);
  assert.deepEqual([...shardQuotas(5, ["a", "a"])], [["a", 5]], "duplicates count once");
  assert.equal(shardQuotas(5, []).size, 0);
  for (let n = 1; n <= 40; n++) {
    for (let m = 1; m <= 7; m++) {
      const q = [...shardQuotas(n, Array.from({ length: m }, (_, i) => `r${i}`)).values()];
      assert.equal(q.reduce((a, b) => a + b, 0), n);
      assert.ok(Math.max(...q) - Math.min(...q) <= 1);
      assert.ok(Math.max(...q) <= Math.ceil(n / m));
    }
  }
});

test("lease set: open shards are assigned within each member's room, the same way whatever the order given", () => {
  const all = Array.from({ length: 16 }, (_, i) => i);
  const count = (m: Map<number, string>, id: string) => [...m.values()].filter((x) => x === id).length;
  const fresh = assignShards("work", 16, ["a", "b", "c"], all, new Map());
  assert.deepEqual([count(fresh, "a"), count(fresh, "b"), count(fresh, "c")], [6, 5, 5]);
  assert.deepEqual(assignShards("work", 16, ["c", "b", "a"], all, new Map()), fresh, "member order does not matter");
  // a and b hold their share already: whatever is open goes to c.
  const joined = assignShards("work", 16, ["a", "b", "c"], [11, 12, 13, 14, 15], new Map([["a", 6], ["b", 5]]));
  assert.deepEqual([...joined.values()], ["c", "c", "c", "c", "c"]);
  // Nobody has room: nothing is assigned; a member over its quota has none.
  assert.equal(assignShards("work", 4, ["a", "b"], [3], new Map([["a", 3], ["b", 2]])).size, 0);
  // A different prefix spreads the same shards differently, yet within the same rooms.
  const other = assignShards("jobs", 16, ["a", "b", "c"], all, new Map());
  assert.deepEqual([count(other, "a"), count(other, "b"), count(other, "c")], [6, 5, 5]);
  assert.notDeepEqual(other, fresh);
});

test("lease set: member Lease names are valid and distinct for identities that clean to the same name", () => {
  assert.equal(memberLeaseName("work", "pod-a"), "work-member-pod-a");
  const a = memberLeaseName("work", "Pod_A"), b = memberLeaseName("work", "pod_a");
  assert.notEqual(a, b);
  for (const n of [a, b, memberLeaseName("work", "___"), memberLeaseName("work", "x".repeat(300))]) {
    assert.match(n, /^work-member-[a-z0-9]([a-z0-9-]*[a-z0-9])?$/);
    assert.ok(n.length <= 253);
  }
});

test("lease set: bad settings are a ConfigError naming each problem", () => {
  assert.deepEqual(validateShardedLeaseSetOptions({ namespace: "default", prefix: "work", shards: 16 }), []);
  const p = validateShardedLeaseSetOptions({ namespace: "Bad_NS", prefix: "Work_", shards: 1.5 });
  assert.equal(p.length, 3);
  assert.match(p[0], /shards must be a whole number from 1 to 4096 \(got 1\.5\)/);
  assert.match(p[1], /namespace "Bad_NS"/);
  assert.match(p[2], /prefix "Work_" must be/);
  const store = new MemoryLeaseStore();
  const base = {
    namespace: NS,
    prefix: PREFIX,
    shards: 4,
    identity: "a",
    leaseApi: (n: string) => store.api(NS, n),
    source: store.listSource(NS, { key: SHARD_SET_LABEL, value: PREFIX }),
  };
  assert.throws(() => new ShardedLeaseSet({ ...base, shards: 0 }), ConfigError);
  assert.throws(
    () => new ShardedLeaseSet({ ...base, leaseDuration: 2000, renewDeadline: 3000 }),
    (e: Error) =>
      e instanceof ConfigError && /leaseDuration \(2000 ms\) must be greater than renewDeadline/.test(e.message),
  );
  assert.throws(() => new ShardedLeaseSet({ ...base, identity: "" }), /identity must not be empty/);
});

test("lease set: alone, a replica holds every shard, each with its own signal and fencing token", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const work = new Work();
  const a = replica(store, clock, work, "a", 4);
  await until(clock, () => a.set.held().length === 4);
  assert.deepEqual(a.set.held(), [0, 1, 2, 3]);
  assert.deepEqual(a.set.state().members, ["a"]);
  assert.equal(a.set.quota, 4);
  assert.deepEqual(holders(store, 4), ["a", "a", "a", "a"]);
  assert.equal(store.peek(NS, "work-member-a")?.spec?.holderIdentity, "a", "the member Lease is held");
  for (let i = 0; i < 4; i++) {
    const l = store.peek(NS, `${PREFIX}-${i}`)!;
    assert.equal(
      (l.metadata.labels as Record<string, string>)[SHARD_SET_LABEL],
      PREFIX,
      "labelled for the shared watch",
    );
  }
  assert.deepEqual(work.tokens.map((t) => t.shard).sort(), [0, 1, 2, 3]);
  assert.ok(work.tokens.every((t) => t.token === `${t.transitions}/a`));
  const st = a.set.shards();
  assert.ok(st.every((s) => s.isLeader && s.fencingToken?.holderIdentity === "a" && s.startedTotal === 1));
  assert.equal(a.set.hub.stats().lists, 1, "one LIST");
  assert.equal(a.set.hub.stats().watches, 1, "one WATCH for the member and every shard");
  await shutdown(clock, a);
  assert.deepEqual(holders(store, 4), ["", "", "", ""], "every shard released on shutdown");
  assert.equal(store.peek(NS, "work-member-a")?.spec?.holderIdentity, "", "the member Lease released");
  assert.equal(work.overlaps.length, 0);
  assert.ok([...work.active.values()].every((s) => s.size === 0), "every shard's work stopped");
});

test("lease set: 16 shards over 3 replicas balance (6/5/5) within 2 × retryPeriod of a join, no overlap", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const work = new Work();
  const a = replica(store, clock, work, "a");
  const b = replica(store, clock, work, "b");
  await until(clock, () => balanced([a, b]));
  assert.deepEqual(counts([a, b]), [8, 8]);
  const c = replica(store, clock, work, "c");
  const took = await until(clock, () => balanced([a, b, c]), 60000, 10);
  assert.ok(took <= 2 * TIMING.retryPeriod, `balanced after ${took} ms of clock time`);
  assert.deepEqual(counts([a, b, c]), [6, 5, 5]);
  const h = holders(store);
  assert.deepEqual([h.filter((x) => x === "a").length, h.filter((x) => x === "b").length], [6, 5]);
  assert.ok(a.set.shards().some((s) => s.givenUpTotal > 0), "a gave shards up");
  // Stable: nothing moves afterwards.
  const before = JSON.stringify(holders(store));
  await clock.advance(10 * TIMING.retryPeriod);
  assert.equal(JSON.stringify(holders(store)), before);
  await shutdown(clock, a, b, c);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: after a graceful leave the others take its shards within 2 × retryPeriod", async () => {
  const { clock, store, work, rs } = await threeBalanced();
  const [a, b, c] = rs;
  c.stop.abort();
  const took = await until(clock, () => balanced([a, b]), 60000, 10);
  assert.ok(took <= 2 * TIMING.retryPeriod, `balanced after ${took} ms of clock time`);
  assert.deepEqual(counts([a, b]), [8, 8]);
  await c.done;
  assert.deepEqual(c.set.held(), []);
  assert.equal(store.peek(NS, "work-member-c")?.spec?.holderIdentity, "");
  await shutdown(clock, a, b);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: a replica cut off stops its work; the others take its shards once they expire, no overlap", async () => {
  const { clock, work, rs } = await threeBalanced();
  const [a, b, c] = rs;
  const cShards = c.set.held();
  c.down = true;
  // c stops its own work at renewDeadline, before anyone may take over.
  await until(clock, () => c.set.held().length === 0, TIMING.renewDeadline + 500, 10);
  assert.ok(cShards.every((s) => !work.active.get(s)?.has("c")), "c's work stopped");
  const took = await until(clock, () => balanced([a, b]), 60000, 50);
  // Member expiry and each shard's own expiry come together: the shards' electors time
  // the claims from when the shared watch first saw them, not from their own start.
  assert.ok(
    took <= TIMING.leaseDuration - TIMING.renewDeadline + 4 * TIMING.retryPeriod,
    `balanced ${took} ms after c stopped; its claims expired ${
      TIMING.leaseDuration - TIMING.renewDeadline
    } ms after that`,
  );
  assert.deepEqual(counts([a, b]), [8, 8]);
  assert.deepEqual(a.set.members(), ["a", "b"]);
  await shutdown(clock, a, b, c);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: a replica that comes back after being cut off rejoins and the set balances again", async () => {
  const { clock, work, rs } = await threeBalanced();
  const c = rs[2];
  c.down = true;
  await until(clock, () => balanced(rs.slice(0, 2)), 60000, 50);
  c.down = false;
  await until(clock, () => balanced(rs), 60000, 50);
  assert.deepEqual(counts(rs), [6, 5, 5]);
  await shutdown(clock, ...rs);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: more replicas than shards: each shard held once, the rest hold none", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const work = new Work();
  const rs = ["a", "b", "c", "d"].map((id) => replica(store, clock, work, id, 2));
  await until(clock, () => rs.every((r) => r.set.members().length === 4) && counts(rs).reduce((x, y) => x + y) === 2);
  assert.deepEqual(counts(rs), [1, 1, 0, 0]);
  await clock.advance(5 * TIMING.retryPeriod);
  assert.deepEqual(counts(rs), [1, 1, 0, 0], "stable");
  await shutdown(clock, ...rs);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: run() twice at once is refused", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, new Work(), "a", 1);
  await assert.rejects(a.set.run(), /already running/);
  await shutdown(clock, a);
});

test("lease set: a GET answer overtaken by a release on the watch does not make a contender wait out the gone claim", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const work = new Work();
  // a's work takes 50 ms to stop, so its release lands after b's read was sent.
  const a = replica(store, clock, work, "a", 2, {
    onStartedLeading: async (shard, { signal }) => {
      work.start(shard, "a");
      await new Promise((res) => signal.addEventListener("abort", res, { once: true }));
      await clock.sleep(50);
      work.end(shard, "a");
    },
  });
  await until(clock, () => a.set.held().length === 2);
  // b's reads answer 100 ms late with what the Lease was when they were sent.
  const b = replica(store, clock, work, "b", 2, {
    leaseApi: (name) => {
      const api = store.api(NS, name);
      return {
        namespace: NS,
        name,
        get: async () => {
          const snapshot = store.peek(NS, name);
          await clock.sleep(100);
          return snapshot;
        },
        create: (l, s) => api.create(l, s),
        update: (l, s) => api.update(l, s),
        watch: (rv, s) => api.watch(rv, s),
      };
    },
  });
  await until(clock, () => balanced([a, b], 2));
  a.stop.abort();
  const took = await until(clock, () => b.set.held().length === 2, 60000, 10);
  assert.ok(took < 2 * TIMING.retryPeriod, `b took a's shard ${took} ms after a began to leave`);
  await shutdown(clock, a, b);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: a shard whose last work still runs is not contended again by the same replica", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const work = new Work();
  let letGo = () => {};
  const stuck = new Promise<void>((r) => (letGo = r));
  let terms = 0;
  // The first term's work ignores its signal until the test lets it go.
  const a = replica(store, clock, work, "a", 1, {
    onStartedLeading: async (shard, { signal }) => {
      work.start(shard, "a");
      terms++;
      if (terms === 1) await stuck;
      else await new Promise((res) => signal.addEventListener("abort", res, { once: true }));
      work.end(shard, "a");
    },
  });
  await until(clock, () => a.set.held().length === 1);
  a.down = true; // renewals fail: the term ends at renewDeadline, its work runs on
  await until(clock, () => a.set.held().length === 0, TIMING.renewDeadline + 500, 10);
  a.down = false;
  await clock.advance(4 * TIMING.leaseDuration);
  assert.equal(terms, 1, "no new term while the last one's work runs");
  assert.deepEqual(work.overlaps, []);
  letGo();
  await until(clock, () => a.set.held().length === 1, 3 * TIMING.leaseDuration);
  assert.equal(terms, 2);
  await shutdown(clock, a);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: a shared watch that stops delivering is noticed by the member Lease's own writes and opened again", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const work = new Work();
  const [a, b] = ["a", "b"].map((id) => replica(store, clock, work, id));
  await until(clock, () => balanced([a, b]));
  a.deafen();
  b.stop.abort();
  // Without a fresh watch a would wait for b's member Lease to expire (leaseDuration).
  const took = await until(clock, () => a.set.held().length === 16, 60000, 10);
  assert.ok(took < 3000, `a took every shard ${took} ms after b began to leave`);
  assert.equal(a.set.watchRestarts, 1);
  assert.equal(a.set.hub.stats().lists, 2, "listed again");
  await shutdown(clock, a, b);
  assert.deepEqual(work.overlaps, []);
});

test("lease set: replicas starting at once balance without waiting out claims of their own dropped contenders", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  // Each first sees only itself and contends for every shard, then sees the other and drops its surplus.
  const rs = ["a", "b"].map((identity) => {
    const stop = new AbortController();
    const set = new ShardedLeaseSet({
      namespace: NS,
      prefix: PREFIX,
      shards: 16,
      identity,
      ...TIMING,
      clock,
      leaseApi: (name) => store.api(NS, name),
      source: store.listSource(NS, { key: SHARD_SET_LABEL, value: PREFIX }),
    });
    return { set, stop, done: set.run(stop.signal) };
  });
  const took = await until(clock, () => rs[0].set.held().length + rs[1].set.held().length === 16, 60000, 10);
  assert.ok(took <= 2 * TIMING.retryPeriod, `every shard held ${took} ms after the start`);
  assert.deepEqual(rs.map((r) => r.set.held().length), [8, 8]);
  assert.deepEqual(
    holders(store).filter((h) => h !== "a" && h !== "b"),
    [],
    "no shard left with a claim nobody renews",
  );
  await shutdown(clock, ...rs);
});

test("lease set: check() names a held shard that was not renewed for leaseDuration + grace", async () => {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const a = replica(store, clock, new Work(), "a", 2);
  await until(clock, () => a.set.held().length === 2);
  assert.equal(a.set.check(0), undefined, "healthy while renewing");
  await shutdown(clock, a);
  assert.equal(a.set.check(0), undefined, "nothing held after shutdown");
});
