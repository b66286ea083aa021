// The sharded lease set under a seeded schedule of faults: 3-4 replicas (real
// ShardedLeaseSets on the in-memory store and one manual clock) over 4-8 shards;
// replicas are cut off from the API server and come back, their shared watch
// goes deaf, they leave gracefully and rejoin, new ones join. Checked at every
// step: no shard's work runs in two replicas at once, and each shard's fencing
// tokens grow from term to term; after the faults, the set balances
// (max - min <= 1, every shard held) within 3 x leaseDuration + 4 x retryPeriod.
//
//   deno run -A tests/sim/shards.ts --seed 5 --runs 20
//
// Unlike tests/sim/main.ts the clocks do not drift and the network is the
// in-memory store's (faults are whole-replica: every request fails, or the
// watch stops delivering).

import { ManualClock, MemoryLeaseStore } from "../../mod.ts";
import { type ShardReplica, startShardReplica } from "../support/shard_replica.ts";
import { Rng } from "./prng.ts";

const NS = "sim";
const PREFIX = "shard";
const TIMING = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };
const STEP_MS = 100;

export interface ShardsSimResult {
  seed: number;
  shards: number;
  faults: string[];
  problems: string[];
  terms: number;
  /** Simulated ms from the end of the faults to a balanced set. */
  settledMs: number;
}

/** One seed: builds the world, runs the schedule, checks, shuts everything down. */
export async function runShardsSeed(seed: number, opts: { seconds?: number } = {}): Promise<ShardsSimResult> {
  const rng = new Rng(seed, "shards");
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const shards = rng.int(4, 8);
  const problems: string[] = [];
  const faults: string[] = [];
  const active = new Map<number, string>();
  const transitions = new Map<number, number>();
  let terms = 0;
  const replicas = new Map<string, ShardReplica>();
  const ids: string[] = [];

  const start = (id: string): ShardReplica => {
    const r = startShardReplica(store, {
      namespace: NS,
      prefix: PREFIX,
      shards,
      identity: id,
      ...TIMING,
      clock,
      random: () => rng.next(),
      onStartedLeading: async (shard, { signal, fencingToken }) => {
        terms++;
        const other = active.get(shard);
        if (other !== undefined) {
          problems.push(`${clock.now()} ms: shard ${shard}: ${id} started while ${other} still worked`);
        }
        const last = transitions.get(shard);
        if (last !== undefined && fencingToken.leaseTransitions <= last) {
          problems.push(
            `${clock.now()} ms: shard ${shard}: fencing token ${fencingToken.value} after leaseTransitions ${last}`,
          );
        }
        transitions.set(shard, fencingToken.leaseTransitions);
        active.set(shard, id);
        await new Promise((res) => signal.addEventListener("abort", res, { once: true }));
        if (active.get(shard) === id) active.delete(shard);
      },
    });
    r.done.catch((e) => problems.push(`${id}: run() threw ${e}`));
    replicas.set(id, r);
    return r;
  };

  const n = rng.int(3, 4);
  for (let i = 0; i < n; i++) ids.push(`r${i}`), start(`r${i}`);
  // The schedule: faults at random moments of the first `seconds`, each healed within it.
  const seconds = opts.seconds ?? 30;
  type Action = { at: number; run: () => void };
  const actions: Action[] = [];
  // When every fault has ended (a rejoin comes at most about a second after its leave's `dur`).
  let healAt = 0;
  const faultCount = rng.int(3, 7);
  for (let k = 0; k < faultCount; k++) {
    const at = rng.int(1, seconds - 12) * 1000;
    const dur = rng.int(1, 10) * 1000;
    const kind = rng.pick(["partition", "deaf", "leave", "join"] as const);
    if (kind === "join") {
      const id = `r${ids.length}`;
      ids.push(id);
      faults.push(`${at} join ${id}`);
      healAt = Math.max(healAt, at);
      actions.push({ at, run: () => start(id) });
      continue;
    }
    const id = rng.pick(ids.slice(0, n));
    faults.push(`${at} ${kind} ${id} for ${dur} ms`);
    healAt = Math.max(healAt, at + (kind === "partition" ? dur : kind === "leave" ? dur + 1000 : 0));
    if (kind === "partition") {
      actions.push({ at, run: () => replicas.get(id) && (replicas.get(id)!.down = true) });
      actions.push({ at: at + dur, run: () => replicas.get(id) && (replicas.get(id)!.down = false) });
    } else if (kind === "deaf") {
      actions.push({ at, run: () => replicas.get(id)?.deafen() });
    } else {
      actions.push({
        at,
        run: () => {
          const r = replicas.get(id);
          if (!r || r.stop.signal.aborted) return;
          r.stop.abort();
          // It comes back with the same identity once the old run ended and `dur` passed.
          r.done.then(() => clock.sleep(dur)).then(() => {
            if (replicas.get(id) === r) start(id);
          });
        },
      });
    }
  }
  actions.sort((a, b) => a.at - b.at);
  const quietAt = healAt + 1;
  let settledMs = -1;
  const balanced = () => {
    const live = [...replicas.values()].filter((r) => !r.stop.signal.aborted);
    const c = live.map((r) => r.set.held().length);
    return c.reduce((a, b) => a + b, 0) === shards && Math.max(...c) - Math.min(...c) <= 1;
  };
  // A replica back from a partition may first wait out its own member Lease, then a shard's claim.
  const bound = 3 * TIMING.leaseDuration + 4 * TIMING.retryPeriod;
  while (clock.now() < quietAt + bound + 5000) {
    while (actions.length && actions[0].at <= clock.now()) actions.shift()!.run();
    await clock.advance(STEP_MS);
    if (clock.now() >= quietAt && settledMs < 0 && balanced()) settledMs = clock.now() - quietAt;
    if (settledMs >= 0 && clock.now() > quietAt + settledMs + 2000) break;
  }
  if (settledMs < 0 || settledMs > bound) {
    const held = [...replicas.values()].map((r) => `${r.id}:${r.set.held().length}`).join(" ");
    problems.push(`not balanced within ${bound} ms of the last fault's end (${held})`);
  }
  // Shut down: every replica releases; the clock runs until every run() ended.
  for (const r of replicas.values()) r.down = false, r.stop.abort();
  let ended = false;
  Promise.all([...replicas.values()].map((r) => r.done)).then(() => (ended = true));
  for (let t = 0; t < 60000 && !ended; t += 500) await clock.advance(500);
  if (!ended) problems.push("a replica's run() did not end after its stop");
  if (active.size) problems.push(`work still running after shutdown: ${[...active].join(" ")}`);
  return { seed, shards, faults, problems, terms, settledMs };
}

if (import.meta.main) {
  const args = Deno.args;
  const arg = (name: string, d: number) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : d;
  };
  const first = arg("seed", 1), runs = arg("runs", 10);
  let failed = 0;
  for (let s = first; s < first + runs; s++) {
    const r = await runShardsSeed(s);
    const ok = r.problems.length === 0;
    if (!ok) failed++;
    console.log(
      `${
        ok ? "ok  " : "FAIL"
      } seed ${s}: ${r.shards} shards, ${r.terms} terms, settled ${r.settledMs} ms after the faults` +
        (ok ? "" : `\n  faults: ${r.faults.join("; ")}\n  ${r.problems.join("\n  ")}`),
    );
  }
  console.log(`${runs - failed} passed, ${failed} failed`);
  Deno.exit(failed ? 1 : 0);
}
