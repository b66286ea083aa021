// Benchmark: 16 shards over 3 replicas (ShardedLeaseSet, each replica with its
// own client: one connection and one shared watch), on the real API server.
// Per round, a third replica joins two balanced ones, then leaves gracefully;
// the sample is the time from its start (or its stop) to the moment every
// replica's held count sums to 16 with max - min <= 1. Overlaps: a shard's work
// started by one replica while another's still ran (work ends when its signal
// aborted and its promise settled).
//
//   deno run -A tests/bench/shards.ts [--rounds N] [--timings fast|default]
//
// Also run by tests/bench/bench.ts (--only shards).

import { readFileSync } from "node:fs";
import { createFetch, KubeClient, kubeShardedLeaseSet, type ShardedLeaseSet, staticToken } from "../../mod.ts";
import { DEFAULT_TIMINGS, FAST_TIMINGS, round, summarize, type Summary, type Timings } from "./common.ts";

const SHARDS = 16;

export interface ShardsBenchResult {
  shards: number;
  replicas: number;
  timings: Timings;
  /** Target: balanced within 2 × retryPeriod. */
  targetMs: number;
  joinMs: number[];
  leaveMs: number[];
  join?: Summary;
  leave?: Summary;
  /** Shards worked on by two replicas at once, over all rounds. */
  overlaps: number;
  /** LIST and WATCH requests of each replica's shared watch at the end (one each when nothing failed). */
  watchesPerReplica: number[];
  errors: string[];
}

interface Info {
  url: string;
  caFile: string;
  adminToken: string;
}

class Work {
  active = new Map<number, Set<string>>();
  overlaps = 0;
  start(shard: number, id: string) {
    const s = this.active.get(shard) ?? new Set();
    this.active.set(shard, s);
    if (s.size) this.overlaps++;
    s.add(id);
  }
  end(shard: number, id: string) {
    this.active.get(shard)?.delete(id);
  }
}

interface Replica {
  set: ShardedLeaseSet;
  stop: AbortController;
  done: Promise<void>;
}

async function replica(info: Info, ns: string, id: string, t: Timings, work: Work): Promise<Replica> {
  const client = new KubeClient({
    server: info.url,
    fetch: await createFetch({ caCert: readFileSync(info.caFile, "utf8") }),
    tokenSource: staticToken(info.adminToken),
    timeoutMs: Math.max(1000, t.renewDeadline / 2),
  });
  const set = kubeShardedLeaseSet(client, {
    namespace: ns,
    prefix: "bench",
    shards: SHARDS,
    identity: id,
    ...t,
    onStartedLeading: async (shard, { signal }) => {
      work.start(shard, id);
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      work.end(shard, id);
    },
  });
  const stop = new AbortController();
  return { set, stop, done: set.run(stop.signal) };
}

/** ms until `pred` holds, looking at every change of the sets. */
function until(sets: ShardedLeaseSet[], ms: number, pred: () => boolean): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const look = () => {
      if (!pred()) return;
      done();
      resolve(performance.now() - t0);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`not balanced within ${ms} ms`));
    }, ms);
    const done = () => {
      clearTimeout(timer);
      for (const s of sets) s.removeEventListener("change", look);
    };
    for (const s of sets) s.addEventListener("change", look);
    look();
  });
}

const balanced = (rs: Replica[]) => () => {
  const c = rs.map((r) => r.set.held().length);
  return c.reduce((a, b) => a + b, 0) === SHARDS && Math.max(...c) - Math.min(...c) <= 1;
};

/** The benchmark: `rounds` joins and graceful leaves of a third replica. */
export async function shardsBench(
  info: Info,
  namespace: (prefix: string) => Promise<string>,
  opts: { rounds: number; timings: Timings; log: (msg: string) => void },
): Promise<ShardsBenchResult> {
  const t = opts.timings;
  const ns = await namespace("shards");
  const work = new Work();
  const result: ShardsBenchResult = {
    shards: SHARDS,
    replicas: 3,
    timings: t,
    targetMs: 2 * t.retryPeriod,
    joinMs: [],
    leaveMs: [],
    overlaps: 0,
    watchesPerReplica: [],
    errors: [],
  };
  const a = await replica(info, ns, "replica-a", t, work);
  const b = await replica(info, ns, "replica-b", t, work);
  const all = [a, b];
  const wait = 4 * t.leaseDuration + 10000;
  try {
    await until([a.set, b.set], wait, balanced([a, b]));
    for (let i = 1; i <= opts.rounds; i++) {
      try {
        const c = await replica(info, ns, `replica-c${i}`, t, work);
        all.push(c);
        const joined = await until([a.set, b.set, c.set], wait, balanced([a, b, c]));
        result.joinMs.push(round(joined, 1));
        // Let the join settle (renewals, watch) before the leave.
        await new Promise((r) => setTimeout(r, t.retryPeriod * 2));
        c.stop.abort();
        const left = await until([a.set, b.set], wait, balanced([a, b]));
        result.leaveMs.push(round(left, 1));
        await c.done;
        all.pop();
        opts.log(`  shards round ${i}/${opts.rounds}: join ${round(joined, 0)} ms, leave ${round(left, 0)} ms`);
      } catch (e) {
        result.errors.push((e as Error).message);
        opts.log(`  shards round ${i}/${opts.rounds} failed: ${(e as Error).message}`);
      }
    }
    result.watchesPerReplica = [a, b].map((r) => r.set.hub.stats().watches);
  } finally {
    for (const r of all) r.stop.abort();
    await Promise.all(all.map((r) => r.done));
  }
  result.overlaps = work.overlaps;
  result.join = summarize(result.joinMs);
  result.leave = summarize(result.leaveMs);
  return result;
}

if (import.meta.main) {
  const { apiServer, freshNamespace } = await import("../env/testenv.mjs");
  const args = Deno.args;
  const rounds = Number(args[args.indexOf("--rounds") + 1] || 5) || 5;
  const timings = args.includes("default") ? DEFAULT_TIMINGS : FAST_TIMINGS;
  const info = await apiServer();
  if (!info) {
    console.error("shards bench: no API server (set LEASEHOLD_TESTENV or let tests/env/testenv.mjs start one)");
    Deno.exit(1);
  }
  const r = await shardsBench(info, (p) => freshNamespace(info, p), {
    rounds,
    timings,
    log: (m) => console.error(m),
  });
  console.log(JSON.stringify(r, null, 2));
  const t = `${timings.leaseDuration}/${timings.renewDeadline}/${timings.retryPeriod} ms`;
  console.log(
    `16 shards over 3 replicas (${t}): balanced after a join in ${r.join?.median} ms (median of ${r.join?.n}), ` +
      `after a graceful leave in ${r.leave?.median} ms (median of ${r.leave?.n}); target ${r.targetMs} ms; ` +
      `overlaps ${r.overlaps}`,
  );
  Deno.exit(r.errors.length || r.overlaps ? 1 : 0);
}
