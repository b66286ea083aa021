// Benchmark 3: steady-state Lease requests of a leader and an idle follower at
// default timings, counted at the API server (background writes subtracted) and,
// for leasehold, by each replica's own /metrics counters.

import { type BenchContext, DEFAULT_TIMINGS, round, sleep } from "./common.ts";
import { CLIENT_GO, freePort, LEASEHOLD_DENO, replicaCounters, startReplica } from "./replicas.ts";
import { type LeaseEvents, serverSnapshot, type WindowCounts, windowCounts } from "./server_counts.ts";

/** Requests per minute of one replica. */
export interface PerMinute {
  reads: number;
  writes: number;
  watches: number;
  total: number;
}

export interface LoadResult {
  windowSeconds: number;
  retryPeriodMs: number;
  leasehold?: {
    leader: PerMinute;
    follower: PerMinute;
    /** Own counters (get/update/create) over the window, raw. */
    ownCounters: { leader: Record<string, number>; follower: Record<string, number> };
    server: WindowCounts;
    /** Server GET+PUT+POST minus the replicas' own counts: 0 when nothing else talked to the server. */
    unattributed: number;
  };
  clientGo?: {
    leader: PerMinute;
    follower: PerMinute;
    leaderAlone: WindowCounts;
    pair: WindowCounts;
  };
  errors: string[];
}

const perMinute = (c: Record<string, number>, seconds: number): PerMinute => {
  const f = 60 / seconds;
  const reads = (c.GET ?? 0) + (c.LIST ?? 0);
  const writes = (c.PUT ?? 0) + (c.POST ?? 0);
  const watches = c.WATCH ?? 0;
  return {
    reads: round(reads * f, 2),
    writes: round(writes * f, 2),
    watches: round(watches * f, 2),
    total: round((reads + writes + watches) * f, 2),
  };
};

const diff = (a: Record<string, number>, b: Record<string, number>) => {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) out[k] = (b[k] ?? 0) - (a[k] ?? 0);
  return out;
};

/** leasehold's verbs (get/update/create) as the server's (GET/PUT/POST). */
const asServerVerbs = (c: Record<string, number>) => ({ GET: c.get ?? 0, PUT: c.update ?? 0, POST: c.create ?? 0 });

export async function steadyLoad(ctx: BenchContext, events: LeaseEvents, windowMs: number): Promise<LoadResult> {
  const t = DEFAULT_TIMINGS;
  const settle = ctx.smoke ? 2000 : 4000;
  const result: LoadResult = { windowSeconds: windowMs / 1000, retryPeriodMs: t.retryPeriod, errors: [] };

  // leasehold: one window with both replicas; each replica counts its own requests.
  {
    const leaseName = "load-lease";
    const ns = await ctx.namespace("load-lh");
    const sa = await ctx.identity(ns, leaseName);
    const leader = startReplica(ctx, LEASEHOLD_DENO, {
      identity: "leader",
      leaseName,
      sa,
      timings: t,
      httpPort: freePort(),
    });
    let follower;
    try {
      await leader.leading(30000);
      follower = startReplica(ctx, LEASEHOLD_DENO, {
        identity: "follower",
        leaseName,
        sa,
        timings: t,
        httpPort: freePort(),
      });
      await follower.seesLeader("leader", 30000);
      await sleep(settle);
      ctx.log(`  leasehold leader + follower: counting for ${windowMs / 1000} s`);
      const l0 = await replicaCounters(leader.httpPort!);
      const f0 = await replicaCounters(follower.httpPort!);
      const s0 = await serverSnapshot(ctx);
      await sleep(windowMs);
      const s1 = await serverSnapshot(ctx);
      const l1 = await replicaCounters(leader.httpPort!);
      const f1 = await replicaCounters(follower.httpPort!);
      const server = windowCounts(s0, s1, events, ns);
      const own = { leader: diff(l0, l1), follower: diff(f0, f1) };
      const secs = server.seconds;
      const lv = asServerVerbs(own.leader), fv = asServerVerbs(own.follower);
      // Only the follower watches; watch starts in the window are its reconnects.
      const followerVerbs = { ...fv, WATCH: server.byVerb.WATCH ?? 0 };
      const serverRw = (server.byVerb.GET ?? 0) + (server.byVerb.PUT ?? 0) + (server.byVerb.POST ?? 0);
      const ownRw = [lv, fv].reduce((s, v) => s + v.GET + v.PUT + v.POST, 0);
      result.leasehold = {
        leader: perMinute(lv, secs),
        follower: perMinute(followerVerbs, secs),
        ownCounters: own,
        server,
        unattributed: serverRw - ownRw,
      };
    } catch (e) {
      result.errors.push(`leasehold: ${(e as Error).message}`);
    } finally {
      await follower?.proc.stop();
      await leader.proc.stop();
    }
  }

  // client-go: the leader alone for half a window, then leader + follower for a
  // window; the follower's share is the difference.
  {
    const leaseName = "load-lease";
    const ns = await ctx.namespace("load-cg");
    const sa = await ctx.identity(ns, leaseName);
    const leader = startReplica(ctx, CLIENT_GO, { identity: "leader", leaseName, sa, timings: t });
    let follower;
    try {
      await leader.leading(30000);
      await sleep(settle);
      ctx.log(`  client-go leader alone: counting for ${windowMs / 2000} s`);
      const s0 = await serverSnapshot(ctx);
      await sleep(windowMs / 2);
      const s1 = await serverSnapshot(ctx);
      const alone = windowCounts(s0, s1, events, ns);
      follower = startReplica(ctx, CLIENT_GO, { identity: "follower", leaseName, sa, timings: t });
      await follower.seesLeader("leader", 30000);
      await sleep(settle);
      ctx.log(`  client-go leader + follower: counting for ${windowMs / 1000} s`);
      const s2 = await serverSnapshot(ctx);
      await sleep(windowMs);
      const s3 = await serverSnapshot(ctx);
      const pair = windowCounts(s2, s3, events, ns);
      // The follower's share: the pair window minus the leader's rates from the
      // window alone; its writes are the pair's writes minus the successful ones
      // (all the leader's renewals), which the bench's watch counts exactly.
      const scale = pair.seconds / alone.seconds;
      const followerVerbs: Record<string, number> = {};
      for (const v of new Set([...Object.keys(pair.byVerb), ...Object.keys(alone.byVerb)])) {
        const leaderShare = v === "PUT" || v === "POST" ? 0 : (alone.byVerb[v] ?? 0) * scale;
        followerVerbs[v] = Math.max(0, (pair.byVerb[v] ?? 0) - leaderShare);
      }
      followerVerbs.PUT = Math.max(0, (followerVerbs.PUT ?? 0) + (followerVerbs.POST ?? 0) - pair.writesInNamespace);
      followerVerbs.POST = 0;
      result.clientGo = {
        leader: perMinute(alone.byVerb, alone.seconds),
        follower: perMinute(followerVerbs, pair.seconds),
        leaderAlone: alone,
        pair,
      };
    } catch (e) {
      result.errors.push(`client-go: ${(e as Error).message}`);
    } finally {
      await follower?.proc.stop();
      await leader.proc.stop();
    }
  }
  return result;
}
