// Turning the results into results.md (tables and methods) and handover.svg.

import type { ColdStartResult, MemoryResult } from "./footprint.ts";
import type { LoadResult } from "./load.ts";
import type { ScaleResult } from "./scale.ts";
import type { PhasesResult } from "./phases.ts";
import type { TakeoverResult } from "./takeover.ts";
import type { CoordinatedResults, EventCost } from "./coordinated.ts";
import type { ShardsBenchResult } from "./shards.ts";
import { DEFAULT_TIMINGS, FAST_TIMINGS, type Summary, type Timings } from "./common.ts";

export interface Takeovers {
  leasehold: TakeoverResult;
  clientGo: TakeoverResult;
  errors: string[];
}

export interface Target {
  benchmark: string;
  target: string;
  value: string;
  met: boolean;
}

export interface BenchResults {
  mode: "full" | "smoke";
  command: string;
  startedAt: string;
  wallSeconds: number;
  machine: {
    cpuModel: string;
    cores: number;
    os: string;
    arch: string;
    memoryMiB: number;
    /** 1, 5 and 15 minute load averages: other work on the machine shows here. */
    loadAverageAtStart: number[];
    loadAverageAtEnd?: number[];
  };
  versions: Record<string, string | undefined>;
  server: { url: string; sharedFromEnv: boolean };
  benchmarks: {
    handover?: Takeovers;
    failover?: Takeovers;
    load?: LoadResult;
    memory?: MemoryResult;
    coldStart?: ColdStartResult;
    phases?: PhasesResult;
    scale?: ScaleResult;
    coordinated?: CoordinatedResults;
    /** One result per timing set (bench.ts runs one; older files hold a single object). */
    shards?: ShardsBenchResult | ShardsBenchResult[];
  };
  targets?: Target[];
  failures: string[];
  /** Sizes in bytes of the one-file forms of the entrypoint measured (bundles per runtime, the executable). */
  entrypointBytes?: { deno?: number; bun?: number; node?: number; executable?: number };
  /** With --merge: the benchmarks kept from an earlier run, and that run. */
  merged?: {
    kept: string[];
    from: { startedAt: string; command: string; wallSeconds: number; loadAverageAtStart: number[] };
  };
}

