// The election simulator's command line.
//
//   deno run -A tests/sim/main.ts [--steps N] [--minutes N] [--seed S] [--replicas K]
//       [--runs R] [--profile NAME] [--faults 3,7] [--until-ms T] [--trace] [--no-shrink] [--ci]
//
// --seed S      first seed (default 1); with no --steps and no --runs, only that seed runs
// --minutes N   simulated minutes per seed (default 10)
// --steps N     run seeds S, S+1, ... until N steps (scheduler events) have run in total
// --runs R      run R seeds
// --batch       deliveries to a replica within one millisecond run in one event-loop turn
// --mixed       every 8th seed in HTTP mode, every 4th (from 2) with --batch
// --ci          replay tests/sim/seeds.json, then seeds from 1 until 1,000,000 steps; exit 1 on any violation
// A failing seed prints its fault schedule and a trace, is shrunk, and prints a one-line replay.
// The last line is always `N passed, N failed` (a run passes when no invariant broke).

import { describeFault } from "./faults.ts";
import { shrink } from "./shrink.ts";
import { RATE_BOUND, runOnce, type RunOptions, type RunResult } from "./world.ts";

interface Args {
  [k: string]: string | boolean | undefined;
}

function parse(argv: string[]): Args {
  const a: Args = {};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (!k.startsWith("--")) throw new Error(`unexpected argument ${k}`);
    const [name, inline] = k.slice(2).split("=", 2);
    if (["ci", "trace", "no-shrink", "quiet", "http", "mixed", "batch"].includes(name)) a[name] = true;
    else a[name] = inline ?? argv[++i];
  }
  return a;
}

export interface SeedEntry {
  seed: number;
  replicas: number;
  profile: string;
  minutes: number;
  /** Kept faults; all of the generated schedule when absent. */
  faults?: number[];
  untilMs: number;
  targets?: Record<number, number>;
  http?: boolean;
  batch?: boolean;
  finding?: string;
  note?: string;
}

function replayLine(
  e: {
    seed: number;
    replicas: number;
    profile: string;
    minutes: number;
    faults?: number[];
    untilMs: number;
    targets?: Record<number, number>;
    http?: boolean;
    batch?: boolean;
  },
) {
  const faults = e.faults === undefined ? "" : ` --faults ${e.faults.join(",") || "none"}`;
  const t = Object.entries(e.targets ?? {}).map(([i, r]) => `${i}:${r}`).join(",");
  return `deno run -A tests/sim/main.ts --seed ${e.seed} --replicas ${e.replicas} --profile ${e.profile} --minutes ${e.minutes}${faults}${
    t ? ` --targets ${t}` : ""
  } --until-ms ${e.untilMs}${e.http ? " --http" : ""}${e.batch ? " --batch" : ""}`;
}

function parseTargets(s: string | boolean | undefined): Record<number, number> | undefined {
  if (typeof s !== "string" || !s) return undefined;
  return Object.fromEntries(s.split(",").map((p) => p.split(":").map(Number)));
}

function summary(r: RunResult): string {
  return `seed ${r.seed}${
    r.http ? " (http)" : ""
  }: ${r.replicas} replicas, ${r.profile} ${r.timing.leaseDuration}/${r.timing.renewDeadline}/${r.timing.retryPeriod} ms, ` +
    `${r.steps} steps, ${(r.simMs / 60000).toFixed(1)} sim min, ${r.kept.length} faults, ${r.terms} terms, ` +
    `max ${r.maxRequestsPerSecond} req/s, heal->leader max ${(r.maxHealToLeaderMs / 1000).toFixed(1)}s` +
    (r.violations.length ? `, VIOLATION ${r.violations[0].kind}` : ", ok");
}

async function report(r: RunResult, opts: RunOptions, doShrink: boolean, out: SeedEntry[], brief = false) {
  const v = r.violations[0];
  console.log(`\n!!! seed ${r.seed}: ${v.kind} at ${(v.at / 1000).toFixed(3)}s (step ${v.step}): ${v.msg}`);
  if (r.configRejected) console.log(`    (profile adjusted: ${r.configRejected})`);
  if (brief) {
    const all = r.kept.length === r.schedule.length;
    const rl = replayLine({
      ...r,
      minutes: opts.minutes,
      faults: all ? undefined : r.kept,
      untilMs: Math.ceil(v.at + 1),
      batch: opts.batch,
    });
    console.log(`    replay: ${all ? rl.replace(/ --targets \S+/, "") : rl}`);
    return;
  }
  console.log("    fault schedule (up to the violation):");
  for (const f of r.schedule) {
    if (f.at <= v.at && r.kept.includes(f.i)) console.log(`      ${describeFault(f)}`);
  }
  console.log("    trace (last lines):");
  for (const l of r.trace.slice(-40)) console.log(`      ${l}`);
  const all = r.kept.length === r.schedule.length;
  console.log(
    `    replay: ${
      replayLine({
        ...r,
        minutes: opts.minutes,
        faults: all ? undefined : r.kept,
        untilMs: Math.ceil(v.at + 1),
        batch: opts.batch,
      })
    }`,
  );
  if (!doShrink) return;
  const rep = await shrink(opts, r, (s) => console.log(s));
  console.log(
    `    shrunk seed ${rep.seed} ${rep.profile} (${rep.runs} runs) to ${rep.faults.length} fault(s), ${
      (rep.untilMs / 1000).toFixed(1)
    }s: ${rep.faults.map((i) => describeFault(r.schedule[i])).join("; ") || "no faults"}`,
  );
  console.log(`    replay: ${replayLine({ ...rep, http: opts.http, batch: opts.batch })}`);
  const entry: SeedEntry = {
    seed: rep.seed,
    replicas: rep.replicas,
    profile: rep.profile,
    minutes: rep.minutes,
    faults: rep.faults,
    untilMs: rep.untilMs,
    targets: rep.targets,
    ...(opts.http ? { http: true } : {}),
    ...(opts.batch ? { batch: true } : {}),
    note: `${rep.kind}: ${v.msg}`,
  };
  console.log(`    seeds.json entry: ${JSON.stringify(entry)}`);
  out.push(entry);
}

