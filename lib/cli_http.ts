/**
 * The entrypoint's HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/leader`
 * and `/`. They answer GET and HEAD only; any other method gets 405 with `Allow`.
 *
 * @module
 */

import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { ElectorState, ElectorStats } from "./elector.ts";
import { ConfigError } from "./errors.ts";
import type { Logger } from "./log.ts";

/** What the endpoints read from the elector (a {@linkcode LeaderElector} fits). */
export interface ElectorView {
  /** Whether this replica leads now. */
  readonly isLeader: boolean;
  /** The holder last observed (`undefined` before the first read). */
  readonly leader: string | undefined;
  /** Counters. */
  readonly stats: ElectorStats;
  /** A snapshot of the state. */
  state(): ElectorState;
  /** An error message when the leader failed to renew for leaseDuration + `graceMs`. */
  check(graceMs?: number): string | undefined;
}

/** What the endpoints read from the command supervisor, if there is one. */
export interface WorkView {
  /** A process of an ended term is still being stopped. */
  readonly stopping: boolean;
  /** An error when the command outlived its SIGKILL (the process cannot be stopped). */
  check(): string | undefined;
}

/** Settings of {@linkcode createHandler}. */
export interface EndpointOptions {
  /** `namespace/name` for metric labels. */
  lease: () => string;
  /** Extra time past leaseDuration before `/healthz` fails, in ms. */
  healthzGrace: number;
  /** The command supervisor, in sidecar mode. */
  work?: WorkView;
}

/**
 * Prometheus text for the elector's state.
 *
 * @example Usage
 * ```ts
 * import { LeaderElector, MemoryLeaseApi } from "@leasehold/leasehold";
 * import { metricsText } from "@leasehold/leasehold/cli";
 * const e = new LeaderElector({ lease: new MemoryLeaseApi("default", "x"), identity: "a" });
 * console.log(metricsText(e, "default/x").includes('leader_election_master_status{name="default/x"} 0')); // true
 * ```
 */
export function metricsText(e: ElectorView, name: string): string {
  const l = `name="${name.replace(/["\\\n]/g, "_")}"`;
  const s = e.stats;
  const out = [
    "# HELP leader_election_master_status Whether this replica leads the lease (1) or not (0).",
    "# TYPE leader_election_master_status gauge",
    `leader_election_master_status{${l}} ${e.isLeader ? 1 : 0}`,
    "# HELP leader_election_slowpath_total Renewals that needed a GET before the PUT.",
    "# TYPE leader_election_slowpath_total counter",
    `leader_election_slowpath_total{${l}} ${s.slowpathTotal}`,
    "# HELP leasehold_leadership_acquired_total Terms this replica started.",
    "# TYPE leasehold_leadership_acquired_total counter",
    `leasehold_leadership_acquired_total{${l}} ${s.startedTotal}`,
    "# HELP leasehold_leader_changes_total Changes of holder this replica observed.",
    "# TYPE leasehold_leader_changes_total counter",
    `leasehold_leader_changes_total{${l}} ${s.leaderChangesTotal}`,
    "# HELP leasehold_renew_duration_seconds Latency of successful renewals.",
    "# TYPE leasehold_renew_duration_seconds summary",
    `leasehold_renew_duration_seconds_sum{${l}} ${(s.renewLatencySumMs / 1000).toFixed(6)}`,
    `leasehold_renew_duration_seconds_count{${l}} ${s.renewCount}`,
    "# HELP leasehold_errors_total Failed requests to the API server, by kind.",
    "# TYPE leasehold_errors_total counter",
    ...Object.entries(s.errorsByKind).map(([k, n]) => `leasehold_errors_total{${l},kind="${k}"} ${n}`),
    "# HELP leasehold_requests_total Requests sent to the API server, by verb.",
    "# TYPE leasehold_requests_total counter",
    ...Object.entries(s.requestsByVerb).map(([k, n]) => `leasehold_requests_total{${l},verb="${k}"} ${n}`),
  ];
  return out.join("\n") + "\n";
}

const PATHS = new Set(["/healthz", "/readyz", "/metrics", "/leader", "/"]);

/**
 * The shared part of an endpoint handler: the path, a `send` that answers HEAD
 * without a body, and the 404 / 405 answers. `undefined` when it answered.
 *
 * @example Usage
 * ```ts ignore
 * const r = endpointRequest(req, res, new Set(["/healthz"]));
 * if (r) r.send(200, "ok\n");
 * ```
 */
