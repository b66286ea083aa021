// Benchmark 6: scale. (a) One Deno process holding many Leases at once: CPU per
// renewal, memory, requests per second, TCP connections to the API server;
// the old way (a client and a watch per Lease) beside the shared way (one
// KubeClient, one LeaseWatchHub), in the same run. (b) Many candidates on ONE Lease:
// total requests per second as the number of candidates grows, leasehold
// (in-process electors, each with its own client) against client-go processes.

import { join } from "node:path";
import { type BenchContext, DEFAULT_TIMINGS, Proc, round, sleep } from "./common.ts";
import { CLIENT_GO, type Replica, startReplica } from "./replicas.ts";
import { type LeaseEvents, serverSnapshot, type WindowCounts, windowCounts } from "./server_counts.ts";
import { serverSockets, type WorkerParams } from "./scale_worker.ts";

export interface LeasesPoint {
  leases: number;
  acquireMs: number;
  windowSeconds: number;
  renewals: number;
  renewalsPerSecond: number;
  cpuMs: number;
  /** CPU time of the whole process per successful renewal, µs. */
  cpuUsPerRenewal: number;
  /** CPU share of one core over the window, %. */
  cpuPercent: number;
  rssBaseMiB: number;
  rssMiB: number;
  /** (RSS after the elections settled − RSS with only the client loaded) / leases, KiB. */
  rssPerLeaseKiB: number;
  /** (JavaScript heap in use after the elections settled − with only the client loaded) / leases, KiB. */
  heapPerLeaseKiB?: number;
  renewLatencyMeanMs: number | null;
  ownRequestsPerSecond: number;
  server: WindowCounts;
  serverRequestsPerSecond: number;
  errors: Record<string, number>;
  /** How the Leases were reached: a client each, or one client and one LeaseWatchHub for all. */
  mode?: "client-per-lease" | "shared" | "shared-pooled" | "shared-small-young";
  /** TCP connections of the process to the API server over the window. */
  connections?: ConnectionCounts;
}

/** The worker's TCP connections to the API server, sampled every 100 ms over the window. */
export interface ConnectionCounts {
  /** Most established at one sample. */
  most: number;
  /** Distinct connections seen over the window (a connection per request shows here). */
  distinct: number;
}

export interface ReplicasPoint {
  impl: "leasehold" | "client-go";
  replicas: number;
  windowSeconds: number;
  server: WindowCounts;
  requestsPerSecond: number;
  /** How the point was obtained. */
  how: string;
}

export interface ScaleResult {
  windowSeconds: number;
  /** The old way: one client (and connection) per Lease. */
  leases: LeasesPoint[];
  /**
   * The shared way, measured in the same run: one KubeClient and one
   * LeaseWatchHub for all Leases, through the library's transport ("shared"),
   * and through one pooled HTTP/2 connection ("shared-pooled", see scale_worker.ts).
   */
  shared?: LeasesPoint[];
  replicas: ReplicasPoint[];
  /** client-go at the larger replica count, extrapolated from its measured per-follower rate. */
  clientGoExtrapolated?: ReplicasPoint;
  errors: string[];
}

async function runWorker(
  ctx: BenchContext,
  events: LeaseEvents,
  params: WorkerParams,
  v8Flags?: string,
): Promise<
  { lines: Record<string, Record<string, unknown>>; server: WindowCounts; connections: ConnectionCounts }
> {
  const worker = new Proc(
    [
      ctx.denoPath,
      "run",
      "-A",
      `--v8-flags=--expose-gc${v8Flags ? `,${v8Flags}` : ""}`,
      join(ctx.root, "tests", "bench", "scale_worker.ts"),
      JSON.stringify(params),
    ],
    { logStream: "stdout", name: `scale worker ${params.mode} ${params.count}`, cwd: ctx.root },
  );
  try {
    const limit = 240000 + params.windowMs;
    const start = await worker.waitFor((l) => l.event === "window-start" || l.event === "error", limit, "window start");
    if (start.event === "error") throw new Error(`scale worker: ${start.error}`);
    const s0 = await serverSnapshot(ctx);
    // TCP connections of the worker to the API server, sampled every 100 ms over the window.
    const port = Number(new URL(params.server).port || 443);
    const seen = new Set<string>();
    let most = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const now = serverSockets(worker.pid, port);
        most = Math.max(most, now.size);
        for (const i of now) seen.add(i);
        await sleep(100);
      }
    })();
    await worker.waitFor((l) => l.event === "window-end", params.windowMs + 30000, "window end");
    sampling = false;
    await sampler;
    const s1 = await serverSnapshot(ctx);
    await worker.exited;
    const lines: Record<string, Record<string, unknown>> = {};
    for (const l of worker.lines) if (typeof l.event === "string") lines[l.event] = l;
    return {
      lines,
      server: windowCounts(s0, s1, events, params.namespace),
      connections: { most, distinct: seen.size },
    };
  } finally {
    await worker.stop("SIGKILL", 0);
  }
}

