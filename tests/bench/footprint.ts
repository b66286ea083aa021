// Benchmarks 4 and 5: resident memory of an idle follower on each runtime (and
// of the client-go elector), against an empty program on the same runtime; and
// cold start, from spawning a follower to its first answer from the API server.

import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  type BenchContext,
  DEFAULT_TIMINGS,
  type PodIdentity,
  Proc,
  quantile,
  round,
  sleep,
  summarize,
  type Summary,
} from "./common.ts";
import { CLIENT_GO, type Impl, implName, type Replica, type Runtime, startReplica } from "./replicas.ts";

const RUNTIMES: Runtime[] = ["deno", "bun", "node"];

export interface MemoryResult {
  idleMs: number;
  samplesPerRound: number;
  /**
   * Median VmRSS (MiB) of each round, by process: "leasehold (deno)" (the entrypoint), "library (deno)"
   * (lib_follower.mjs), "baseline (deno)" (idle_baseline.mjs), "client-go".
   */
  rssMiB: Record<string, number[]>;
  /** Every VmRSS sample (MiB), by process, one array per round. */
  samplesMiB: Record<string, number[][]>;
  /** Median over rounds, MiB. */
  medianMiB: Record<string, number>;
  /** The entrypoint follower minus the baseline on the same runtime, MiB. */
  overheadMiB: Record<Runtime, number | undefined>;
  /** A follower through the library alone (lib_follower.mjs) minus the baseline, MiB. */
  libraryOverheadMiB: Record<Runtime, number | undefined>;
  /** Every form of the entrypoint (by implementation name) minus the baseline of its runtime, MiB. */
  overheadByImplMiB?: Record<string, number>;
  errors: string[];
}

export interface ColdStartResult {
  runs: number;
  /** By implementation: ms from spawn to the first log line (configuration parsed). */
  readyMs: Record<string, number[]>;
  /** By implementation: ms from spawn to the line reporting the current leader (first GET answered). */
  firstAnswerMs: Record<string, number[]>;
  summary: Record<string, { ready?: Summary; firstAnswer?: Summary }>;
  errors: string[];
}

function implsAvailable(ctx: BenchContext): Impl[] {
  const rts = RUNTIMES.filter((r) => r !== "node" || ctx.nodeDist);
  return [...rts.map((runtime): Impl => ({ kind: "leasehold", runtime })), ...(ctx.variants ?? []), CLIENT_GO];
}