async function main() {
  const a = parse(Deno.args);
  const t0 = performance.now();
  const minutes = a.minutes !== undefined ? Number(a.minutes) : 10;
  const firstSeed = a.seed !== undefined ? Number(a.seed) : 1;
  const replicas = a.replicas !== undefined ? Number(a.replicas) : undefined;
  if (replicas !== undefined && !(replicas >= 1 && replicas <= 7)) throw new Error("--replicas must be 1 to 7");
  const ci = !!a.ci;
  const stepGoal = a.steps !== undefined ? Number(a.steps) : ci ? 1_000_000 : undefined;
  const runsGoal = a.runs !== undefined ? Number(a.runs) : stepGoal === undefined ? 1 : Infinity;
  const doShrink = !a["no-shrink"] && !ci;
  const quiet = !!a.quiet || ci;
  const budgetMs = a["budget-s"] !== undefined ? Number(a["budget-s"]) * 1000 : ci ? 170_000 : Infinity;
  let passed = 0, failed = 0, steps = 0, simMs = 0, runs = 0;
  const found: SeedEntry[] = [];
  const failedSeeds: string[] = [];

  const one = async (opts: RunOptions, label: string) => {
    const r = await runOnce(opts);
    runs++;
    steps += r.steps;
    simMs += r.simMs;
    if (r.violations.length) {
      failed++;
      failedSeeds.push(`${label}: ${r.violations[0].kind}`);
      console.log(summary(r));
      await report(r, opts, doShrink, found, ci);
    } else {
      passed++;
      if (!quiet) console.log(summary(r));
    }
  };

  if (ci) {
    const path = new URL("./seeds.json", import.meta.url);
    const list: SeedEntry[] = JSON.parse(await Deno.readTextFile(path));
    for (const e of list) {
      await one(
        {
          seed: e.seed,
          replicas: e.replicas,
          profile: e.profile,
          minutes: e.minutes,
          faults: e.faults,
          untilMs: e.untilMs,
          targets: e.targets,
          http: e.http,
          batch: e.batch,
        },
        `regression seed ${e.seed}${e.finding ? ` (finding ${e.finding})` : ""}`,
      );
    }
    console.log(`replayed ${list.length} regression seeds from tests/sim/seeds.json`);
  }
  const faults = a.faults === undefined
    ? undefined
    : a.faults === "none"
    ? []
    : String(a.faults).split(",").map(Number);
  for (let seed = firstSeed; runs < runsGoal + (ci ? Infinity : 0); seed++) {
    if (stepGoal !== undefined && steps >= stepGoal) break;
    if (performance.now() - t0 > budgetMs) {
      console.log(`time budget of ${budgetMs / 1000}s reached`);
      break;
    }
    await one({
      seed,
      replicas,
      profile: a.profile as string | undefined,
      minutes,
      faults,
      untilMs: a["until-ms"] !== undefined ? Number(a["until-ms"]) : undefined,
      targets: parseTargets(a.targets),
      batch: !!a.batch || ((!!a.mixed || ci) && seed % 4 === 2),
      http: !!a.http || ((!!a.mixed || ci) && seed % 8 === 0),
      trace: !!a.trace,
    }, `seed ${seed}`);
    if (stepGoal === undefined && runs >= runsGoal) break;
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `\n${runs} runs, ${steps} steps (scheduler events), ${(simMs / 3600000).toFixed(2)} simulated election-hours, ` +
      `seeds ${firstSeed}..${firstSeed + runs - 1}, ${secs.toFixed(1)} s wall, ${Math.round(steps / secs)} steps/s; ` +
      `request bound ${RATE_BOUND}/s per replica`,
  );
  if (failedSeeds.length) {
    console.log(
      `failed: ${failedSeeds.slice(0, 40).join("; ")}${
        failedSeeds.length > 40 ? `; and ${failedSeeds.length - 40} more` : ""
      }`,
    );
  }
  if (stepGoal !== undefined && steps < stepGoal && ci) {
    console.log(`only ${steps} of ${stepGoal} steps within the time budget`);
    failed++;
  }
  console.log(`${passed} passed, ${failed} failed`);
  Deno.exit(failed ? 1 : 0);
}

if (import.meta.main) await main();