export async function scale(
  ctx: BenchContext,
  events: LeaseEvents,
  o: { leaseCounts: number[]; replicaCounts: number[]; clientGoReplicas: number; windowMs: number },
): Promise<ScaleResult> {
  const t = DEFAULT_TIMINGS;
  const result: ScaleResult = { windowSeconds: o.windowMs / 1000, leases: [], replicas: [], errors: [] };
  const base = { server: ctx.info.url, caFile: ctx.info.caFile, token: ctx.info.adminToken, timings: t };

  // "shared-small-young": the shared way with V8's young generation capped at 1 MiB
  // per semi-space (`--v8-flags=--max-semi-space-size=1`), at the largest count only.
  // V8 sizes the young generation to the allocation rate (up to 16 MiB per semi-space),
  // which at 500 renewals/s is most of the RSS growth; the JavaScript heap that stays
  // is about 13 KiB per Lease.
  const modes = [
    { mode: "client-per-lease", worker: "leases", pooled: false, v8: undefined },
    { mode: "shared", worker: "shared", pooled: false, v8: undefined },
    { mode: "shared-pooled", worker: "shared", pooled: true, v8: undefined },
    { mode: "shared-small-young", worker: "shared", pooled: false, v8: "--max-semi-space-size=1" },
  ] as const;
  const largest = Math.max(...o.leaseCounts);
  for (const count of o.leaseCounts) {
    for (const m of modes) {
      if (m.v8 && count !== largest) continue;
      try {
        const namespace = await ctx.namespace("scale-leases");
        ctx.log(`  ${count} leases in one process (${m.mode}): electing, then counting for ${o.windowMs / 1000} s`);
        const { lines, server, connections } = await runWorker(ctx, events, {
          ...base,
          mode: m.worker,
          pooled: m.pooled,
          count,
          namespace,
          settleMs: 2 * t.retryPeriod,
          windowMs: o.windowMs,
        }, m.v8);
        const end = lines["window-end"] as {
          windowMs: number;
          cpuMs: number;
          renewals: number;
          renewLatencyMeanMs: number | null;
          requests: Record<string, number>;
          errors: Record<string, number>;
          rssKb: number;
        };
        const ready = lines["ready"] as { acquireMs: number; rssKb: number; heapKb?: number };
        const baseRss = (lines["base"] as { rssKb: number }).rssKb;
        const baseHeap = (lines["base"] as { heapKb?: number }).heapKb;
        const secs = end.windowMs / 1000;
        const own = Object.values(end.requests).reduce((a, b) => a + b, 0);
        const p: LeasesPoint = {
          leases: count,
          mode: m.mode,
          acquireMs: ready.acquireMs,
          windowSeconds: round(secs, 2),
          renewals: end.renewals,
          renewalsPerSecond: round(end.renewals / secs, 1),
          cpuMs: round(end.cpuMs, 1),
          cpuUsPerRenewal: end.renewals ? round((end.cpuMs * 1000) / end.renewals, 0) : NaN,
          cpuPercent: round((end.cpuMs / end.windowMs) * 100, 1),
          rssBaseMiB: round(baseRss / 1024, 1),
          rssMiB: round(end.rssKb / 1024, 1),
          rssPerLeaseKiB: round((ready.rssKb - baseRss) / count, 1),
          heapPerLeaseKiB: ready.heapKb !== undefined && baseHeap !== undefined
            ? round((ready.heapKb - baseHeap) / count, 1)
            : undefined,
          renewLatencyMeanMs: end.renewLatencyMeanMs === null ? null : round(end.renewLatencyMeanMs, 2),
          ownRequestsPerSecond: round(own / secs, 1),
          server,
          serverRequestsPerSecond: round(server.total / server.seconds, 1),
          errors: end.errors,
          connections,
        };
        if (m.mode === "client-per-lease") result.leases.push(p);
        else (result.shared ??= []).push(p);
        ctx.log(
          `    ${p.cpuUsPerRenewal} µs CPU per renewal, ${p.rssMiB} MiB RSS, ${p.rssPerLeaseKiB} KiB per Lease ` +
            `(JavaScript heap ${p.heapPerLeaseKiB ?? "?"} KiB), ` +
            `${p.serverRequestsPerSecond} requests/s, TCP connections: at most ${connections.most} at once, ` +
            `${connections.distinct} over the window`,
        );
      } catch (e) {
        result.errors.push(`${count} leases (${m.mode}): ${(e as Error).message}`);
      }
    }
  }

  for (const count of o.replicaCounts) {
    try {
      const namespace = await ctx.namespace("scale-replicas");
      ctx.log(`  leasehold: ${count} candidates on one lease, counting for ${o.windowMs / 1000} s`);
      const { server } = await runWorker(ctx, events, {
        ...base,
        mode: "replicas",
        count,
        namespace,
        settleMs: 2 * t.retryPeriod,
        windowMs: o.windowMs,
      });
      result.replicas.push({
        impl: "leasehold",
        replicas: count,
        windowSeconds: round(server.seconds, 2),
        server,
        requestsPerSecond: round(server.total / server.seconds, 2),
        how: "in-process LeaderElectors, each with its own client and connection, in one Deno process",
      });
    } catch (e) {
      result.errors.push(`leasehold ${count} replicas: ${(e as Error).message}`);
    }
  }

  // client-go: separate processes on one Lease.
  if (o.clientGoReplicas > 0) {
    const leaseName = "scale-one";
    const namespace = await ctx.namespace("scale-cg");
    const sa = await ctx.identity(namespace, leaseName);
    const reps: Replica[] = [];
    try {
      ctx.log(`  client-go: ${o.clientGoReplicas} processes on one lease, counting for ${o.windowMs / 1000} s`);
      for (let i = 0; i < o.clientGoReplicas; i++) {
        reps.push(startReplica(ctx, CLIENT_GO, { identity: `replica-${i}`, leaseName, sa, timings: t }));
      }
      const first = await Promise.any(reps.map((r) => r.leading(30000).then(() => r)));
      await Promise.all(reps.filter((r) => r !== first).map((r) => r.seesLeader(first.identity, 30000)));
      await sleep(2 * t.retryPeriod + 1000);
      const s0 = await serverSnapshot(ctx);
      await sleep(o.windowMs);
      const s1 = await serverSnapshot(ctx);
      const server = windowCounts(s0, s1, events, namespace);
      result.replicas.push({
        impl: "client-go",
        replicas: o.clientGoReplicas,
        windowSeconds: round(server.seconds, 2),
        server,
        requestsPerSecond: round(server.total / server.seconds, 2),
        how: "separate client-go elector processes",
      });
      // Extrapolate to the largest leasehold count: the leader's rate plus one poll rate per follower.
      const maxN = Math.max(...o.replicaCounts);
      if (maxN > o.clientGoReplicas) {
        const secs = server.seconds;
        const leaderRate = ((server.byVerb.PUT ?? 0) + (server.byVerb.POST ?? 0)) / secs;
        const followerRate = (server.total / secs - leaderRate) / (o.clientGoReplicas - 1);
        result.clientGoExtrapolated = {
          impl: "client-go",
          replicas: maxN,
          windowSeconds: 0,
          server,
          requestsPerSecond: round(leaderRate + followerRate * (maxN - 1), 2),
          how: `extrapolated from ${o.clientGoReplicas} processes: leader writes/s + ${
            maxN - 1
          } × measured requests/s per follower`,
        };
      }
    } catch (e) {
      result.errors.push(`client-go replicas: ${(e as Error).message}`);
    } finally {
      await Promise.all(reps.map((r) => r.proc.stop()));
    }
  }
  return result;
}
