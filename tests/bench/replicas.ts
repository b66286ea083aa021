// Starting election replicas as processes: the leasehold entrypoint on Deno, Bun
// or Node, and the client-go elector, behind one interface.

import { join } from "node:path";
import { type BenchContext, type LogLine, type PodIdentity, Proc, timingFlags, type Timings } from "./common.ts";

export type Runtime = "deno" | "bun" | "node";
/**
 * What runs: client-go, or the leasehold entrypoint on a runtime, by default from
 * this tree (Deno and Bun: lib/cli.ts; Node: the tsc build), or in another `form`
 * (a one-file bundle, an older tree) given by its command.
 */
export type Impl = { kind: "leasehold"; runtime: Runtime; form?: string; cmd?: string[] } | { kind: "client-go" };

export const LEASEHOLD_DENO: Impl = { kind: "leasehold", runtime: "deno" };
export const CLIENT_GO: Impl = { kind: "client-go" };

export const implName = (impl: Impl) =>
  impl.kind === "client-go" ? "client-go" : `leasehold (${impl.runtime}${impl.form ? `, ${impl.form}` : ""})`;

/** One running replica. */
export interface Replica {
  impl: Impl;
  identity: string;
  proc: Proc;
  /** The line saying this replica leads. */
  leading(ms: number): Promise<LogLine>;
  /** The line saying it observed `leader` as the holder. */
  seesLeader(leader: string, ms: number): Promise<LogLine>;
  /** Its first line (the process is up and has parsed its configuration). */
  ready(ms: number): Promise<LogLine>;
  /** The line saying it released the lease (leasehold) or stopped leading (client-go). */
  released(ms: number): Promise<LogLine>;
  /** Port of the leasehold /metrics endpoint, if started with one. */
  httpPort?: number;
}

export interface ReplicaOptions {
  identity: string;
  leaseName: string;
  sa: PodIdentity;
  timings: Timings;
  httpPort?: number;
}

/** The command that runs the leasehold entrypoint on a runtime. */
export function leaseholdCommand(ctx: BenchContext, runtime: Runtime): string[] {
  switch (runtime) {
    case "deno":
      return [ctx.denoPath, "run", "-A", join(ctx.root, "lib", "cli.ts")];
    case "bun":
      return [ctx.bunPath, join(ctx.root, "lib", "cli.ts")];
    case "node":
      if (!ctx.nodeDist) throw new Error("the Node build of leasehold is not available");
      return [ctx.nodePath, join(ctx.nodeDist, "lib", "cli.js")];
  }
}

export function startReplica(ctx: BenchContext, impl: Impl, o: ReplicaOptions): Replica {
  if (impl.kind === "client-go") {
    const proc = new Proc(
      [
        ctx.clientgoBin,
        "--service-account-dir",
        o.sa.dir,
        "--lease-name",
        o.leaseName,
        "--identity",
        o.identity,
        ...timingFlags(o.timings),
      ],
      { env: o.sa.env, logStream: "stdout", name: `client-go ${o.identity}` },
    );
    return {
      impl,
      identity: o.identity,
      proc,
      leading: (ms) => proc.waitFor((l) => l.event === "started", ms, '"started" event'),
      seesLeader: (leader, ms) =>
        proc.waitFor((l) => l.event === "new-leader" && l.leader === leader, ms, `"new-leader" ${leader}`),
      ready: (ms) => proc.waitFor((l) => l.event === "ready", ms, '"ready" event'),
      released: (ms) => proc.waitFor((l) => l.event === "stopped", ms, '"stopped" event'),
    };
  }
  const args = [
    "--lease-name",
    o.leaseName,
    "--identity",
    o.identity,
    "--service-account-dir",
    o.sa.dir,
    ...timingFlags(o.timings),
  ];
  if (o.httpPort) args.push("--http-addr", `127.0.0.1:${o.httpPort}`);
  const proc = new Proc([...(impl.cmd ?? leaseholdCommand(ctx, impl.runtime)), ...args], {
    env: o.sa.env,
    logStream: "stderr",
    name: `${implName(impl)} ${o.identity}`,
    cwd: ctx.root,
  });
  return {
    impl,
    identity: o.identity,
    proc,
    httpPort: o.httpPort,
    leading: (ms) => proc.waitFor((l) => l.msg === "started leading", ms, '"started leading"'),
    seesLeader: (leader, ms) =>
      proc.waitFor((l) => l.msg === "new leader" && l.leader === leader, ms, `"new leader" ${leader}`),
    ready: (ms) => proc.waitFor((l) => l.msg === "starting", ms, '"starting"'),
    released: (ms) => proc.waitFor((l) => l.msg === "released the lease", ms, '"released the lease"'),
  };
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Scrapes a leasehold replica's own request counters (leasehold_requests_total) by verb. */
export async function replicaCounters(port: number): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await res.text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^leasehold_requests_total\{[^}]*verb="([^"]+)"\} (\d+(?:\.\d+)?)$/gm)) {
    out[m[1]] = Number(m[2]);
  }
  return out;
}
