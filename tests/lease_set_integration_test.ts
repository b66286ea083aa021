// The sharded lease set against the real API server: 16 shards over 3
// replicas (each its own client, one connection and one shared watch), balanced
// after a join and after a graceful leave, with no overlap on any shard.
import { test as _guard } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createFetch, KubeClient, kubeShardedLeaseSet, type ShardedLeaseSet, staticToken } from "../mod.ts";
import { freshNamespace } from "./env/testenv.mjs";
import { serverTest } from "./support/needs_server.mjs";

void _guard;
type Info = { url: string; caFile: string; adminToken: string };
const SHARDS = 16;
const TIMING = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 1000 };

/** Per shard: who works on it now, every overlap, and the fencing tokens in start order. */
class Work {
  active = new Map<number, Set<string>>();
  overlaps: string[] = [];
  transitions = new Map<number, number[]>();
  start(shard: number, id: string, transitions: number): void {
    const s = this.active.get(shard) ?? new Set();
    this.active.set(shard, s);
    if (s.size) this.overlaps.push(`shard ${shard}: ${id} started while ${[...s].join(",")} worked`);
    s.add(id);
    const t = this.transitions.get(shard) ?? [];
    t.push(transitions);
    this.transitions.set(shard, t);
  }
  end(shard: number, id: string): void {
    this.active.get(shard)?.delete(id);
  }
}

interface Replica {
  set: ShardedLeaseSet;
  stop: AbortController;
  done: Promise<void>;
}

async function replica(info: Info, ns: string, id: string, work: Work): Promise<Replica> {
  const client = new KubeClient({
    server: info.url,
    fetch: await createFetch({ caCert: readFileSync(info.caFile, "utf8") }),
    tokenSource: staticToken(info.adminToken),
    timeoutMs: TIMING.renewDeadline / 2,
  });
  const set = kubeShardedLeaseSet(client, {
    namespace: ns,
    prefix: "work",
    shards: SHARDS,
    identity: id,
    ...TIMING,
    onStartedLeading: async (shard, { signal, fencingToken }) => {
      work.start(shard, id, fencingToken.leaseTransitions);
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      work.end(shard, id);
    },
  });
  const stop = new AbortController();
  return { set, stop, done: set.run(stop.signal) };
}

/** Resolves when `pred` holds, looking at every change of the sets; fails after `ms`. */
function until(what: string, sets: ShardedLeaseSet[], ms: number, pred: () => boolean): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const look = () => {
      if (!pred()) return;
      cleanup();
      resolve(performance.now() - start);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: not within ${ms} ms`));
    }, ms);
    const cleanup = () => {
      clearTimeout(timer);
      for (const s of sets) s.removeEventListener("change", look);
    };
    for (const s of sets) s.addEventListener("change", look);
    look();
  });
}

const counts = (rs: Replica[]) => rs.map((r) => r.set.held().length);
const balanced = (rs: Replica[]) => {
  const c = counts(rs);
  return c.reduce((a, b) => a + b, 0) === SHARDS && Math.max(...c) - Math.min(...c) <= 1;
};

serverTest("lease set: 16 shards over 3 replicas balance after a join and a graceful leave, no overlap", {
  timeout: 120000,
}, async (_t, info: Info) => {
  const ns = await freshNamespace(info, "shards");
  const work = new Work();
  const a = await replica(info, ns, "replica-a", work);
  const b = await replica(info, ns, "replica-b", work);
  const all: Replica[] = [a, b];
  try {
    await until("two replicas hold 8 shards each", [a.set, b.set], 60000, () => balanced([a, b]));
    assert.deepEqual(counts([a, b]), [8, 8]);
    // A third replica joins: the others give up their surplus, it takes them.
    const c = await replica(info, ns, "replica-c", work);
    all.push(c);
    const rs = [a, b, c];
    const joined = await until("balanced after the join", rs.map((r) => r.set), 30000, () => balanced(rs));
    console.error(`lease set: balanced ${Math.round(joined)} ms after the third replica started`);
    assert.deepEqual(counts(rs).sort(), [5, 5, 6]);
    assert.ok(
      joined <= 2 * TIMING.retryPeriod,
      `balanced within 2 × retryPeriod (${2 * TIMING.retryPeriod} ms) of the join: took ${Math.round(joined)} ms`,
    );
    for (const r of rs) {
      const s = r.set.hub.stats();
      assert.equal(s.watches, 1, `one shared watch per replica (${JSON.stringify(s)})`);
    }
    // The third leaves gracefully: its shards are released and taken by the others.
    c.stop.abort();
    const left = await until("balanced after the leave", [a.set, b.set], 30000, () => balanced([a, b]));
    console.error(`lease set: balanced ${Math.round(left)} ms after the third replica began to leave`);
    assert.deepEqual(counts([a, b]), [8, 8]);
    assert.ok(
      left <= 2 * TIMING.retryPeriod,
      `balanced within 2 × retryPeriod (${2 * TIMING.retryPeriod} ms) of the leave: took ${Math.round(left)} ms`,
    );
    await c.done;
  } finally {
    for (const r of all) r.stop.abort();
    await Promise.all(all.map((r) => r.done));
  }
  assert.deepEqual(work.overlaps, [], "no shard worked on by two replicas at once");
  for (const [shard, t] of work.transitions) {
    for (let i = 1; i < t.length; i++) {
      assert.ok(t[i] > t[i - 1], `shard ${shard}: fencing tokens grow with every term (${t.join(",")})`);
    }
  }
});
