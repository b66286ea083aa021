/**
 * The entrypoint's sharded mode (`--shards N -- CMD`): a
 * {@linkcode ShardedLeaseSet} over the Leases `<lease-name>-<i>`, one command
 * per held shard with `LEASEHOLD_SHARD=<i>` and that shard's fencing token in
 * its environment, each stopped as a process group (SIGTERM, then SIGKILL
 * before another replica could take the shard) when its shard is given up or
 * lost; `/leader` lists the held shards and `/metrics` has one series per shard.
 * With events on (the default), each shard Lease gets the Events
 * `<identity> became leader` / `<identity> stopped leading`, as the single
 * Lease does.
 *
 * @module
 */

import type { IncomingMessage, Server, ServerResponse } from "node:http";
import process from "node:process";
import { type ClusterConfig, createLeaseApi, inClusterConfig, kubeconfigConfig } from "./config.ts";
import { endpointRequest } from "./cli_http.ts";
import { childGraceMargin, type CliSettings } from "./cli_settings.ts";
import { ConfigError } from "./errors.ts";
import { type LeaderEventAction, LeaderEventRecorder } from "./events.ts";
import type { KubeClient } from "./kube_client.ts";
import type { Lease } from "./lease.ts";
import type { LeaseApi } from "./lease_api.ts";
import type { ShardedLeaseSet } from "./lease_set.ts";
import { kubeShardedLeaseSet } from "./lease_set_kube.ts";
import { watchedLeaseApi } from "./lease_set_slot.ts";
import type { Logger } from "./log.ts";
import { CommandSupervisor } from "./supervisor.ts";

/** What {@linkcode runShards} needs from the entrypoint. */
export interface ShardsRunOptions {
  /** Structured logger. */
  log: Logger;
  /** Aborted on SIGTERM/SIGINT (and by the run itself when a command exits). */
  stop: AbortController;
  /** Environment lookup for in-cluster configuration. */
  env?: (name: string) => string | undefined;
  /** Called with the HTTP server once it listens. */
  onServer?: (server: Server) => void;
  /** Called with the set once it exists (tests observe it). */
  onSet?: (set: ShardedLeaseSet) => void;
  /** The exit code chosen by a handled signal, if one arrived. */
  signalCode: () => number | undefined;
}

