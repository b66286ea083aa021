// Where start-up time and memory go: runs tests/bench/phases.mjs on Deno, Bun
// and Node (one process at a time, the configurations interleaved round by
// round so that a change in the machine's load hits all of them alike) and
// prints, per configuration and phase, the median time since the spawn, the
// median time the phase took, and the resident set size after it.
//
//   deno run -A tests/bench/phases.ts [--runs 7] [--idle-ms 1500] [--before REF]
//                                     [--modes empty,builtins,steps,main]
//                                     [--runtimes deno,bun,node,deno-bundle,bun-bundle,node-bundle]
//                                     [--json FILE]
//
// --before REF adds the same configurations for the tree at git REF (exported
// to a temporary directory), so a change is measured against the old code in
// the same run. The API server is the one named by LEASEHOLD_TESTENV, else one
// started here; a client-go elector holds the Lease that the followers read.

import { rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { apiServer, freshNamespace, podIdentity } from "../env/testenv.mjs";
import {
  type BenchContext,
  DEFAULT_TIMINGS,
  killAll,
  type PodIdentity,
  Proc,
  quantile,
  round,
  type ServerInfo,
} from "./common.ts";
import { CLIENT_GO, startReplica } from "./replicas.ts";
import { buildNode, bundleEntrypoint, exportTree } from "./builds.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
const SCRIPT = join(ROOT, "tests", "bench", "phases.mjs");

interface Tree {
  label: string;
  dir: string;
  nodeDist?: string;
  /** One-file bundles of the entrypoint, by runtime. */
  bundles: Partial<Record<"deno" | "bun" | "node", string>>;
}

interface Config {
  name: string;
  cmd: string[];
  env: Record<string, string>;
}

interface Mark {
  mark: string;
  /** Epoch ms (to the µs) when the phase ended, by the child's clock. */
  t: number;
  rss: number;
  heap: number;
  bootMs?: number;
}

function parse(args: string[]) {
  const o = {
    runs: 7,
    idleMs: 1500,
    before: undefined as string | undefined,
    modes: ["empty", "builtins", "steps", "main"],
    runtimes: ["deno", "bun", "node", "deno-bundle", "bun-bundle", "node-bundle"],
    json: undefined as string | undefined,
  };
  for (let i = 0; i < args.length; i++) {
    const [k, inline] = args[i].split("=", 2);
    const v = () => inline ?? args[++i];
    if (k === "--runs") o.runs = Number(v());
    else if (k === "--idle-ms") o.idleMs = Number(v());
    else if (k === "--before") o.before = v();
    else if (k === "--modes") o.modes = v().split(",");
    else if (k === "--runtimes") o.runtimes = v().split(",");
    else if (k === "--json") o.json = v();
    else throw new Error(`unknown argument ${args[i]}`);
  }
  return o;
}

function configs(
  tree: Tree,
  o: { runtimes: string[]; modes: string[]; idleMs: number },
  server: ServerInfo,
  sa: PodIdentity,
  lease: string,
) {
  const out: Config[] = [];
  const bun = join(ROOT, "node_modules", ".bin", "bun");
  for (const rt of o.runtimes) {
    const runtime = rt.replace(/-bundle$/, "") as "deno" | "bun" | "node";
    const bundled = rt.endsWith("-bundle");
    const base = runtime === "deno"
      ? [Deno.execPath(), "run", "-A", SCRIPT]
      : runtime === "bun"
      ? [bun, SCRIPT]
      : ["node", SCRIPT];
    const src = !bundled && runtime !== "node";
    const cli = bundled
      ? tree.bundles[runtime]
      : src
      ? join(tree.dir, "lib", "cli.ts")
      : tree.nodeDist && join(tree.nodeDist, "lib", "cli.js");
    const lib = bundled ? "" : src ? join(tree.dir, "mod.ts") : tree.nodeDist && join(tree.nodeDist, "mod.js");
    if (!cli) continue;
    for (const mode of o.modes) {
      if ((mode === "empty" || mode === "builtins") && (tree.label !== "now" || bundled)) continue;
      if ((mode === "steps" || mode === "lib") && bundled) continue;
      const name = mode === "empty" || mode === "builtins" ? `${rt} ${mode}` : `${rt} ${mode} (${tree.label})`;
      out.push({
        name,
        cmd: base,
        env: {
          ...sa.env,
          BENCH_MODE: mode,
          BENCH_CLI: pathToFileURL(cli).href,
          BENCH_LIB: lib ? pathToFileURL(lib).href : "",
          BENCH_URL: `${server.url}/readyz`,
          BENCH_CA: server.caFile,
          BENCH_SA_DIR: sa.dir,
          BENCH_LEASE: lease,
          BENCH_IDENTITY: `phases-${mode}`,
          BENCH_IDLE_MS: String(o.idleMs),
        },
      });
    }
  }
  return out;
}

async function runOnce(c: Config): Promise<Mark[]> {
  const p = new Proc(c.cmd, { env: c.env, logStream: "stderr", name: c.name, cwd: ROOT });
  const spawnedAt = performance.timeOrigin + p.startedAt;
  const timer = setTimeout(() => p.kill("SIGKILL"), 60000);
  const status = await p.exited;
  clearTimeout(timer);
  const marks = p.lines.filter((l) => typeof l.mark === "string") as unknown as Mark[];
  if (!status.success || marks.at(-1)?.mark !== "end") {
    throw new Error(`${c.name}: exit ${status.code}; ${p.lines.map((l) => l.msg ?? l.mark).join(" | ")}`);
  }
  return [{ mark: "spawn", t: spawnedAt, rss: 0, heap: 0 }, ...marks];
}

export interface PhaseRow {
  phase: string;
  /** Median ms from the spawn to the end of this phase. */
  atMs: number;
  /** Median ms this phase took (from the end of the previous one). */
  tookMs: number;
  /** Median RSS after it, MiB. */
  rssMiB: number;
  /** Median RSS growth during it, MiB. */
  rssDeltaMiB: number;
  /** Median JavaScript heap in use after it (V8 or JavaScriptCore), MiB. */
  heapMiB: number;
}

function summarise(runs: Mark[][]): PhaseRow[] {
  const phases = runs[0].map((m) => m.mark).filter((m) => m !== "spawn" && m !== "end");
  const med = (xs: number[]) => round(quantile(xs, 0.5), 1);
  return phases.map((phase) => {
    const at: number[] = [], took: number[] = [], rss: number[] = [], drss: number[] = [], heap: number[] = [];
    for (const r of runs) {
      const i = r.findIndex((m) => m.mark === phase);
      if (i < 1) continue;
      at.push(r[i].t - r[0].t);
      took.push(r[i].t - r[i - 1].t);
      rss.push(r[i].rss / 1048576);
      heap.push(r[i].heap / 1048576);
      drss.push(i > 1 ? (r[i].rss - r[i - 1].rss) / 1048576 : r[i].rss / 1048576);
    }
    const rssDeltaMiB = round(quantile(drss, 0.5), 2);
    return { phase, atMs: med(at), tookMs: med(took), rssMiB: med(rss), rssDeltaMiB, heapMiB: med(heap) };
  });
}

/** What {@linkcode startupPhases} measured. */
export interface PhasesResult {
  runs: number;
  idleMs: number;
  loadAverageAtStart: number[];
  loadAverageAtEnd: number[];
  /** By configuration ("deno steps (now)", "node-bundle main (main)", "bun empty", …). */
  summary: Record<string, PhaseRow[]>;
  errors: string[];
}

/**
 * Runs every configuration `runs` times (after one warm-up each), one process
 * at a time, in a fresh random order each round.
 */
export async function startupPhases(
  ctx: BenchContext,
  o: { runs: number; idleMs: number; modes?: string[]; runtimes?: string[]; before?: string },
): Promise<PhasesResult> {
  const opts = { ...parse([]), ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
  const trees: Tree[] = [{ label: "now", dir: ROOT, bundles: {} }];
  const temps: string[] = [];
  const errors: string[] = [];
  const results: Record<string, Mark[][]> = {};
  const loadStart = Deno.loadavg();
  const leaseName = "phases-lease";
  const ns = await ctx.namespace("phases");
  const sa = await ctx.identity(ns, leaseName);
  const leader = startReplica(ctx, CLIENT_GO, { identity: "leader", leaseName, sa, timings: DEFAULT_TIMINGS });
  try {
    if (opts.before) {
      const dir = await exportTree(opts.before);
      temps.push(dir);
      trees.unshift({ label: opts.before, dir, bundles: {} });
    }
    for (const t of trees) {
      if (opts.runtimes.includes("node")) {
        t.nodeDist = await buildNode(t.dir, ctx.log);
        if (t.nodeDist) temps.push(t.nodeDist);
      }
      for (const rt of ["deno", "bun", "node"] as const) {
        if (!opts.runtimes.includes(`${rt}-bundle`)) continue;
        t.bundles[rt] = await bundleEntrypoint(t.dir, rt, ctx.log);
        if (t.bundles[rt]) temps.push(dirname(t.bundles[rt]!));
      }
    }
    const all = trees.flatMap((t) => configs(t, opts, ctx.info, sa, leaseName));
    await leader.leading(30000);
    ctx.log(`  ${all.length} configurations, ${opts.runs} runs each (+1 warm-up)`);
    const once = async (c: Config) => {
      try {
        return await runOnce(c);
      } catch (e) {
        errors.push((e as Error).message);
        return undefined;
      }
    };
    for (const c of all) await once(c); // warm-up: module caches
    for (let r = 0; r < opts.runs; r++) {
      // A fresh order each round, so no configuration always follows the same one.
      const order = [...all].sort(() => Math.random() - 0.5);
      for (const c of order) {
        const marks = await once(c);
        if (marks) (results[c.name] ??= []).push(marks);
      }
      ctx.log(`  round ${r + 1}/${opts.runs} done; load average ${Deno.loadavg()[0]}`);
    }
  } finally {
    await leader.proc.stop();
    for (const t of temps) await rm(t, { recursive: true, force: true });
  }
  const summary: Record<string, PhaseRow[]> = {};
  for (const [k, runs] of Object.entries(results)) summary[k] = summarise(runs);
  return {
    runs: opts.runs,
    idleMs: opts.idleMs,
    loadAverageAtStart: loadStart,
    loadAverageAtEnd: Deno.loadavg(),
    summary,
    errors,
  };
}

async function main() {
  const o = parse(Deno.args);
  const log = (m: string) => console.error(`[phases] ${m}`);
  const server = (await apiServer()) as ServerInfo & { kill?: () => Promise<void> };
  if (!server) throw new Error("no API server");
  const ctx = {
    root: ROOT,
    info: server,
    clientgoBin: join(ROOT, ".cache", "bin", "clientgo-elector"),
    namespace: (prefix: string) => freshNamespace(server, prefix),
    identity: async (ns: string, lease: string) => (await podIdentity(server, ns, lease)) as PodIdentity,
    log,
  } as unknown as BenchContext;
  let r: PhasesResult;
  try {
    r = await startupPhases(ctx, o);
  } finally {
    await killAll();
  }
  const lines = [
    `load average ${r.loadAverageAtStart[0]} at the start, ${r.loadAverageAtEnd[0]} at the end; ${o.runs} runs each`,
    "",
    "| configuration | phase | ms since spawn | phase ms | RSS MiB | RSS growth MiB | JS heap MiB |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const [k, rows] of Object.entries(r.summary)) {
    rows.forEach((x, i) => {
      lines.push(
        `| ${i ? "" : k} | ${x.phase} | ${x.atMs} | ${x.tookMs} | ${
          round(x.rssMiB, 1)
        } | ${x.rssDeltaMiB} | ${x.heapMiB} |`,
      );
    });
  }
  console.log(lines.join("\n"));
  for (const e of r.errors) log(`!!! ${e}`);
  if (o.json) await writeFile(o.json, JSON.stringify(r, null, 1));
  await server.kill?.();
  Deno.exit(r.errors.length ? 1 : 0);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`phases: ${(e as Error).stack ?? e}`);
    await killAll();
    Deno.exit(1);
  }
}
