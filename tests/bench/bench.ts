// Benchmarks of leasehold against client-go's leader election, measured in the
// same run on the real kube-apiserver + etcd of tests/apiserver.
//
//   deno run -A tests/bench/bench.ts            full run (about 11 minutes on 2 cores)
//   deno run -A tests/bench/bench.ts --smoke    tiny counts, same code paths (about 2 minutes)
//
// Options:
//   --render        only re-render results.md and handover.svg from results.json
//   --out DIR       where results.json, results.md and handover.svg go (default: tests/bench
//                   for a complete full run, else a new temporary directory, printed at the end)
//   --only a,b      run only some of: footprint, phases, handover, failover, load, scale, coordinated, shards
//   --compare REF   also measure the entrypoint of the tree at git REF in the memory and
//                   cold-start benchmarks (before/after in the same run)
//   --merge         keep the other benchmarks of the results.json in --out (default tests/bench)
//                   and replace those run now
//
// The memory and cold-start benchmarks also run the entrypoint as one-file bundles
// (deno bundle, bun build) and as the single executable of deploy/Dockerfile.
//
// The API server is the one named by LEASEHOLD_TESTENV (a ready.json), else one
// built and started here. Exit status 1 when a benchmark could not be measured;
// missed performance targets are reported, not failed.

import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createFetch } from "../../mod.ts";
import { apiServer, buildHarness, freshNamespace, podIdentity } from "../env/testenv.mjs";
import {
  type BenchContext,
  DEFAULT_TIMINGS,
  FAST_TIMINGS,
  killAll,
  type PodIdentity,
  round,
  type ServerInfo,
} from "./common.ts";
import { footprint } from "./footprint.ts";
import { startupPhases } from "./phases.ts";
import { steadyLoad } from "./load.ts";
import { CLIENT_GO, LEASEHOLD_DENO } from "./replicas.ts";
import { type BenchResults, evaluateTargets, handoverSvg, markdownReport } from "./report.ts";
import { scale } from "./scale.ts";
import { LeaseEvents } from "./server_counts.ts";
import { takeoverSeries } from "./takeover.ts";
import { coordinatedBench } from "./coordinated.ts";
import { shardsBench } from "./shards.ts";
import { buildNode, bundleEntrypoint, compileEntrypoint, exportTree } from "./builds.ts";
import type { Impl } from "./replicas.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
const ALL = ["footprint", "phases", "handover", "failover", "load", "scale", "coordinated", "shards"] as const;

function parseCli(args: string[]) {
  let smoke = false, render = false, merge = false, out: string | undefined, only: string[] = [...ALL];
  let compare: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--smoke") smoke = true;
    else if (a === "--render") render = true;
    else if (a === "--out") out = args[++i];
    else if (a.startsWith("--out=")) out = a.slice(6);
    else if (a === "--merge") merge = true;
    else if (a === "--compare") compare = args[++i];
    else if (a.startsWith("--compare=")) compare = a.slice(10);
    else if (a === "--only") only = args[++i].split(",");
    else if (a.startsWith("--only=")) only = a.slice(7).split(",");
    else if (a === "-h" || a === "--help") {
      console.log(
        "usage: deno run -A tests/bench/bench.ts [--smoke] [--out DIR] [--only footprint,handover,...] " +
          "[--compare REF] [--merge] [--render]",
      );
      Deno.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  const bad = only.filter((o) => !(ALL as readonly string[]).includes(o));
  if (bad.length) throw new Error(`unknown benchmark ${bad.join(", ")}; choose from ${ALL.join(", ")}`);
  return { smoke, render, merge, compare, out, only };
}

/** Iteration counts: the full run fits in 15 minutes on 2 cores, the smoke run in about 2. */
function plan(smoke: boolean) {
  return smoke
    ? {
      handoverRuns: 2,
      failoverRuns: 2,
      loadWindowMs: 8000,
      memoryRounds: 1,
      idleMs: 5000,
      samples: 2,
      coldRuns: 1,
      phaseRuns: 1,
      leaseCounts: [10],
      replicaCounts: [10],
      clientGoReplicas: 10,
      scaleWindowMs: 5000,
      coordinatedRounds: 2,
      eventTerms: 2,
    }
    : {
      handoverRuns: 10,
      failoverRuns: 8,
      loadWindowMs: 60000,
      memoryRounds: 3,
      idleMs: 10000,
      samples: 5,
      coldRuns: 9,
      phaseRuns: 7,
      leaseCounts: [10, 100, 1000],
      replicaCounts: [10, 50],
      clientGoReplicas: 10,
      scaleWindowMs: 20000,
      coordinatedRounds: 7,
      eventTerms: 5,
    };
}

async function output(cmd: string[]): Promise<string | undefined> {
  try {
    const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "null" }).output();
    return r.success ? new TextDecoder().decode(r.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

async function machine() {
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8").catch(() => "");
  const osRelease = await readFile("/etc/os-release", "utf8").catch(() => "");
  return {
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    cores: navigator.hardwareConcurrency,
    os: `${/^PRETTY_NAME="?([^"\n]+)"?$/m.exec(osRelease)?.[1] ?? Deno.build.os}, kernel ${Deno.osRelease()}`,
    arch: Deno.build.arch,
    memoryMiB: Math.round(Deno.systemMemoryInfo().total / 1048576),
    loadAverageAtStart: Deno.loadavg(),
  };
}

/** Writes results.json, results.md and handover.svg, formatted as `deno fmt` wants them; returns the markdown. */
async function writeResults(outDir: string, results: BenchResults): Promise<string> {
  await mkdir(outDir, { recursive: true });
  const files = ["results.json", "results.md", "handover.svg"].map((f) => join(outDir, f));
  await writeFile(files[0], JSON.stringify(results, null, 2) + "\n");
  await writeFile(files[1], markdownReport(results));
  await writeFile(files[2], handoverSvg(results));
  // In the style `deno fmt --check` expects, so a full run leaves the tree clean.
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", "--config", join(ROOT, "deno.json"), ...files],
    cwd: ROOT,
    stdout: "null",
  }).output();
  return await readFile(files[1], "utf8");
}