const label = (v: string) => v.replace(/["\\\n]/g, "_");

/**
 * Prometheus text for a sharded set: per shard (label `shard="<i>"`) whether
 * this replica holds it and its term counters, and the set's members and quota.
 *
 * @example Usage
 * ```ts
 * import { MemoryLeaseStore, SHARD_SET_LABEL, ShardedLeaseSet } from "@leasehold/leasehold";
 * import { shardsMetricsText } from "./cli_shards.ts";
 * const store = new MemoryLeaseStore();
 * const set = new ShardedLeaseSet({
 *   namespace: "default", prefix: "work", shards: 2, identity: "a",
 *   leaseApi: (n) => store.api("default", n),
 *   source: store.listSource("default", { key: SHARD_SET_LABEL, value: "work" }),
 * });
 * console.log(shardsMetricsText(set).includes('leasehold_shard_held{set="default/work",shard="1"} 0')); // true
 * ```
 */
export function shardsMetricsText(set: ShardedLeaseSet): string {
  const st = set.state();
  const l = `set="${label(st.set)}"`;
  const shards = set.shards();
  const series = (name: string, help: string, type: string, value: (s: (typeof shards)[number]) => number) => [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} ${type}`,
    ...shards.map((s) => `${name}{${l},shard="${s.shard}"} ${value(s)}`),
  ];
  return [
    ...series(
      "leasehold_shard_held",
      "Whether this replica holds the shard (1) or not (0).",
      "gauge",
      (s) => s.isLeader ? 1 : 0,
    ),
    ...series(
      "leasehold_shard_acquired_total",
      "Terms of the shard this replica started.",
      "counter",
      (s) => s.startedTotal,
    ),
    ...series(
      "leasehold_shard_given_up_total",
      "Terms of the shard this replica gave up to balance.",
      "counter",
      (s) => s.givenUpTotal,
    ),
    ...series(
      "leasehold_shard_lost_total",
      "Terms of the shard that ended otherwise (renew deadline, taken, deleted).",
      "counter",
      (s) => s.lostTotal,
    ),
    "# HELP leasehold_shard_set_members Live replicas of the set as this replica sees them.",
    "# TYPE leasehold_shard_set_members gauge",
    `leasehold_shard_set_members{${l}} ${st.members.length}`,
    "# HELP leasehold_shard_set_quota Shards this replica may hold now.",
    "# TYPE leasehold_shard_set_quota gauge",
    `leasehold_shard_set_quota{${l}} ${st.quota}`,
  ].join("\n") + "\n";
}

/** How long the last Events may take to be written when the run ends. */
const EVENT_FLUSH_MS = 2000;

/**
 * Leadership Events on each shard Lease: `<identity> became leader` when this
 * replica starts a term of the shard, `<identity> stopped leading` when the
 * term ends, with the shard Lease as involvedObject (its uid as last seen in
 * this replica's own reads and writes of it). One rate-limited recorder per
 * shard Lease; writes never delay the set. A warning (e.g. a Role without
 * events) is logged once for the whole set, not once per shard.
 */
class ShardEvents {
  readonly #recorders = new Map<number, LeaderEventRecorder>();
  readonly #uids = new Map<string, string>();
  readonly #warned = new Set<string>();
  readonly log: Logger;
  constructor(
    readonly client: KubeClient,
    readonly namespace: string,
    readonly identity: string,
    log: Logger,
  ) {
    this.log = {
      debug: (msg, fields) => log.debug(msg, fields),
      info: (msg, fields) => log.info(msg, fields),
      warn: (msg, fields) => {
        if (this.#warned.has(msg)) return log.debug(msg, fields);
        this.#warned.add(msg);
        log.warn(msg, fields);
      },
      error: (msg, fields) => log.error(msg, fields),
    };
  }

  /** Wraps a Lease's API so that the uid of every Lease it reads or writes is remembered. */
  track(api: LeaseApi): LeaseApi {
    const seen = <T extends Lease | undefined>(p: Promise<T>): Promise<T> =>
      p.then((l) => {
        const uid = l?.metadata?.uid;
        if (typeof uid === "string" && uid) this.#uids.set(api.name, uid);
        return l;
      });
    return watchedLeaseApi(api, seen, seen);
  }

  /** Records on the set's `started` and `stopped` events. */
  attach(set: ShardedLeaseSet): void {
    const on = (action: LeaderEventAction) => (e: Event) => {
      const shard = (e as CustomEvent<{ shard: number }>).detail.shard;
      const lease = set.shardLease(shard);
      let r = this.#recorders.get(shard);
      if (!r) {
        r = new LeaderEventRecorder({
          client: this.client,
          namespace: this.namespace,
          leaseName: lease,
          identity: this.identity,
          logger: this.log,
          timeoutMs: EVENT_FLUSH_MS,
        });
        this.#recorders.set(shard, r);
      }
      void r.record(action, this.#uids.get(lease));
    };
    set.addEventListener("started", on("became leader"));
    set.addEventListener("stopped", on("stopped leading"));
  }

  /** Waits (at most EVENT_FLUSH_MS) for the Events queued so far. */
  async flush(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([...this.#recorders.values()].map((r) => r.flush())),
      new Promise((r) => (timer = setTimeout(r, EVENT_FLUSH_MS))),
    ]);
    clearTimeout(timer);
  }
}

const SHARD_PATHS: ReadonlySet<string> = new Set(["/healthz", "/readyz", "/metrics", "/leader", "/"]);

/**
 * The HTTP endpoints of the sharded mode: `/healthz` (500 when a held shard
 * was not renewed for leaseDuration + `healthzGrace`, or a command outlived
 * its SIGKILL), `/readyz` (503 until the shared watch listed the
 * set), `/metrics`, `/leader` (the held shards with their fencing tokens) and
 * `/` (`{"held": [...]}`). GET and HEAD only.
 *
 * @example Usage
 * ```ts
 * import { createServer } from "node:http";
 * import { MemoryLeaseStore, SHARD_SET_LABEL, ShardedLeaseSet } from "@leasehold/leasehold";
 * import { createShardsHandler } from "./cli_shards.ts";
 * const store = new MemoryLeaseStore();
 * const set = new ShardedLeaseSet({
 *   namespace: "default", prefix: "work", shards: 2, identity: "a",
 *   leaseApi: (n) => store.api("default", n),
 *   source: store.listSource("default", { key: SHARD_SET_LABEL, value: "work" }),
 * });
 * const server = createServer(createShardsHandler(set, new Map()));
 * server.close();
 * ```
 */
export function createShardsHandler(
  set: ShardedLeaseSet,
  work: ReadonlyMap<number, { readonly stopping: boolean; check(): string | undefined }>,
  healthzGrace = 20000,
): (req: IncomingMessage, res: ServerResponse) => void {
  let listed = false;
  return (req, res) => {
    const r = endpointRequest(req, res, SHARD_PATHS);
    if (!r) return;
    const { path, send } = r;
    if (path === "/healthz") {
      const err = set.check(healthzGrace);
      if (err) return send(500, `unhealthy: ${err}\n`);
      for (const [shard, w] of work) {
        const err = w.check();
        if (err) return send(500, `unhealthy: shard ${shard}: ${err}\n`);
      }
      return send(200, "ok\n");
    }
    if (path === "/readyz") {
      listed ||= set.synced;
      return listed ? send(200, "ok\n") : send(503, "shard leases not listed yet\n");
    }
    if (path === "/metrics") return send(200, shardsMetricsText(set), "text/plain; version=0.0.4");
    const held = set.shards().filter((s) => s.isLeader);
    if (path === "/leader") {
      const st = set.state();
      return send(
        200,
        JSON.stringify({
          set: st.set,
          identity: st.identity,
          shards: st.shards,
          members: st.members,
          quota: st.quota,
          held: held.map((s) => ({
            shard: s.shard,
            lease: s.lease,
            fencingToken: s.fencingToken?.value ?? null,
            leaseTransitions: s.fencingToken?.leaseTransitions ?? null,
            leadingSince: s.leadingSince ?? null,
          })),
          stopping: [...work].filter(([, w]) => w.stopping).map(([shard]) => shard),
        }) + "\n",
        "application/json",
      );
    }
    send(200, JSON.stringify({ held: held.map((s) => s.shard) }) + "\n", "application/json");
  };
}

/**
 * Runs the sharded mode until `stop` aborts (or a command exits by itself:
 * then every shard is given up and its status returned). Resolves with the exit
 * code, as {@linkcode main} does; 2 for configuration errors.
 *
 * @example Usage
 * ```ts ignore
 * import { parseArgs, resolveSettings } from "@leasehold/leasehold/cli";
 * import { runShards } from "./cli_shards.ts";
 * const settings = resolveSettings(parseArgs(["--lease-name", "work", "--shards", "16", "--", "./worker"]));
 * const code = await runShards(settings, { log: console, stop: new AbortController(), signalCode: () => undefined });
 * ```
 */
export async function runShards(settings: CliSettings, o: ShardsRunOptions): Promise<number> {
  const { log, stop } = o;
  const n = settings.shards ?? 1;
  let exitCode: number | undefined;
  let server: Server | undefined;
  let set: ShardedLeaseSet;
  let events: ShardEvents | undefined;
  const supervisors = new Map<number, CommandSupervisor>();
  try {
    const config: ClusterConfig = settings.kubeconfig
      ? await kubeconfigConfig(settings.kubeconfig)
      : await inClusterConfig({ serviceAccountDir: settings.serviceAccountDir, env: o.env });
    // One client for every shard and member Lease, and the shared watch.
    const first = await createLeaseApi(config, {
      name: `${settings.leaseName}-0`,
      namespace: settings.namespace,
      timeoutMs: Math.max(1000, settings.renewDeadline / 2),
      logger: log,
    });
    const namespace = first.namespace;
    log.info("starting", {
      shards: n,
      leases: `${namespace}/${settings.leaseName}-{0..${n - 1}}`,
      identity: settings.identity,
      source: config.source,
      leaseDuration: settings.leaseDuration,
      renewDeadline: settings.renewDeadline,
      retryPeriod: settings.retryPeriod,
      childGrace: settings.childGrace,
      command: settings.command.join(" "),
    });
    const client = first.client;
    if (settings.events) events = new ShardEvents(client, namespace, settings.identity, log);
    // Each Lease's uid is remembered for its Events.
    const tracker = events;
    set = kubeShardedLeaseSet(client, {
      wrapLeaseApi: tracker ? (api) => tracker.track(api) : undefined,
      namespace,
      prefix: settings.leaseName,
      shards: n,
      identity: settings.identity,
      memberOwner: settings.podUid && settings.identitySource === "flag"
        ? { apiVersion: "v1", kind: "Pod", name: settings.identity, uid: settings.podUid }
        : undefined,
      leaseDuration: settings.leaseDuration,
      renewDeadline: settings.renewDeadline,
      retryPeriod: settings.retryPeriod,
      logger: log,
      onStartedLeading: (shard, ctx) => {
        let sup = supervisors.get(shard);
        if (!sup) {
          sup = new CommandSupervisor({
            command: settings.command,
            childGrace: settings.childGrace,
            margin: childGraceMargin,
            log,
            env: { ...process.env, LEASEHOLD_SHARD: String(shard), LEASEHOLD_SHARDS: String(n) },
          });
          supervisors.set(shard, sup);
        }
        return sup.run(ctx, (status) => {
          if (stop.signal.aborted) return;
          exitCode = status;
          log.info("command of a held shard exited; giving up every shard and exiting with its status", {
            shard,
            status,
          });
          stop.abort();
        });
      },
    });
    events?.attach(set);
    o.onSet?.(set);
    if (settings.httpAddr) {
      const { createServer } = await import("node:http");
      const addr = settings.httpAddr;
      const srv = createServer(createShardsHandler(set, supervisors, settings.healthzGrace));
      server = srv;
      await new Promise<void>((resolve, reject) => {
        srv.once("error", (err) =>
          reject(
            new ConfigError(`cannot listen on --http-addr ${addr.host ?? ""}:${addr.port}: ${(err as Error).message}`),
          ));
        srv.listen(addr.port, addr.host, () => {
          const a = srv.address();
          log.info("serving http", { addr: typeof a === "object" && a ? `${a.address}:${a.port}` : String(a) });
          resolve();
        });
      });
      o.onServer?.(srv);
    }
  } catch (e) {
    log.error("invalid configuration", { error: (e as Error).message });
    server?.close();
    return 2;
  }
  try {
    await set.run(stop.signal);
    // The last "stopped leading" Events are written before the process exits, within EVENT_FLUSH_MS.
    await events?.flush();
    const code = exitCode ?? o.signalCode() ?? 0;
    log.info("exiting", { code });
    return code;
  } catch (e) {
    log.error("fatal", { error: (e as Error).message });
    return e instanceof ConfigError ? 2 : 1;
  } finally {
    server?.closeAllConnections?.();
    server?.close();
  }
}