const fmt = (v: number | undefined | null, digits = 1): string => {
  if (v === undefined || v === null || !Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  return v.toFixed(digits);
};

/** leasehold / client-go, to two significant digits. */
export const ratio = (a: number | undefined | null, b: number | undefined | null): string => {
  if (a === undefined || a === null || b === undefined || b === null || !Number.isFinite(a) || !Number.isFinite(b)) {
    return "–";
  }
  if (b === 0) return a === 0 ? "1 (both 0)" : "∞";
  const r = a / b;
  if (r === 0) return "0";
  return r.toPrecision(2);
};

function medianOf(xs: (number | undefined)[]): number | undefined {
  const v = xs.filter((x): x is number => typeof x === "number").sort((a, b) => a - b);
  return v.length ? v[Math.ceil(v.length / 2) - 1] : undefined;
}

/** "15s/10s/2s" or "4s/3s/500ms": LeaseDuration/RenewDeadline/RetryPeriod. */
const timingsLabel = (t: Timings) =>
  [t.leaseDuration, t.renewDeadline, t.retryPeriod].map((ms) => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`))
    .join("/");

/** A count per term: whole numbers as they are, averages to two decimals. */
const perTerm = (v: number | undefined) => (v !== undefined && Number.isInteger(v) ? String(v) : fmt(v, 2));

/** The shards results as a list, one per timing set. */
const shardRuns = (x: ShardsBenchResult | ShardsBenchResult[] | undefined): ShardsBenchResult[] =>
  x === undefined ? [] : Array.isArray(x) ? x : [x];

/** "deno" from "leasehold (deno, bundle)". */
const runtimeOf = (impl: string) => /^leasehold \((\w+)/.exec(impl)?.[1] ?? impl;

/** Cold-start target, spawn to the first answer: 150 ms on Deno, 120 ms on Bun and Node. */
const coldStartLimitMs = (runtime: string) => (runtime === "deno" ? 150 : 120);

export function evaluateTargets(r: BenchResults): Target[] {
  const t: Target[] = [];
  const h = r.benchmarks.handover?.leasehold.summary;
  if (h) {
    t.push({ benchmark: "hand-over", target: "median < 50 ms", value: `${fmt(h.median)} ms`, met: h.median < 50 });
    t.push({ benchmark: "hand-over", target: "p99 < 250 ms", value: `${fmt(h.p99)} ms`, met: h.p99 < 250 });
  }
  const f = r.benchmarks.failover?.leasehold.summary;
  if (f) {
    const limit = FAST_TIMINGS.leaseDuration + 100;
    t.push({
      benchmark: "crash fail-over",
      target: `median ≤ LeaseDuration + 100 ms (${limit} ms)`,
      value: `${fmt(f.median)} ms`,
      met: f.median <= limit,
    });
  }
  const l = r.benchmarks.load;
  if (l) {
    const max = 60000 / l.retryPeriodMs;
    if (l.leasehold) {
      t.push({
        benchmark: "steady load",
        target: `leasehold leader ≤ 1 write per RetryPeriod (${max}/min)`,
        value: `${fmt(l.leasehold.leader.writes)}/min`,
        met: l.leasehold.leader.writes <= max,
      });
      const polls = l.leasehold.follower.reads + l.leasehold.follower.writes;
      t.push({
        benchmark: "steady load",
        target: "leasehold follower: 0 polling requests while watching",
        value: `${fmt(polls)}/min (+ ${fmt(l.leasehold.follower.watches)} watch starts/min)`,
        met: polls === 0 && l.leasehold.follower.watches === 0,
      });
    }
    if (l.clientGo) {
      t.push({
        benchmark: "steady load",
        target: `client-go leader ≤ 1 write per RetryPeriod (${max}/min), for reference`,
        value: `${fmt(l.clientGo.leader.writes)}/min`,
        met: l.clientGo.leader.writes <= max,
      });
    }
  }
  const m = r.benchmarks.memory;
  if (m) {
    const byImpl = m.overheadByImplMiB ??
      Object.fromEntries(Object.entries(m.overheadMiB).map(([rt, v]) => [`leasehold (${rt})`, v]));
    for (const [impl, v] of Object.entries(byImpl)) {
      if (v === undefined) continue;
      const rt = runtimeOf(impl);
      t.push({
        benchmark: "memory",
        target: `${impl}: overhead over an empty ${rt} program < 5 MB`,
        value: `${fmt(v)} MiB`,
        met: v * 1.048576 < 5,
      });
    }
  }
  const cs = r.benchmarks.coldStart;
  if (cs) {
    for (const [impl, x] of Object.entries(cs.summary)) {
      const v = x.firstAnswer?.median;
      if (impl === "client-go" || v === undefined) continue;
      const limit = coldStartLimitMs(runtimeOf(impl));
      t.push({
        benchmark: "cold start",
        target: `${impl}: median to the first answer ≤ ${limit} ms`,
        value: `${fmt(v)} ms`,
        met: v <= limit,
      });
    }
  }
  const big = r.benchmarks.scale?.shared?.find((p) => p.mode === "shared" && p.leases === 1000);
  if (big) {
    const what = "1000 Leases in one process, one client and one watch";
    t.push({
      benchmark: "scale",
      target: `${what}: ≤ 200 µs CPU per renewal`,
      value: `${fmt(big.cpuUsPerRenewal)} µs`,
      met: big.cpuUsPerRenewal <= 200,
    });
    t.push({
      benchmark: "scale",
      target: `${what}: ≤ 64 KiB RSS per Lease`,
      value: `${fmt(big.rssPerLeaseKiB)} KiB`,
      met: big.rssPerLeaseKiB <= 64,
    });
    if (big.connections) {
      t.push({
        benchmark: "scale",
        target: `${what}: ≤ 2 TCP connections to the API server`,
        value: `${big.connections.most} at once, ${big.connections.distinct} over the window`,
        met: big.connections.most <= 2 && big.connections.distinct <= 2,
      });
    }
  }
  for (const sh of shardRuns(r.benchmarks.shards)) {
    const name = `${sh.shards} shards over ${sh.replicas} replicas (${timingsLabel(sh.timings)})`;
    for (const [when, x] of [["a join", sh.join], ["a graceful leave", sh.leave]] as const) {
      t.push({
        benchmark: name,
        target: `balanced (max − min ≤ 1) within 2 × RetryPeriod (${sh.targetMs} ms) after ${when}, every round`,
        value: (x ? `median ${fmt(x.median)} ms, max ${fmt(x.max)} ms (n=${x.n})` : "not measured") +
          (sh.errors.length ? `; ${sh.errors.length} round(s) failed` : ""),
        // A failed round is one that did not balance in time (or could not start).
        met: !!x && x.max <= sh.targetMs && sh.errors.length === 0,
      });
    }
    t.push({
      benchmark: name,
      target: "0 overlaps per shard (a shard's work started while another replica's still ran)",
      value: String(sh.overlaps),
      met: sh.overlaps === 0,
    });
  }
  return t;
}

/** The leasehold implementations among `keys`, the runtimes' main forms first. */
function leaseholdImpls(values: Record<string, unknown>): string[] {
  const all = Object.keys(values).filter((k) => k.startsWith("leasehold ("));
  const rank = (k: string) => ["deno", "bun", "node"].indexOf(runtimeOf(k)) * 2 + (k.includes(",") ? 1 : 0);
  return all.sort((a, b) => rank(a) - rank(b));
}

function table(head: string[], rows: string[][], align?: string[]): string {
  const al = align ?? head.map((_, i) => (i === 0 ? "---" : "---:"));
  return [`| ${head.join(" | ")} |`, `| ${al.join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

export function markdownReport(r: BenchResults): string {
  const b = r.benchmarks;
  const v = r.versions;
  const out: string[] = [];
  out.push("## Benchmarks: leasehold and client-go on the same API server");
  out.push("");
  out.push(
    `${r.mode === "smoke" ? "**Smoke run (tiny counts; numbers are not meaningful).** " : ""}` +
      `Measured ${r.startedAt.slice(0, 10)} with \`${r.command}\` in ${fmt(r.wallSeconds / 60, 1)} min on ` +
      `${r.machine.cpuModel} (${r.machine.cores} cores, ${r.machine.memoryMiB} MiB), ${r.machine.os}; load ` +
      `average ${r.machine.loadAverageAtStart?.[0]?.toFixed(2) ?? "?"} at the start. ` +
      `Deno ${v.deno}, Bun ${v.bun}, Node ${v.node}, ${v.go ?? "Go ?"}; client-go ${v.clientGo}; ` +
      `kube-apiserver ${v.kubeApiserver} with embedded etcd (tests/apiserver) on the same machine. ` +
      `leasehold ${v.leasehold} runs as the entrypoint (\`lib/cli.ts\`, Deno unless stated), client-go as ` +
      "`tests/apiserver/cmd/clientgo-elector`. Ratios are leasehold / client-go: below 1 means leasehold is " +
      "faster or cheaper.",
  );
  out.push("");
  if (r.merged?.kept.length) {
    const f = r.merged.from;
    out.push(
      `Only ${Object.keys(b).filter((k) => !r.merged!.kept.includes(k)).join(", ")} were measured in that run; ` +
        `${r.merged.kept.join(", ")} come from the run of ${f.startedAt.slice(0, 10)} with \`${f.command}\` ` +
        `(${fmt(f.wallSeconds / 60, 1)} min; load average ${f.loadAverageAtStart?.[0]?.toFixed(2) ?? "?"} at ` +
        "its start), on the same machine.",
    );
    out.push("");
  }

  const rows: string[][] = [];
  const h = b.handover;
  if (h) {
    const a = h.leasehold.summary, c = h.clientGo.summary;
    rows.push([
      "1. Graceful hand-over, SIGTERM (15s/10s/2s)",
      `median ms (n=${a?.n ?? 0})`,
      fmt(a?.median),
      fmt(c?.median),
      ratio(a?.median, c?.median),
      "< 50 ms",
    ]);
    rows.push(["", "p99 ms", fmt(a?.p99), fmt(c?.p99), ratio(a?.p99, c?.p99), "< 250 ms"]);
  }
  const f = b.failover;
  if (f) {
    const a = f.leasehold.summary, c = f.clientGo.summary;
    rows.push([
      "2. Crash fail-over, SIGKILL (4s/3s/500ms)",
      `median ms (n=${a?.n ?? 0})`,
      fmt(a?.median),
      fmt(c?.median),
      ratio(a?.median, c?.median),
      `≤ ${FAST_TIMINGS.leaseDuration + 100} ms`,
    ]);
    rows.push(["", "p99 ms", fmt(a?.p99), fmt(c?.p99), ratio(a?.p99, c?.p99), ""]);
  }
  const l = b.load;
  if (l) {
    const a = l.leasehold, c = l.clientGo;
    rows.push([
      "3. Steady load, leader (15s/10s/2s)",
      "requests/min (writes)",
      a ? `${fmt(a.leader.total)} (${fmt(a.leader.writes)})` : "–",
      c ? `${fmt(c.leader.total)} (${fmt(c.leader.writes)})` : "–",
      ratio(a?.leader.total, c?.leader.total),
      `≤ ${60000 / l.retryPeriodMs} writes/min`,
    ]);
    rows.push([
      "3. Steady load, idle follower",
      "requests/min",
      a ? fmt(a.follower.total) : "–",
      c ? fmt(c.follower.total) : "–",
      ratio(a?.follower.total, c?.follower.total),
      "0 polls while watching",
    ]);
  }
  const m = b.memory;
  if (m) {
    const cg = m.medianMiB["client-go"];
    for (const impl of leaseholdImpls(m.medianMiB)) {
      const lh = m.medianMiB[impl];
      const rt = runtimeOf(impl) as "deno" | "bun" | "node";
      const main = impl === `leasehold (${rt})`;
      rows.push([
        `4. Memory, idle follower, ${impl.replace(/^leasehold \((.*)\)$/, "$1")}`,
        `RSS MiB (overhead ${fmt(m.overheadByImplMiB?.[impl] ?? m.overheadMiB[rt], 1)}` +
        `${main ? `; library only ${fmt(m.libraryOverheadMiB?.[rt], 1)}` : ""})`,
        fmt(lh),
        fmt(cg),
        ratio(lh, cg),
        "overhead < 5 MB",
      ]);
    }
  }
  const cs = b.coldStart;
  if (cs) {
    const cg = cs.summary["client-go"]?.firstAnswer?.median;
    for (const [k, s] of Object.entries(cs.summary)) {
      if (k === "client-go") continue;
      rows.push([
        `5. Cold start, ${k}`,
        "median ms to first answer",
        fmt(s.firstAnswer?.median),
        fmt(cg),
        ratio(s.firstAnswer?.median, cg),
        `≤ ${coldStartLimitMs(runtimeOf(k))} ms`,
      ]);
    }
  }
  const s = b.scale;
  if (s) {
    const big = s.leases.at(-1);
    if (big) {
      rows.push([
        `6. ${big.leases} Leases in one Deno process`,
        "µs CPU / renewal; RSS MiB",
        `${fmt(big.cpuUsPerRenewal)}; ${fmt(big.rssMiB)}`,
        "no counterpart",
        "–",
        "",
      ]);
    }
    for (const lp of s.replicas.filter((p) => p.impl === "leasehold")) {
      const cgp = s.replicas.find((p) => p.impl === "client-go" && p.replicas === lp.replicas) ??
        (s.clientGoExtrapolated?.replicas === lp.replicas ? s.clientGoExtrapolated : undefined);
      const extra = cgp && cgp.windowSeconds === 0;
      rows.push([
        `6. ${lp.replicas} candidates on one Lease`,
        "requests/s, all replicas",
        fmt(lp.requestsPerSecond, 2),
        cgp ? `${fmt(cgp.requestsPerSecond, 2)}${extra ? " (extrapolated)" : ""}` : "–",
        ratio(lp.requestsPerSecond, cgp?.requestsPerSecond),
        "",
      ]);
    }
  }
  const co = b.coordinated;
  if (co) {
    const a = co.handover.leasehold, c = co.handover.clientGo;
    rows.push([
      `7. Coordinated hand-over, preferredHolder written → new holder (${timingsLabel(co.timings)})`,
      `median ms (n=${a?.n ?? 0})`,
      fmt(a?.median),
      fmt(c?.median),
      ratio(a?.median, c?.median),
      "",
    ]);
    rows.push(["", "p99 ms", fmt(a?.p99), fmt(c?.p99), ratio(a?.p99, c?.p99), ""]);
    const el = co.events.leasehold, ec = co.events.clientGo;
    rows.push([
      "7. Events, one replica's term (start, lead, SIGTERM)",
      "requests per term for Events",
      perTerm(el?.perTerm),
      perTerm(ec?.perTerm),
      ratio(el?.perTerm, ec?.perTerm),
      "",
    ]);
  }
  for (const sh of shardRuns(b.shards)) {
    const t = `≤ ${sh.targetMs} ms`;
    rows.push([
      `8. ${sh.shards} shards over ${sh.replicas} replicas (${timingsLabel(sh.timings)})`,
      `balanced after a join, median ms (n=${sh.join?.n ?? 0}; max)`,
      sh.join ? `${fmt(sh.join.median)} (${fmt(sh.join.max)})` : "–",
      "no counterpart",
      "–",
      t,
    ]);
    rows.push([
      "",
      `balanced after a graceful leave, median ms (n=${sh.leave?.n ?? 0}; max)`,
      sh.leave ? `${fmt(sh.leave.median)} (${fmt(sh.leave.max)})` : "–",
      "no counterpart",
      "–",
      t,
    ]);
    rows.push(["", "overlaps, all shards and rounds", String(sh.overlaps), "no counterpart", "–", "0"]);
  }
  out.push(
    table(
      ["Benchmark", "Metric", "leasehold", "client-go", "leasehold/client-go", "Target"],
      rows,
      ["---", "---", "---:", "---:", "---:", "---"],
    ),
  );
  out.push("");

  // Evaluated afresh, so a re-render shows the targets of the current code.
  const targets = evaluateTargets(r);
  if (targets.length) {
    out.push("Targets:");
    out.push("");
    for (const t of targets) out.push(`- ${t.met ? "met" : "**missed**"}: ${t.benchmark}, ${t.target}: ${t.value}`);
    out.push("");
  }
  if (r.failures.length) {
    out.push("Failures during the run:");
    out.push("");
    for (const e of r.failures) out.push(`- ${e.split("\n")[0]}`);
    out.push("");
  }

  out.push("### Details and method");
  out.push("");
  out.push(
    "Every number comes from real processes talking HTTPS to the real API server; the API server, etcd, the " +
      "replicas and this benchmark share the machine's cores. Times are measured in the benchmark process from the " +
      "moment it sends a signal or spawns a process to the moment the relevant log line arrives on a pipe. " +
      "Request counts come from the API server's `apiserver_request_total` for `leases` (watch starts are taken " +
      "from ended watches plus the change in `apiserver_longrunning_requests`), with the API server's own " +
      "identity-Lease renewals (and any other writes outside the measured namespace, seen by a cluster-wide watch) " +
      "subtracted. p99 is nearest-rank: with 10 samples it is the maximum.",
  );
  out.push("");
  if (h) {
    out.push(
      `**1. Graceful hand-over.** A leader and a follower on one Lease at the default timings (15s/10s/2s). ` +
        `The follower starts, reports the leader, then waits 1 s plus a random part of a client-go poll interval ` +
        `(0–${(DEFAULT_TIMINGS.retryPeriod * 2.2) / 1000} s) so the kill lands at a random phase; the leader gets ` +
        `SIGTERM and the sample is the time to the follower's "started leading" line (client-go: "started" event). ` +
        `The follower then leads the next run. leasehold releases the Lease on SIGTERM and its follower is woken by its ` +
        `watch; client-go also releases (ReleaseOnCancel) but its follower notices only at its next poll, ` +
        `RetryPeriod × (1 + up to 1.2 jitter) apart.`,
    );
    out.push("");
    out.push(
      table(
        ["", "n", "min", "median", "mean", "p99", "max", "old leader released, median"],
        [h.leasehold, h.clientGo].map((x) => [
          x.impl,
          String(x.summary?.n ?? 0),
          fmt(x.summary?.min),
          fmt(x.summary?.median),
          fmt(x.summary?.mean),
          fmt(x.summary?.p99),
          fmt(x.summary?.max),
          fmt(medianOf(x.runs.map((run) => run.releaseMs))),
        ]),
      ),
    );
    out.push("");
    out.push(
      "All times in ms. The last column is the time from SIGTERM to the old leader's own report that it gave the " +
        'Lease up (leasehold: "released the lease" after its GET + PUT; client-go: "stopped"); the rest of the ' +
        "hand-over is the follower noticing and taking the Lease.",
    );
    out.push("");
    out.push("![hand-over time per run](handover.svg)");
    out.push("");
  }
  if (f) {
    out.push(
      `**2. Crash fail-over.** As 1, but the leader gets SIGKILL, so nobody releases the Lease and the follower ` +
        `must wait for it to expire. Timings 4s/3s/500ms for both, to keep the run short. leasehold's follower judges ` +
        `expiry from the last change its watch delivered and tries at that moment; client-go's follower judges it from ` +
        `the last change it saw when polling and tries at its next poll after that.`,
    );
    out.push("");
    out.push(
      table(
        ["", "n", "min", "median", "mean", "p99", "max"],
        [f.leasehold, f.clientGo].map((x) => [
          x.impl,
          String(x.summary?.n ?? 0),
          fmt(x.summary?.min),
          fmt(x.summary?.median),
          fmt(x.summary?.mean),
          fmt(x.summary?.p99),
          fmt(x.summary?.max),
        ]),
      ),
    );
    out.push("");
  }
  if (l) {
    out.push(
      `**3. Steady load.** A leader and a follower at default timings, one implementation at a time, counted ` +
        `over ${l.windowSeconds} s after a settling pause. leasehold: one window with both replicas; the split between ` +
        `them comes from each replica's own \`leasehold_requests_total\` counters (get/update/create), and the ` +
        `follower's watch starts from the server (the leader does not watch). client-go: the leader alone for half a ` +
        `window, then leader and follower for a window; the follower is the difference. Per minute:`,
    );
    out.push("");
    const row = (name: string, p?: { reads: number; writes: number; watches: number; total: number }) => [
      name,
      fmt(p?.reads),
      fmt(p?.writes),
      fmt(p?.watches),
      fmt(p?.total),
    ];
    out.push(table(["", "reads", "writes", "watch starts", "total"], [
      row("leasehold leader", l.leasehold?.leader),
      row("leasehold follower", l.leasehold?.follower),
      row("client-go leader", l.clientGo?.leader),
      row("client-go follower", l.clientGo?.follower),
    ]));
    out.push("");
    if (l.leasehold) {
      out.push(
        `Cross-check: the server counted ${l.leasehold.unattributed} Lease reads/writes in the leasehold window ` +
          `that the replicas' own counters do not account for (0 means the two agree). The follower's watch start ` +
          `itself happens before the window: one request per follower at start, then only on reconnects.`,
      );
      out.push("");
    }
  }
  if (m) {
    out.push(
      `**4. Memory.** One idle follower per runtime (a client-go leader holds the Lease), each next to an empty ` +
        `program on the same runtime that loads TLS with one HTTPS GET to the API server and then idles ` +
        `(\`tests/bench/idle_baseline.mjs\`). After ${m.idleMs / 1000} s idle, VmRSS from /proc/<pid>/status is ` +
        `sampled ${m.samplesPerRound} times, 1 s apart; the median of each round, then the median over ` +
        `${
          Object.values(m.rssMiB)[0]?.length ?? 0
        } round(s) of fresh processes. "Entrypoint" is \`lib/cli.ts\` as a replica runs it; "library only" is ` +
        `\`tests/bench/lib_follower.mjs\`, a LeaderElector through the public API with nothing else. Node runs ` +
        `the \`tsc\` build of the package. The target (overhead < 5 MB) applies to the entrypoint.`,
    );
    out.push("");
    out.push(table(
      [
        "runtime",
        "entrypoint follower MiB",
        "library-only follower MiB",
        "empty program MiB",
        "overhead: entrypoint",
        "overhead: library only",
        "client-go MiB",
        "entrypoint/client-go",
      ],
      leaseholdImpls(m.medianMiB).map((impl) => {
        const rt = runtimeOf(impl) as "deno" | "bun" | "node";
        const main = impl === `leasehold (${rt})`;
        return [
          main ? rt : impl.replace(/^leasehold \((.*)\)$/, "$1"),
          fmt(m.medianMiB[impl]),
          main ? fmt(m.medianMiB[`library (${rt})`]) : "",
          fmt(m.medianMiB[`baseline (${rt})`]),
          fmt(m.overheadByImplMiB?.[impl] ?? m.overheadMiB[rt]),
          main ? fmt(m.libraryOverheadMiB?.[rt]) : "",
          fmt(m.medianMiB["client-go"]),
          ratio(m.medianMiB[impl], m.medianMiB["client-go"]),
        ];
      }),
    ));
    out.push("");
  }
  if (cs) {
    out.push(
      `**5. Cold start.** A follower is spawned while a client-go leader holds the Lease; the times run from ` +
        `the spawn to its first log line ("starting"; client-go: "ready") and to the line naming the leader, which ` +
        `follows the first answer from the API server. One process at a time, after one discarded warm-up run per ` +
        `implementation (so Deno's module cache is warm), then ${cs.runs} round(s) through all implementations in ` +
        `turn (so a change in the machine's load hits all alike). "bundle" is the entrypoint bundled and minified ` +
        `into one file (\`deno bundle\`; \`bun build\` for Bun and for Node); "executable" is the single file of ` +
        `deploy/Dockerfile (\`bun build --compile --minify\`); a git ref names the entrypoint of that older tree, ` +
        `measured in the same run. Every process starts from a pod-like environment (PATH, HOME, LANG and the ` +
        `pod's variables only): this machine sets NODE_EXTRA_CA_CERTS to the system bundle, which costs Node and Bun ` +
        `tens of milliseconds per start.` +
        (r.entrypointBytes
          ? ` Sizes of the one-file forms: ${
            (["deno", "bun", "node"] as const).filter((k) => r.entrypointBytes?.[k]).map((k) =>
              `bundle for ${k} ${fmt(r.entrypointBytes![k]! / 1024)} KiB`
            ).join(", ")
          }${
            r.entrypointBytes.executable
              ? `, executable ${fmt(r.entrypointBytes.executable / 1048576)} MiB (the Bun runtime included)`
              : ""
          }.`
          : ""),
    );
    out.push("");
    const cg = cs.summary["client-go"]?.firstAnswer?.median;
    out.push(table(
      ["", "to first log line, median ms", "to first answer, median ms", "p99 ms", "leasehold/client-go"],
      Object.entries(cs.summary).map(([k, x]) => [
        k,
        fmt(x.ready?.median),
        fmt(x.firstAnswer?.median),
        fmt(x.firstAnswer?.p99),
        k === "client-go" ? "" : ratio(x.firstAnswer?.median, cg),
      ]),
    ));
    out.push("");
  }
  const ph = b.phases;
  if (ph) out.push(...phasesSection(ph));
  if (s) {
    out.push(
      `**6. Scale.** (a) One Deno process runs one LeaderElector per Lease (same identity, all leaders, ` +
        `default timings, the admin token), each with its own client and connection as \`createLeaseApi\` makes ` +
        `them, started evenly over one RetryPeriod (5 ms apart for large counts); counted over ${s.windowSeconds} s ` +
        `once all lead and have renewed. (One client shared by electors that each open their own watch starves on HTTP/2: see below; the shared way further down shares the watch too.) CPU is the process's user + system time (all threads) per ` +
        `successful renewal; memory per Lease is the RSS growth over the process with only the client loaded. ` +
        `client-go has no in-process counterpart here (one LeaderElector per process in its usual use).`,
    );
    out.push("");
    out.push(table(
      [
        "Leases",
        "start + acquire all, ms",
        "renewals/s",
        "µs CPU / renewal",
        "CPU % of a core",
        "RSS MiB",
        "KiB / Lease",
        "mean renew ms",
        "requests/s (own)",
        "requests/s (server)",
      ],
      s.leases.map((p) => [
        String(p.leases),
        fmt(p.acquireMs),
        fmt(p.renewalsPerSecond),
        fmt(p.cpuUsPerRenewal),
        fmt(p.cpuPercent),
        fmt(p.rssMiB),
        fmt(p.rssPerLeaseKiB),
        fmt(p.renewLatencyMeanMs, 2),
        fmt(p.ownRequestsPerSecond),
        fmt(p.serverRequestsPerSecond),
      ]),
    ));
    if (s.shared?.length) {
      out.push("");
      out.push(
        "The same Leases in the same run, the shared way: one KubeClient and one LeaseWatchHub (one LIST + WATCH " +
          "of the labelled Leases) for all. `shared` sends through the library's Deno transport for a cluster CA: " +
          "`node:https` with the CA as the only trust anchor, a connection per request (Deno's `node:http` " +
          "re-sends a request whose reused connection failed, and its `node:http2` crashed a long-running process " +
          "with `free(): invalid pointer`), so the TCP count is one watch plus the requests in flight. " +
          "`shared-pooled` sends through one pooled HTTP/2 " +
          "`Deno.HttpClient`, which adds the CA to the default roots instead of replacing them: the library does " +
          "not use it with a cluster CA, it is here for comparison only. `shared-small-young` (largest count only) is " +
          "`shared` in a process started with `--v8-flags=--max-semi-space-size=1`: V8 sizes its young generation " +
          "to the allocation rate, up to 16 MiB per semi-space, and at hundreds of renewals a second that, not " +
          "what the library keeps (the JavaScript heap per Lease, after a full collection), is most of the RSS growth. " +
          "TCP connections: established to the " +
          "API server, sampled every 100 ms over the window: the most at once, and how many distinct ones were seen.",
      );
      out.push("");
      out.push(table(
        [
          "Leases",
          "mode",
          "µs CPU / renewal",
          "RSS MiB",
          "KiB / Lease",
          "heap KiB / Lease",
          "mean renew ms",
          "TCP at once (max)",
          "TCP over the window",
        ],
        [...s.leases, ...s.shared].sort((a, b) => a.leases - b.leases).map((p) => [
          String(p.leases),
          p.mode ?? "client-per-lease",
          fmt(p.cpuUsPerRenewal),
          fmt(p.rssMiB),
          fmt(p.rssPerLeaseKiB),
          p.heapPerLeaseKiB === undefined ? "–" : fmt(p.heapPerLeaseKiB),
          fmt(p.renewLatencyMeanMs, 2),
          p.connections === undefined ? "–" : String(p.connections.most),
          p.connections === undefined ? "–" : String(p.connections.distinct),
        ]),
      ));
    }
    out.push("");
    out.push(
      "Why the old way gives each Lease its own client: on Deno, one client sends everything over one HTTP/2 " +
        "connection (as a pooled `Deno.HttpClient` does), and " +
        "kube-apiserver allows 100 concurrent streams per connection by default. Every candidate that is not " +
        "leading keeps a watch open, which holds a stream; with 100 watches open on one client, any further request " +
        "on it waits for a free stream and times out. 1000 electors sharing one client (tried while building this " +
        "benchmark) lost leadership one after another as their renewals timed out, and none recovered. The " +
        "shared way shares the watch too: its one LeaseWatchHub holds one stream for all the Leases.",
    );
    out.push("");
    out.push(
      `(b) Candidates on one Lease at default timings, counted at the server over ${s.windowSeconds} s after ` +
        `the election settled. leasehold: in-process LeaderElectors with distinct identities, each with its own ` +
        `client and connection (starting ${
          Math.max(...s.replicas.filter((x) => x.impl === "leasehold").map((x) => x.replicas), 0)
        } ` +
        `Deno processes would measure the runtime, not the protocol); its followers watch, so they cost nothing ` +
        `after their watch starts. client-go: separate elector processes (at most 10 spawned); every follower polls.`,
    );
    out.push("");
    const counts = [...new Set(s.replicas.map((p) => p.replicas))].sort((x, y) => x - y);
    out.push(table(
      ["candidates", "leasehold requests/s", "client-go requests/s", "leasehold/client-go"],
      counts.map((n) => {
        const a = s.replicas.find((p) => p.impl === "leasehold" && p.replicas === n);
        const c = s.replicas.find((p) => p.impl === "client-go" && p.replicas === n) ??
          (s.clientGoExtrapolated?.replicas === n ? s.clientGoExtrapolated : undefined);
        const extra = c && c.windowSeconds === 0;
        return [
          String(n),
          fmt(a?.requestsPerSecond, 2),
          c ? `${fmt(c.requestsPerSecond, 2)}${extra ? " (extrapolated)" : ""}` : "–",
          ratio(a?.requestsPerSecond, c?.requestsPerSecond),
        ];
      }),
    ));
    out.push("");
    if (s.clientGoExtrapolated) {
      out.push(`client-go at ${s.clientGoExtrapolated.replicas}: ${s.clientGoExtrapolated.how}.\n`);
    }
  }
  if (co) out.push(...coordinatedSection(co));
  const shards = shardRuns(b.shards);
  if (shards.length) out.push(...shardsSection(shards));
  return out.join("\n");
}

/** Section 7: the coordinated election (tests/bench/coordinated.ts). */
function coordinatedSection(co: CoordinatedResults): string[] {
  const out: string[] = [];
  const h = co.handover;
  const n = Math.max(h.leasehold?.n ?? 0, h.clientGo?.n ?? 0);
  out.push(
    `**7. Coordinated election.** The API server runs with CoordinatedLeaderElection on, so its election ` +
      `controller picks the holder among the LeaseCandidates: the oldest emulation version wins. A leader runs on ` +
      `one Lease at ${timingsLabel(co.timings)}; each round a candidate with an older emulation version joins, the ` +
      `controller writes \`spec.preferredHolder\` naming it, and writes it in as holder once the old leader has ` +
      `released the Lease (or it expired); the old leader is then stopped and the newcomer leads the next round ` +
      `(${n} round(s) per implementation). The sample is the time from the Lease version carrying ` +
      `preferredHolder to the first version naming the newcomer as holder, both as an admin watch of the Lease ` +
      `delivers them. Under coordinated election leasehold's leader watches its Lease too, so it sees preferredHolder at once, stops its work and releases. ` +
      `client-go (\`Coordinated: true\`, ReleaseOnCancel, its quickest way out) stops renewing when it sees ` +
      `preferredHolder, stops leading once RenewDeadline has passed without a renewal, then releases.`,
  );
  out.push("");
  out.push(table(
    ["preferredHolder → holder", "n", "min", "median", "mean", "p99", "max"],
    ([["leasehold", h.leasehold], ["client-go", h.clientGo]] as [string, Summary | undefined][]).map((
      [name, x],
    ) => [name, String(x?.n ?? 0), fmt(x?.min), fmt(x?.median), fmt(x?.mean), fmt(x?.p99), fmt(x?.max)]),
  ));
  out.push("");
  out.push(
    "All times in ms; leasehold/client-go: " +
      `median ${ratio(h.leasehold?.median, h.clientGo?.median)}, p99 ${ratio(h.leasehold?.p99, h.clientGo?.p99)}.`,
  );
  out.push("");
  const ev = co.events;
  out.push(
    `The cost of Events: one replica alone on its own Lease, ${ev.terms} term(s) each of start, lead, SIGTERM ` +
      `and exit (${
        timingsLabel(FAST_TIMINGS)
      }), once with Events and once without, every request counted by an HTTPS proxy in ` +
      `front of the API server. What Events cost is the requests on \`events\` plus any Lease reads beyond those ` +
      `of the run without Events (a recorder that reads the Lease for its uid); the rest of the two totals differs ` +
      `only by retries. Per term:`,
  );
  out.push("");
  const breakdown = (x?: Record<string, number>) =>
    x ? Object.entries(x).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} ${perTerm(v)}`).join(", ") : "–";
  out.push(table(
    [
      "",
      "requests with Events",
      "without",
      "on events",
      "extra Lease reads",
      "Events cost",
      "requests with Events, by kind",
    ],
    ([["leasehold", ev.leasehold], ["client-go", ev.clientGo]] as [string, EventCost | undefined][]).map((
      [name, e],
    ) => [
      name,
      perTerm(e?.withEvents),
      perTerm(e?.withoutEvents),
      perTerm(e?.eventWrites),
      perTerm(e?.extraLeaseReads),
      perTerm(e?.perTerm),
      breakdown(e?.breakdown),
    ]),
    ["---", "---:", "---:", "---:", "---:", "---:", "---"],
  ));
  out.push("");
  out.push(
    `Events cost leasehold/client-go: ${ratio(ev.leasehold?.perTerm, ev.clientGo?.perTerm)}. Both kinds run ` +
      "the plain (not coordinated) election in this part, so no LeaseCandidate requests are in the totals.",
  );
  out.push("");
  for (const e of co.errors) out.push(`- failed: ${e.split("\n")[0]}`);
  if (co.errors.length) out.push("");
  return out;
}

/** Section 8: sharded work (tests/bench/shards.ts). */
function shardsSection(runs: ShardsBenchResult[]): string[] {
  const out: string[] = [];
  const first = runs[0];
  out.push(
    `**8. Sharded work.** ${first.shards} shards (Leases \`bench-0\` … \`bench-${first.shards - 1}\`) ` +
      `over ${first.replicas} replicas, each a \`ShardedLeaseSet\` in the benchmark process with its own client ` +
      `(one connection) and one shared LIST + WATCH of the shard Leases. Two replicas start and balance (8 + 8); ` +
      `each round a third joins, and the sample is the time from its start until the held counts sum to ` +
      `${first.shards} with max − min ≤ 1 (6 + 5 + 5: the others gave their surplus up gracefully, stopping that ` +
      `shard's work before releasing it); after a pause of 2 × RetryPeriod the third leaves gracefully, and the ` +
      `sample is the time from its stop until the two left are balanced again (8 + 8). Every change of any ` +
      `replica's held set is looked at. Overlaps: a shard's work started by one replica while another replica's ` +
      `work on it still ran (work ends when its AbortSignal fired and its promise settled), counted over all ` +
      `shards and rounds. client-go has no sharded counterpart. Target: balanced within 2 × RetryPeriod after a ` +
      `join or a graceful leave, in every round; 0 overlaps.`,
  );
  out.push("");
  out.push(table(
    [
      "timings",
      "rounds",
      "balanced after a join: median ms (min–max)",
      "after a graceful leave",
      "target",
      "overlaps",
      "WATCH starts per staying replica",
    ],
    runs.map((sh) => [
      timingsLabel(sh.timings),
      `${Math.min(sh.join?.n ?? 0, sh.leave?.n ?? 0)}${sh.errors.length ? ` (+ ${sh.errors.length} failed)` : ""}`,
      sh.join ? `${fmt(sh.join.median)} (${fmt(sh.join.min)}–${fmt(sh.join.max)})` : "–",
      sh.leave ? `${fmt(sh.leave.median)} (${fmt(sh.leave.min)}–${fmt(sh.leave.max)})` : "–",
      `≤ ${sh.targetMs} ms`,
      String(sh.overlaps),
      sh.watchesPerReplica.length ? sh.watchesPerReplica.join(", ") : "–",
    ]),
    ["---", "---:", "---:", "---:", "---:", "---:", "---:"],
  ));
  out.push("");
  out.push(
    "The last column counts the WATCH requests of the shared watch of each of the two replicas that stay, over " +
      "the whole run: 1 means it was opened once and never had to start again.",
  );
  out.push("");
  for (const sh of runs) for (const e of sh.errors) out.push(`- failed round (${timingsLabel(sh.timings)}): ${e}`);
  if (runs.some((sh) => sh.errors.length)) out.push("");
  return out;
}

/** A log-scale dot plot of the hand-over samples, leasehold against client-go. Hand-written SVG. */
/** Where the time and memory go, in numbers from the phase tables. */
function phaseNotes(ph: PhasesResult, rts: string[]): string[] {
  const row = (cfg: string, phase: string) => ph.summary[cfg]?.find((r) => r.phase === phase);
  const took = (cfg: string, phase: string) => row(cfg, phase)?.tookMs;
  const grew = (cfg: string, phase: string) => row(cfg, phase)?.rssDeltaMiB;
  const list = (f: (rt: string) => number | undefined, unit: string) =>
    `${rts.map((rt) => fmt(f(rt))).join(" / ")} ${unit}`;
  const sum = (xs: (number | undefined)[]) => xs.reduce<number>((a, b) => a + (b ?? 0), 0);
  const steps = (rt: string) => `${rt} steps (now)`;
  const own = ["import lib/cli", "config read", "CA parsed", "client created"];
  const out: string[] = [];
  out.push(
    `Where the time goes (${rts.join(" / ")}): starting the runtime takes ${
      list((rt) => took(steps(rt), "start"), "ms")
    }; the node: modules lib/cli imports ${list((rt) => took(steps(rt), "node: modules of lib/cli"), "ms")}; the ` +
      `project's own code up to the first request (loading it, reading the configuration, checking the CA, ` +
      `creating the client) ${list((rt) => sum(own.map((p) => took(steps(rt), p))), "ms")}; the first TLS ` +
      `handshake with the GET ${list((rt) => took(steps(rt), "first answer"), "ms")}. The empty program needs ` +
      `${list((rt) => took(`${rt} empty`, "first answer"), "ms")} after its start for node:fs, the TLS handshake ` +
      `and one GET: the runtime's start and the first TLS exchange are most of a cold start, and they are paid by ` +
      `any program on that runtime. On Node, the first TLS context given a \`ca\` makes Node 20 parse its ` +
      `bundled root certificates: 20–35 ms of CPU here, seen with \`node --cpu-prof\` and timed alone (2 ms with ` +
      `\`--use-openssl-ca\`, which however changes which roots Node loads); the empty program pays it too.`,
  );
  out.push("");
  out.push(
    `Where the memory goes (RSS growth): the node: modules ${
      list((rt) => grew(steps(rt), "node: modules of lib/cli"), "MiB")
    }, of which the first node: import (Deno's Node compatibility layer, Bun's module loader) is ${
      list((rt) => grew(`${rt} builtins`, "node:process"), "MiB")
    } and node:fs ${list((rt) => grew(`${rt} builtins`, "node:fs"), "MiB")} (the empty program loads both); the ` +
      `project's own code ${list((rt) => grew(steps(rt), "import lib/cli"), "MiB")}; configuration, CA check and ` +
      `client ${list((rt) => sum(own.slice(1).map((p) => grew(steps(rt), p))), "MiB")}; the first TLS exchange ` +
      `${list((rt) => grew(steps(rt), "first answer"), "MiB")}; the open watch ${
        list((rt) => grew(steps(rt), "watch answered"), "MiB")
      }. The JavaScript heap in use when idle is ${
        list((rt) => row(steps(rt), "idle")?.heapMiB, "MiB")
      } against the empty program's ${list((rt) => row(`${rt} empty`, "idle")?.heapMiB, "MiB")}: most of the ` +
      `overhead is not objects the library keeps but code and the runtime's own structures for it (compiled ` +
      `functions, module records, Bun's transpiled source, Deno's Node compatibility layer and fetch client).`,
  );
  out.push("");
  return out;
}

/** The start-up phase tables (tests/bench/phases.ts). */
function phasesSection(ph: PhasesResult): string[] {
  const out: string[] = [];
  const row = (cfg: string, phase: string) => ph.summary[cfg]?.find((r) => r.phase === phase);
  const cell = (cfg: string, phase: string) => {
    const r = row(cfg, phase);
    return r ? `${fmt(r.tookMs)} ms, ${r.rssDeltaMiB >= 0 ? "+" : ""}${fmt(r.rssDeltaMiB, 1)} MiB` : "–";
  };
  const rts = ["deno", "bun", "node"].filter((rt) => ph.summary[`${rt} steps (now)`]);
  out.push(
    `**4+5, taken apart.** \`tests/bench/phases.mjs\` walks through a replica's start one phase at a time and ` +
      `reports after each the time and the process's resident set size; each configuration ran ${ph.runs} times ` +
      `(after a warm-up), one process at a time, in a fresh random order each round (load average ` +
      `${ph.loadAverageAtStart[0]?.toFixed(2)} at the start, ${ph.loadAverageAtEnd[0]?.toFixed(2)} at the end). ` +
      `Medians of the time each phase took and of the RSS growth during it. "runtime up" runs from the spawn to ` +
      `the script's first line (its RSS is the total there); the node: modules are those lib/cli imports, loaded ` +
      `first so that the next line is the project's own code (Deno and Bun: TypeScript source; Node: the tsc build).`,
  );
  out.push("");
  const steps = [
    ["start", "runtime up"],
    ["node: modules of lib/cli", "node: modules of lib/cli"],
    ["import lib/cli", "lib/cli and the library, own code"],
    ["config read", "in-cluster config read (token, CA, namespace)"],
    ["CA parsed", "CA checked (X509Certificate)"],
    ["client created", "client created (TLS adapter loaded)"],
    ["first answer", "first answer: TLS handshake + GET Lease"],
    ["watch answered", "watch opened, first event"],
  ];
  const rtCfg = (rt: string) => `${rt} steps (now)`;
  const idle = (cfg: string) => row(cfg, "idle")?.rssMiB;
  out.push(table(
    ["phase", ...rts.map((rt) => rt)],
    [
      ...steps.map(([k, label]) => [label, ...rts.map((rt) => cell(rtCfg(rt), k))]),
      ["RSS idle, MiB", ...rts.map((rt) => fmt(idle(rtCfg(rt))))],
      ["empty program: runtime up", ...rts.map((rt) => cell(`${rt} empty`, "start"))],
      ["empty program: node:fs, TLS + GET", ...rts.map((rt) => cell(`${rt} empty`, "first answer"))],
      ["empty program: RSS idle, MiB", ...rts.map((rt) => fmt(idle(`${rt} empty`)))],
    ],
    ["---", ...rts.map(() => "---:")],
  ));
  out.push("");
  const mains = Object.keys(ph.summary).filter((k) => / main \(/.test(k)).sort();
  if (mains.length) {
    out.push(
      "The entrypoint as a replica runs it (`main()` of lib/cli, no --http-addr, no command), in each form: " +
        "median ms since the spawn at the end of each phase, and the RSS after " +
        `${ph.idleMs} ms idle against the empty program's on the same runtime.`,
    );
    out.push("");
    out.push(table(
      ["entrypoint", "runtime up", "imported", '"starting" logged', "first answer", "RSS idle MiB", "over empty MiB"],
      mains.map((k) => {
        const rt = k.split(/[- ]/)[0];
        const at = (phase: string) => fmt(row(k, phase)?.atMs);
        const mine = idle(k), empty = idle(`${rt} empty`);
        return [
          k,
          at("start"),
          at("import lib/cli"),
          at("starting"),
          at("first answer"),
          fmt(mine),
          mine !== undefined && empty !== undefined ? fmt(mine - empty) : "–",
        ];
      }),
    ));
    out.push("");
  }
  const mods = ph.summary[`${rts[0]} builtins`]?.map((r) => r.phase).filter((p) => p.startsWith("node:")) ?? [];
  if (mods.length) {
    out.push(
      "What each node: module costs when imported in this order into an otherwise empty program (the first one " +
        "also pays for the runtime's Node compatibility layer or module loader):",
    );
    out.push("");
    out.push(table(
      ["module", ...rts],
      mods.map((m) => [m, ...rts.map((rt) => cell(`${rt} builtins`, m))]),
    ));
    out.push("");
  }
  out.push(...phaseNotes(ph, rts));
  for (const e of ph.errors) out.push(`- failed run: ${e.split("\n")[0]}`);
  if (ph.errors.length) out.push("");
  return out;
}

export function handoverSvg(r: BenchResults): string {
  const h = r.benchmarks.handover;
  const W = 760, H = 380, L = 70, R = 190, T = 48, B = 52;
  const series = h
    ? [
      { name: "leasehold", color: "#1f77b4", xs: h.leasehold.samplesMs, median: h.leasehold.summary?.median },
      { name: "client-go", color: "#d9541e", xs: h.clientGo.samplesMs, median: h.clientGo.summary?.median },
    ]
    : [];
  const all = series.flatMap((s) => s.xs).filter((x) => x > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...all, 10))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...all, 100))));
  const n = Math.max(1, ...series.map((s) => s.xs.length));
  const pad = 24;
  const x = (i: number) => L + pad + (n === 1 ? (W - L - R - 2 * pad) / 2 : (i * (W - L - R - 2 * pad)) / (n - 1));
  const y = (ms: number) =>
    T + ((Math.log10(hi) - Math.log10(Math.max(ms, lo))) / (Math.log10(hi) - Math.log10(lo))) * (H - T - B);
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const p: string[] = [];
  p.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  p.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  p.push(
    `<text x="${L}" y="22" font-size="15" font-weight="bold">${
      esc("Graceful hand-over: SIGTERM to the follower leading")
    }</text>`,
  );
  p.push(
    `<text x="${L}" y="38" fill="#555">${
      esc(`default timings 15s/10s/2s, ${r.machine.cores} cores, ${r.mode} run, log scale`)
    }</text>`,
  );
  for (let d = lo; d <= hi; d *= 10) {
    p.push(`<line x1="${L}" x2="${W - R}" y1="${y(d).toFixed(1)}" y2="${y(d).toFixed(1)}" stroke="#ddd"/>`);
    p.push(
      `<text x="${L - 8}" y="${(y(d) + 4).toFixed(1)}" text-anchor="end">${
        d >= 1000 ? `${d / 1000} s` : `${d} ms`
      }</text>`,
    );
    for (const k of [2, 5]) {
      if (d * k < hi) {
        p.push(
          `<line x1="${L}" x2="${W - R}" y1="${y(d * k).toFixed(1)}" y2="${y(d * k).toFixed(1)}" stroke="#f1f1f1"/>`,
        );
      }
    }
  }
  p.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>`);
  p.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`);
  for (let i = 0; i < n; i++) {
    p.push(`<text x="${x(i).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${i + 1}</text>`);
  }
  p.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">run</text>`);
  p.push(
    `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">time to new leader</text>`,
  );
  series.forEach((s, k) => {
    if (!s.xs.length) return;
    const pts = s.xs.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    p.push(`<polyline points="${pts}" fill="none" stroke="${s.color}" stroke-opacity="0.45"/>`);
    s.xs.forEach((v, i) => {
      p.push(
        k === 0
          ? `<circle cx="${x(i).toFixed(1)}" cy="${
            y(v).toFixed(1)
          }" r="4" fill="${s.color}"><title>${v} ms</title></circle>`
          : `<rect x="${(x(i) - 4).toFixed(1)}" y="${
            (y(v) - 4).toFixed(1)
          }" width="8" height="8" fill="${s.color}"><title>${v} ms</title></rect>`,
      );
    });
    if (s.median !== undefined) {
      p.push(
        `<line x1="${L}" x2="${W - R}" y1="${y(s.median).toFixed(1)}" y2="${
          y(s.median).toFixed(1)
        }" stroke="${s.color}" stroke-dasharray="5 4"/>`,
      );
    }
    const ly = T + 10 + k * 40;
    p.push(
      k === 0
        ? `<circle cx="${W - R + 22}" cy="${ly}" r="4" fill="${s.color}"/>`
        : `<rect x="${W - R + 18}" y="${ly - 4}" width="8" height="8" fill="${s.color}"/>`,
    );
    p.push(`<text x="${W - R + 32}" y="${ly + 4}" font-weight="bold">${esc(s.name)}</text>`);
    p.push(`<text x="${W - R + 32}" y="${ly + 20}" fill="#555">median ${fmt(s.median)} ms (dashed)</text>`);
  });
  if (!series.length) p.push(`<text x="${L + 20}" y="${T + 40}">hand-over benchmark not run</text>`);
  p.push("</svg>");
  return p.join("\n") + "\n";
}