export function endpointRequest(
  req: IncomingMessage,
  res: ServerResponse,
  paths: ReadonlySet<string>,
): { path: string; send: (code: number, body: string, type?: string) => void } | undefined {
  const path = (req.url ?? "/").split("?")[0];
  const head = req.method === "HEAD";
  const send = (code: number, body: string, type = "text/plain; charset=utf-8", extra: Record<string, string> = {}) => {
    res.writeHead(code, {
      "content-type": type,
      "content-length": String(new TextEncoder().encode(body).length),
      ...extra,
    });
    res.end(head ? undefined : body);
  };
  if (!paths.has(path)) return void send(404, "not found\n");
  if (req.method !== "GET" && !head) {
    return void send(405, `method ${req.method} not allowed; use GET or HEAD\n`, undefined, { allow: "GET, HEAD" });
  }
  return { path, send };
}

/**
 * The request handler behind {@linkcode serveHttp}.
 *
 * `/healthz` is 500 when this replica leads but has not renewed for
 * leaseDuration + `healthzGrace` (client-go's HealthzAdaptor), or when the
 * command outlived its SIGKILL; it says so in its body while an ended term's
 * work is still stopping. `/readyz` is 503 until the Lease was read once.
 *
 * @example Usage
 * ```ts
 * import { createServer } from "node:http";
 * import { LeaderElector, MemoryLeaseApi } from "@leasehold/leasehold";
 * import { createHandler } from "@leasehold/leasehold/cli";
 * const e = new LeaderElector({ lease: new MemoryLeaseApi("default", "x"), identity: "a" });
 * const server = createServer(createHandler(e, { lease: () => "default/x", healthzGrace: 20000 }));
 * server.close();
 * ```
 */
export function createHandler(
  e: ElectorView,
  o: EndpointOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const r = endpointRequest(req, res, PATHS);
    if (!r) return;
    const { path, send } = r;
    if (path === "/healthz") {
      const err = e.check(o.healthzGrace) ?? o.work?.check();
      if (err) return send(500, `unhealthy: ${err}\n`);
      const st = e.state() as ElectorState & { workSettling?: boolean };
      if (st.workSettling || o.work?.stopping) return send(200, "ok: the last term's work is still stopping\n");
      return send(200, "ok\n");
    }
    if (path === "/readyz") return e.leader === undefined ? send(503, "lease not read yet\n") : send(200, "ok\n");
    if (path === "/metrics") return send(200, metricsText(e, o.lease()), "text/plain; version=0.0.4");
    if (path === "/leader") {
      const st = e.state() as ElectorState & { workSettling?: boolean };
      return send(
        200,
        JSON.stringify({
          lease: st.lease,
          holderIdentity: st.leader ?? null,
          identity: st.identity,
          isLeader: st.isLeader,
          leaseTransitions: st.leaseTransitions ?? null,
          leadingSince: st.leadingSince ?? null,
          fencingToken: st.fencingToken?.value ?? null,
          workSettling: Boolean(st.workSettling || o.work?.stopping),
        }) + "\n",
        "application/json",
      );
    }
    send(200, JSON.stringify({ name: e.leader ?? "" }) + "\n", "application/json");
  };
}

/**
 * Listens on `addr` and serves {@linkcode createHandler}; a listen failure is a
 * {@linkcode ConfigError} (exit status 2).
 *
 * @example Usage
 * ```ts
 * import { LeaderElector, MemoryLeaseApi, silentLogger } from "@leasehold/leasehold";
 * import { serveHttp } from "@leasehold/leasehold/cli";
 * const e = new LeaderElector({ lease: new MemoryLeaseApi("default", "x"), identity: "a" });
 * const server = await serveHttp({ host: "127.0.0.1", port: 0 }, e, { lease: () => "default/x", healthzGrace: 0 }, silentLogger);
 * server.close();
 * ```
 */
export async function serveHttp(
  addr: { host?: string; port: number },
  e: ElectorView,
  o: EndpointOptions,
  log: Logger,
): Promise<Server> {
  // Loaded here, so that a replica without --http-addr never loads the HTTP server.
  const { createServer } = await import("node:http");
  const server = createServer(createHandler(e, o));
  return await new Promise((resolve, reject) => {
    server.once("error", (err) => {
      const where = `${addr.host ?? ""}:${addr.port}`;
      reject(new ConfigError(`cannot listen on --http-addr ${where}: ${(err as Error).message}`));
    });
    server.listen(addr.port, addr.host, () => {
      const a = server.address();
      log.info("serving http", { addr: typeof a === "object" && a ? `${a.address}:${a.port}` : String(a) });
      resolve(server);
    });
  });
}