async function main() {
  const { smoke, render, merge, compare, out: outOpt, only } = parseCli(Deno.args);
  if (render) {
    // Only re-render results.md and handover.svg from an existing results.json.
    const dir = outOpt ?? join(ROOT, "tests", "bench");
    const results = JSON.parse(await readFile(join(dir, "results.json"), "utf8")) as BenchResults;
    console.log(await writeResults(dir, results));
    Deno.exit(0);
  }
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const log = (m: string) => console.error(`[${((performance.now() - started) / 1000).toFixed(1)}s] ${m}`);
  const p = plan(smoke);
  // A watchdog, so that a hang cannot keep CI waiting: 25 min full, 8 min smoke.
  const watchdog = setTimeout(async () => {
    log(`!!! the benchmark run exceeded its time limit; stopping`);
    await killAll();
    Deno.exit(1);
  }, (smoke ? 8 : 25) * 60000);
  Deno.unrefTimer(watchdog);

  log(`leasehold benchmarks (${smoke ? "smoke" : "full"}): ${only.join(", ")}`);
  const serverFromEnv = Deno.env.get("LEASEHOLD_TESTENV");
  const harness = await apiServer();
  if (!harness) throw new Error("no API server: see the message above (needs Go to build tests/apiserver)");
  const info = harness as ServerInfo & { kill?: () => Promise<void> };
  const clientgoBin = join(ROOT, ".cache", "bin", "clientgo-elector");
  if (!existsSync(clientgoBin)) buildHarness();
  const nodeDist = await buildNode(ROOT, log);
  const temps: string[] = nodeDist ? [nodeDist] : [];
  const variants: Impl[] = [];
  let sizes: BenchResults["entrypointBytes"];
  const nodePath = (await output(["which", "node"])) ?? "node";
  const bunPath = join(ROOT, "node_modules", ".bin", "bun");
  if (only.includes("footprint")) {
    // The entrypoint as shipped in one file: bundles per runtime, and deploy/Dockerfile's executable.
    const deno = await bundleEntrypoint(ROOT, "deno", log);
    if (deno) {
      variants.push({ kind: "leasehold", runtime: "deno", form: "bundle", cmd: [Deno.execPath(), "run", "-A", deno] });
    }
    const bun = await bundleEntrypoint(ROOT, "bun", log);
    if (bun) variants.push({ kind: "leasehold", runtime: "bun", form: "bundle", cmd: [bunPath, bun] });
    const exe = await compileEntrypoint(ROOT, log);
    if (exe) variants.push({ kind: "leasehold", runtime: "bun", form: "executable", cmd: [exe] });
    const node = await bundleEntrypoint(ROOT, "node", log);
    if (node) variants.push({ kind: "leasehold", runtime: "node", form: "bundle", cmd: [nodePath, node] });
    for (const f of [deno, bun, exe, node]) if (f) temps.push(dirname(f));
    const size = async (f: string | undefined) => (f ? (await stat(f)).size : undefined);
    sizes = { deno: await size(deno), bun: await size(bun), node: await size(node), executable: await size(exe) };
    if (compare) {
      // The same entrypoint from an older tree, measured in this run (before/after).
      const dir = await exportTree(compare);
      temps.push(dir);
      variants.push({
        kind: "leasehold",
        runtime: "deno",
        form: compare,
        cmd: [Deno.execPath(), "run", "-A", join(dir, "lib", "cli.ts")],
      });
      variants.push({ kind: "leasehold", runtime: "bun", form: compare, cmd: [bunPath, join(dir, "lib", "cli.ts")] });
      const oldDist = await buildNode(dir, log);
      if (oldDist) {
        temps.push(oldDist);
        variants.push({
          kind: "leasehold",
          runtime: "node",
          form: compare,
          cmd: [nodePath, join(oldDist, "lib", "cli.js")],
        });
      }
    }
  }
  const caCert = await readFile(info.caFile, "utf8");
  const fetchCa = await createFetch({ caCert });
  const ctx: BenchContext = {
    root: ROOT,
    smoke,
    info,
    adminFetch: (input, init) => fetchCa(input, init),
    denoPath: Deno.execPath(),
    bunPath,
    nodePath,
    nodeDist,
    variants,
    clientgoBin,
    namespace: (prefix) => freshNamespace(info, prefix),
    identity: async (ns, lease) => (await podIdentity(info, ns, lease)) as PodIdentity,
    log,
  };
  const version = await ctx.adminFetch(`${info.url}/version`, {
    headers: { authorization: `Bearer ${info.adminToken}` },
  }).then((r) => r.json()).catch(() => ({}));
  const goMod = await readFile(join(ROOT, "tests", "apiserver", "go.mod"), "utf8");
  const results: BenchResults = {
    mode: smoke ? "smoke" : "full",
    command: ["deno run -A tests/bench/bench.ts", ...Deno.args].join(" "),
    startedAt,
    wallSeconds: 0,
    machine: await machine(),
    versions: {
      deno: Deno.version.deno,
      bun: await output([ctx.bunPath, "--version"]),
      node: (await output([ctx.nodePath, "--version"]))?.replace(/^v/, ""),
      go: (await output(["go", "version"]))?.replace(/^go version /, ""),
      clientGo: /^\s*k8s\.io\/client-go v(\S+)/m.exec(goMod)?.[1],
      kubeApiserver: version.gitVersion,
      leasehold: JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")).version,
    },
    server: { url: info.url, sharedFromEnv: !!serverFromEnv },
    benchmarks: {},
    failures: [],
    entrypointBytes: sizes,
  };
  const events = await LeaseEvents.start(ctx);
  const run = async <T>(name: string, title: string, fn: () => Promise<T>) => {
    if (!only.includes(name)) return undefined;
    log(`${title}`);
    const t0 = performance.now();
    try {
      const r = await fn();
      const errors = (r as { errors?: string[] }).errors ?? [];
      for (const e of errors) results.failures.push(`${name}: ${e}`);
      return r;
    } catch (e) {
      results.failures.push(`${name}: ${(e as Error).stack ?? e}`);
      log(`!!! ${name} failed: ${(e as Error).message}`);
      return undefined;
    } finally {
      await killAll();
      events.forget(performance.now());
      log(`${name} took ${round((performance.now() - t0) / 1000, 1)} s`);
    }
  };
  try {
    const fp = await run(
      "footprint",
      "4+5. memory of an idle follower, and cold start",
      () =>
        footprint(ctx, { memoryRounds: p.memoryRounds, idleMs: p.idleMs, samples: p.samples, coldRuns: p.coldRuns }),
    );
    if (fp) {
      results.benchmarks.memory = fp.memory;
      results.benchmarks.coldStart = fp.coldStart;
    }
    results.benchmarks.phases = await run(
      "phases",
      "4+5, taken apart: time and memory of each start-up phase",
      () =>
        startupPhases(ctx, {
          runs: p.phaseRuns,
          idleMs: smoke ? 100 : 300,
          before: compare,
          // The smoke run only keeps the code paths alive: sources and the Node build, no bundles.
          ...(smoke ? { runtimes: ["deno", "bun", "node"], modes: ["empty", "steps", "main"] } : {}),
        }),
    );
    results.benchmarks.handover = await run(
      "handover",
      "1. graceful hand-over (SIGTERM), default timings",
      async () => {
        const lh = await takeoverSeries(ctx, LEASEHOLD_DENO, "SIGTERM", p.handoverRuns, DEFAULT_TIMINGS);
        const cg = await takeoverSeries(ctx, CLIENT_GO, "SIGTERM", p.handoverRuns, DEFAULT_TIMINGS);
        return { leasehold: lh, clientGo: cg, errors: [...lh.errors, ...cg.errors] };
      },
    );
    results.benchmarks.failover = await run("failover", "2. crash fail-over (SIGKILL), 4s/3s/500ms", async () => {
      const lh = await takeoverSeries(ctx, LEASEHOLD_DENO, "SIGKILL", p.failoverRuns, FAST_TIMINGS);
      const cg = await takeoverSeries(ctx, CLIENT_GO, "SIGKILL", p.failoverRuns, FAST_TIMINGS);
      return { leasehold: lh, clientGo: cg, errors: [...lh.errors, ...cg.errors] };
    });
    results.benchmarks.load = await run(
      "load",
      "3. steady-state requests of a leader and a follower",
      () => steadyLoad(ctx, events, p.loadWindowMs),
    );
    results.benchmarks.scale = await run(
      "scale",
      "6. scale: many leases in one process, many candidates",
      () =>
        scale(ctx, events, {
          leaseCounts: p.leaseCounts,
          replicaCounts: p.replicaCounts,
          clientGoReplicas: p.clientGoReplicas,
          windowMs: p.scaleWindowMs,
        }),
    );
    (results.benchmarks as Record<string, unknown>).coordinated = await run(
      "coordinated",
      "7. coordinated election: preferredHolder hand-over, and the cost of Events",
      () => coordinatedBench(ctx, { rounds: p.coordinatedRounds, terms: p.eventTerms }),
    );
    (results.benchmarks as Record<string, unknown>).shards = await run(
      "shards",
      "8. 16 shards over 3 replicas: balanced after a join and after a graceful leave, 4s/3s/500ms",
      () => shardsBench(info, ctx.namespace, { rounds: smoke ? 2 : 7, timings: FAST_TIMINGS, log }),
    );
  } finally {
    log("stopping the lease event watch and every child process");
    await events.stop();
    await killAll();
    await info.kill?.();
    for (const t of temps) await rm(t, { recursive: true, force: true });
  }
  results.wallSeconds = round((performance.now() - started) / 1000, 1);
  results.targets = evaluateTargets(results);

  // Only a complete full run (or a --merge) replaces the committed results in tests/bench.
  const complete = !smoke && only.length === ALL.length;
  const outDir = outOpt ??
    (complete || merge
      ? join(ROOT, "tests", "bench")
      : await mkdtemp(join(tmpdir(), `leasehold-bench-${smoke ? "smoke" : "partial"}-`)));
  results.machine.loadAverageAtEnd = Deno.loadavg();
  if (merge && existsSync(join(outDir, "results.json"))) {
    // Keep the benchmarks not run now from the earlier results, and say where they come from.
    const earlier = JSON.parse(await readFile(join(outDir, "results.json"), "utf8")) as BenchResults;
    const kept = Object.keys(earlier.benchmarks).filter((k) =>
      (results.benchmarks as Record<string, unknown>)[k] === undefined
    );
    for (const k of kept) {
      (results.benchmarks as Record<string, unknown>)[k] = (earlier.benchmarks as Record<string, unknown>)[k];
    }
    results.failures.push(...earlier.failures.filter((f) => kept.some((k) => f.startsWith(`${k}:`))));
    results.merged = {
      kept,
      from: {
        startedAt: earlier.merged?.from.startedAt ?? earlier.startedAt,
        command: earlier.merged?.from.command ?? earlier.command,
        wallSeconds: earlier.merged?.from.wallSeconds ?? earlier.wallSeconds,
        loadAverageAtStart: earlier.merged?.from.loadAverageAtStart ?? earlier.machine.loadAverageAtStart,
      },
    };
    results.targets = evaluateTargets(results);
  }
  console.log(await writeResults(outDir, results));
  log(`wrote results.json, results.md and handover.svg to ${outDir} (${results.wallSeconds} s)`);
  if (results.failures.length) {
    log(`!!! ${results.failures.length} benchmark failure(s):\n${results.failures.join("\n")}`);
    Deno.exit(1);
  }
  Deno.exit(0);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`bench: ${(e as Error).stack ?? e}`);
    await killAll();
    Deno.exit(1);
  }
}
