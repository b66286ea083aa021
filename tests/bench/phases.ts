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
import { DEFAULT_TIMINGS, killAll, type PodIdentity, Proc, quantile, round, type ServerInfo } from "./common.ts";
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

function configs(tree: Tree, o: ReturnType<typeof parse>, server: ServerInfo, sa: PodIdentity, lease: string) {
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
}

function summarise(runs: Mark[][]): PhaseRow[] {
  const phases = runs[0].map((m) => m.mark).filter((m) => m !== "spawn" && m !== "end");
  const med = (xs: number[]) => round(quantile(xs, 0.5), 1);
  return phases.map((phase) => {
    const at: number[] = [], took: number[] = [], rss: number[] = [], drss: number[] = [];
    for (const r of runs) {
      const i = r.findIndex((m) => m.mark === phase);
      if (i < 1) continue;
      at.push(r[i].t - r[0].t);
      took.push(r[i].t - r[i - 1].t);
      rss.push(r[i].rss / 1048576);
      drss.push(i > 1 ? (r[i].rss - r[i - 1].rss) / 1048576 : r[i].rss / 1048576);
    }
    return { phase, atMs: med(at), tookMs: med(took), rssMiB: med(rss), rssDeltaMiB: round(quantile(drss, 0.5), 2) };
  });
}

async function main() {
  const o = parse(Deno.args);
  const log = (m: string) => console.error(`[phases] ${m}`);
  const server = (await apiServer()) as ServerInfo & { kill?: () => Promise<void> };
  if (!server) throw new Error("no API server");
  const trees: Tree[] = [{ label: "now", dir: ROOT, bundles: {} }];
  const temps: string[] = [];
  if (o.before) {
    const dir = await exportTree(o.before);
    temps.push(dir);
    trees.unshift({ label: o.before, dir, bundles: {} });
  }
  for (const t of trees) {
    if (o.runtimes.includes("node")) {
      t.nodeDist = await buildNode(t.dir, log);
      if (t.nodeDist) temps.push(t.nodeDist);
    }
    for (const rt of ["deno", "bun", "node"] as const) {
      if (!o.runtimes.includes(`${rt}-bundle`)) continue;
      t.bundles[rt] = await bundleEntrypoint(t.dir, rt, log);
      if (t.bundles[rt]) temps.push(dirname(t.bundles[rt]!));
    }
  }
  const ns = await freshNamespace(server, "phases");
  const leaseName = "phases-lease";
  const sa = (await podIdentity(server, ns, leaseName)) as PodIdentity;
  const ctx = {
    root: ROOT,
    info: server,
    clientgoBin: join(ROOT, ".cache", "bin", "clientgo-elector"),
  } as unknown as Parameters<typeof startReplica>[0];
  const leader = startReplica(ctx, CLIENT_GO, { identity: "leader", leaseName, sa, timings: DEFAULT_TIMINGS });
  const all = trees.flatMap((t) => configs(t, o, server, sa, leaseName));
  const results: Record<string, Mark[][]> = {};
  const loadStart = Deno.loadavg();
  try {
    await leader.leading(30000);
    log(`${all.length} configurations, ${o.runs} runs each (+1 warm-up); load average ${loadStart.join(" ")}`);
    for (const c of all) await runOnce(c); // warm-up: module caches
    for (let r = 0; r < o.runs; r++) {
      // A fresh order each round, so no configuration always follows the same one.
      const order = [...all].sort(() => Math.random() - 0.5);
      for (const c of order) (results[c.name] ??= []).push(await runOnce(c));
      log(`round ${r + 1}/${o.runs} done; load ${Deno.loadavg()[0]}`);
    }
  } finally {
    await leader.proc.stop();
    await killAll();
    for (const t of temps) await rm(t, { recursive: true, force: true });
  }
  const summary: Record<string, PhaseRow[]> = {};
  for (const [k, runs] of Object.entries(results)) summary[k] = summarise(runs);
  const loadEnd = Deno.loadavg();
  const lines = [
    `load average ${loadStart[0]} at the start, ${loadEnd[0]} at the end; ${o.runs} runs per configuration`,
    "",
    "| configuration | phase | ms since spawn | phase ms | RSS MiB | RSS growth MiB |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
  ];
  for (const [k, rows] of Object.entries(summary)) {
    rows.forEach((r, i) => {
      lines.push(`| ${i ? "" : k} | ${r.phase} | ${r.atMs} | ${r.tookMs} | ${round(r.rssMiB, 1)} | ${r.rssDeltaMiB} |`);
    });
  }
  console.log(lines.join("\n"));
  if (o.json) {
    await writeFile(
      o.json,
      JSON.stringify({ at: new Date().toISOString(), loadStart, loadEnd, runs: o.runs, summary, results }, null, 1),
    );
  }
  await server.kill?.();
  Deno.exit(0);
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
