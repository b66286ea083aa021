// Benchmarks 1 and 2: how long a follower takes to lead after the leader is
// stopped gracefully (SIGTERM: it releases the Lease) or crashes (SIGKILL).
//
// A chain of replicas on one Lease: the leader A runs; a follower B starts and
// reports A as leader; after a random pause A is signalled; the sample is the
// time from the signal to B's "started leading" line (arrival times in this
// process). B is then the leader of the next run.

import { type BenchContext, round, sleep, summarize, type Summary, type Timings } from "./common.ts";
import { type Impl, implName, type Replica, startReplica } from "./replicas.ts";

export interface TakeoverRun {
  /** ms from the signal to the follower's started-leading line. */
  takeoverMs: number;
  /** ms from the signal to the old leader's release line (graceful only, when it logs one). */
  releaseMs?: number;
  /** ms from the follower's start to the pause before the signal (how long it followed). */
  followedMs: number;
}

export interface TakeoverResult {
  impl: string;
  signal: "SIGTERM" | "SIGKILL";
  timings: Timings;
  runs: TakeoverRun[];
  samplesMs: number[];
  summary?: Summary;
  errors: string[];
}

export async function takeoverSeries(
  ctx: BenchContext,
  impl: Impl,
  signal: "SIGTERM" | "SIGKILL",
  runs: number,
  timings: Timings,
): Promise<TakeoverResult> {
  const tag = signal === "SIGTERM" ? "handover" : "failover";
  const leaseName = `${tag}-lease`;
  const ns = await ctx.namespace(`${tag}-${impl.kind === "client-go" ? "cg" : "lh"}`);
  const sa = await ctx.identity(ns, leaseName);
  const result: TakeoverResult = { impl: implName(impl), signal, timings, runs: [], samplesMs: [], errors: [] };
  const start = (i: number) => startReplica(ctx, impl, { identity: `r${i}`, leaseName, sa, timings });
  const waitMs = timings.leaseDuration + 10000;
  let leader: Replica = start(0);
  try {
    await leader.leading(30000);
    for (let i = 1; i <= runs; i++) {
      const follower = start(i);
      try {
        const seen = await follower.seesLeader(leader.identity, 30000);
        // A random pause: at least 1 s so the follower's watch is up, then a random
        // phase within a client-go poll interval (RetryPeriod × up to 2.2).
        await sleep(1000 + Math.random() * timings.retryPeriod * 2.2);
        const t0 = performance.now();
        leader.proc.kill(signal);
        const took = await follower.leading(waitMs);
        let releaseMs: number | undefined;
        if (signal === "SIGTERM") {
          const rel = await leader.released(100).catch(() => undefined);
          if (rel) releaseMs = round(rel.at - t0, 2);
        }
        const run = { takeoverMs: round(took.at - t0, 2), releaseMs, followedMs: round(t0 - seen.at, 0) };
        result.runs.push(run);
        result.samplesMs.push(run.takeoverMs);
        ctx.log(`  ${implName(impl)} ${signal} run ${i}/${runs}: ${run.takeoverMs} ms`);
      } catch (e) {
        result.errors.push((e as Error).message);
        ctx.log(`  ${implName(impl)} ${signal} run ${i}/${runs} failed: ${(e as Error).message}`);
        // Continue with whichever replica leads next; give the lease time to settle.
        await leader.proc.stop("SIGKILL");
        leader = follower;
        await leader.leading(waitMs).catch(() => {});
        continue;
      }
      // The old leader exits by itself after SIGTERM; make sure it is gone.
      await leader.proc.stop(signal, 5000);
      leader = follower;
    }
  } finally {
    await leader.proc.stop("SIGTERM");
  }
  result.summary = summarize(result.samplesMs);
  return result;
}