export async function footprint(
  ctx: BenchContext,
  o: { memoryRounds: number; idleMs: number; samples: number; coldRuns: number },
): Promise<{ memory: MemoryResult; coldStart: ColdStartResult }> {
  const leaseName = "footprint-lease";
  const ns = await ctx.namespace("footprint");
  const sa = await ctx.identity(ns, leaseName);
  const t = DEFAULT_TIMINGS;
  const memory: MemoryResult = {
    idleMs: o.idleMs,
    samplesPerRound: o.samples,
    samplesMiB: {},
    rssMiB: {},
    medianMiB: {},
    overheadMiB: { deno: undefined, bun: undefined, node: undefined },
    libraryOverheadMiB: { deno: undefined, bun: undefined, node: undefined },
    errors: [],
  };
  const cold: ColdStartResult = { runs: o.coldRuns, readyMs: {}, firstAnswerMs: {}, summary: {}, errors: [] };
  // A client-go leader that every measured process follows.
  const leader = startReplica(ctx, CLIENT_GO, { identity: "leader", leaseName, sa, timings: t });
  let n = 0;
  try {
    await leader.leading(30000);

    // Memory: all measured processes side by side, idle, then sampled.
    for (let round_ = 1; round_ <= o.memoryRounds; round_++) {
      const procs: { key: string; proc: Proc; ready: Promise<unknown> }[] = [];
      for (const impl of implsAvailable(ctx)) {
        const r = startReplica(ctx, impl, { identity: `mem-${++n}`, leaseName, sa, timings: t });
        procs.push({ key: implName(impl), proc: r.proc, ready: r.seesLeader("leader", 30000) });
      }
      for (const runtime of RUNTIMES.filter((r) => r !== "node" || ctx.nodeDist)) {
        const proc = baseline(ctx, runtime);
        procs.push({
          key: `baseline (${runtime})`,
          proc,
          ready: proc.waitFor((l) => l.msg === "ready", 30000, '"ready"'),
        });
        const lib = libraryFollower(ctx, runtime, { identity: `mem-${++n}`, leaseName, sa });
        procs.push({
          key: `library (${runtime})`,
          proc: lib,
          ready: lib.waitFor((l) => l.msg === "new leader" && l.leader === "leader", 30000, '"new leader"'),
        });
      }
      try {
        const ready = await Promise.allSettled(procs.map((p) => p.ready));
        ready.forEach((r, i) => {
          if (r.status === "rejected") memory.errors.push(`${procs[i].key}: ${r.reason?.message ?? r.reason}`);
        });
        ctx.log(`  memory round ${round_}/${o.memoryRounds}: ${procs.length} processes idle for ${o.idleMs / 1000} s`);
        await sleep(o.idleMs);
        const samples: number[][] = procs.map(() => []);
        for (let s = 0; s < o.samples; s++) {
          if (s) await sleep(1000);
          procs.forEach((p, i) => {
            const kb = p.proc.rssKb();
            if (kb !== undefined) samples[i].push(kb / 1024);
          });
        }
        procs.forEach((p, i) => {
          if (!samples[i].length) return;
          (memory.rssMiB[p.key] ??= []).push(round(quantile(samples[i], 0.5), 2));
          (memory.samplesMiB[p.key] ??= []).push(samples[i].map((v) => round(v, 2)));
        });
      } finally {
        await Promise.all(procs.map((p) => p.proc.stop()));
      }
    }
    for (const [k, v] of Object.entries(memory.rssMiB)) memory.medianMiB[k] = round(quantile(v, 0.5), 2);
    for (const rt of RUNTIMES) {
      const a = memory.medianMiB[`leasehold (${rt})`], b = memory.medianMiB[`baseline (${rt})`];
      const c = memory.medianMiB[`library (${rt})`];
      if (a !== undefined && b !== undefined) memory.overheadMiB[rt] = round(a - b, 2);
      if (c !== undefined && b !== undefined) memory.libraryOverheadMiB[rt] = round(c - b, 2);
    }
    memory.overheadByImplMiB = {};
    for (const impl of implsAvailable(ctx)) {
      if (impl.kind !== "leasehold") continue;
      const a = memory.medianMiB[implName(impl)], b = memory.medianMiB[`baseline (${impl.runtime})`];
      if (a !== undefined && b !== undefined) memory.overheadByImplMiB[implName(impl)] = round(a - b, 2);
    }

    // Cold start: one process at a time, a discarded warm-up run of each first (fills caches), then the
    // implementations in turn, round by round, so that a change in the machine's load hits all alike.
    const impls = implsAvailable(ctx);
    for (let i = 0; i <= o.coldRuns; i++) {
      for (const impl of impls) {
        const key = implName(impl);
        let r: Replica | undefined;
        try {
          r = startReplica(ctx, impl, { identity: `cold-${++n}`, leaseName, sa, timings: t });
          const ready = await r.ready(30000);
          const first = await r.seesLeader("leader", 30000);
          if (i > 0) {
            (cold.readyMs[key] ??= []).push(round(ready.at - r.proc.startedAt, 2));
            (cold.firstAnswerMs[key] ??= []).push(round(first.at - r.proc.startedAt, 2));
          }
        } catch (e) {
          cold.errors.push(`${key}: ${(e as Error).message}`);
        } finally {
          await r?.proc.stop();
        }
      }
    }
    for (const impl of impls) {
      const key = implName(impl);
      cold.summary[key] = {
        ready: summarize(cold.readyMs[key] ?? []),
        firstAnswer: summarize(cold.firstAnswerMs[key] ?? []),
      };
      ctx.log(`  cold start ${key}: median ${cold.summary[key].firstAnswer?.median ?? "?"} ms to first answer`);
    }
  } finally {
    await leader.proc.stop();
  }
  return { memory, coldStart: cold };
}

function baseline(ctx: BenchContext, runtime: Runtime): Proc {
  const script = join(ctx.root, "tests", "bench", "idle_baseline.mjs");
  const cmd = runtime === "deno"
    ? [ctx.denoPath, "run", "-A", script]
    : [runtime === "bun" ? ctx.bunPath : ctx.nodePath, script];
  return new Proc(cmd, {
    env: { BENCH_URL: `${ctx.info.url}/readyz`, BENCH_CA: ctx.info.caFile },
    logStream: "stderr",
    name: `baseline (${runtime})`,
  });
}

function libraryFollower(
  ctx: BenchContext,
  runtime: Runtime,
  o: { identity: string; leaseName: string; sa: PodIdentity },
): Proc {
  const script = join(ctx.root, "tests", "bench", "lib_follower.mjs");
  const lib = runtime === "node" ? join(ctx.nodeDist!, "mod.js") : join(ctx.root, "mod.ts");
  const cmd = runtime === "deno"
    ? [ctx.denoPath, "run", "-A", script]
    : [runtime === "bun" ? ctx.bunPath : ctx.nodePath, script];
  return new Proc(cmd, {
    env: {
      ...o.sa.env,
      BENCH_LIB: pathToFileURL(lib).href,
      BENCH_SA_DIR: o.sa.dir,
      BENCH_LEASE: o.leaseName,
      BENCH_IDENTITY: o.identity,
    },
    logStream: "stderr",
    name: `library (${runtime})`,
  });
}
