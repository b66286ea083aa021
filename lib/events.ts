/**
 * Kubernetes Events about leadership, written on the Lease itself so that
 * `kubectl describe lease <name>` shows who became leader and when, exactly as
 * client-go's Lease lock records them: type `Normal`, reason `LeaderElection`,
 * messages `<identity> became leader` and `<identity> stopped leading`.
 *
 * Events are advisory. A write that fails (403, 5xx, a hung connection) is
 * logged once per kind of failure and never delays or changes the election:
 * recording runs beside the elector, one event at a time, rate-limited, with a
 * bounded queue.
 *
 * RBAC: `create` on `events` in the core group (`apiGroups: [""]`) in the
 * Lease's namespace.
 *
 * @module
 */

import { errorKind } from "./errors.ts";
import type { KubeClient } from "./kube_client.ts";
import { type Clock, systemClock } from "./clock.ts";
import { type Logger, silentLogger } from "./log.ts";

/** What happened, as the message's verb phrase. */
export type LeaderEventAction = "became leader" | "stopped leading";

/** Options of {@linkcode LeaderEventRecorder}. Durations are in milliseconds. */
export interface LeaderEventRecorderOptions {
  /** Client for the API server (the same one the Lease uses is fine). */
  client: KubeClient;
  /** Namespace of the Lease. */
  namespace: string;
  /** Name of the Lease (the Events' involvedObject). */
  leaseName: string;
  /** This replica's identity, the subject of every message. */
  identity: string;
  /** `source.component` / `reportingComponent`. @default "leasehold" */
  component?: string;
  /** Structured logger. @default silentLogger */
  logger?: Logger;
  /** Time source for timestamps and the rate limit. @default systemClock */
  clock?: Clock;
  /** Events that may be written back to back. @default 10 */
  burst?: number;
  /** One more event is allowed after each interval. @default 30000 */
  refillMs?: number;
  /** Timeout of each request. @default 5000 */
  timeoutMs?: number;
  /** Events waiting to be written beyond which new ones are dropped. @default 8 */
  maxQueue?: number;
}

/** Counters of {@linkcode LeaderEventRecorder}. */
export interface LeaderEventStats {
  /** Events written. */
  written: number;
  /** Events that could not be written. */
  failed: number;
  /** Events dropped by the rate limit or a full queue. */
  dropped: number;
}

/** RFC 3339 with whole seconds, the format of `metav1.Time`. */
function rfc3339Seconds(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/**
 * Writes leadership Events on a Lease, beside the election and never in its way.
 *
 * @example Usage
 * ```ts
 * import { KubeClient, LeaderEventRecorder } from "@leasehold/leasehold";
 * const sent: string[] = [];
 * const fetch = (_: string | URL | Request, init?: RequestInit) => {
 *   if (init?.method === "POST") sent.push(JSON.parse(String(init.body)).message);
 *   return Promise.resolve(Response.json({ metadata: { uid: "u-1" } }));
 * };
 * const client = new KubeClient({ server: "https://127.0.0.1:6443", fetch });
 * const events = new LeaderEventRecorder({ client, namespace: "default", leaseName: "app", identity: "pod-a" });
 * await events.record("became leader");
 * console.log(sent); // ["pod-a became leader"]
 * ```
 */
export class LeaderEventRecorder {
  readonly #o: Required<Omit<LeaderEventRecorderOptions, "client" | "logger" | "clock">>;
  readonly #client: KubeClient;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #warned = new Set<string>();
  #tokens: number;
  #refilledAt: number;
  #queued = 0;
  #chain: Promise<void> = Promise.resolve();
  #seq = 0;
  readonly #stats: LeaderEventStats = { written: 0, failed: 0, dropped: 0 };

  /** Creates a recorder; no request is made. */
  constructor(options: LeaderEventRecorderOptions) {
    this.#client = options.client;
    this.#log = options.logger ?? silentLogger;
    this.#clock = options.clock ?? systemClock;
    this.#o = {
      namespace: options.namespace,
      leaseName: options.leaseName,
      identity: options.identity,
      component: options.component ?? "leasehold",
      burst: Math.max(1, options.burst ?? 10),
      refillMs: Math.max(1, options.refillMs ?? 30000),
      timeoutMs: options.timeoutMs ?? 5000,
      maxQueue: Math.max(1, options.maxQueue ?? 8),
    };
    this.#tokens = this.#o.burst;
    this.#refilledAt = this.#clock.now();
  }

  /** Counters: written, failed, dropped. */
  stats(): LeaderEventStats {
    return { ...this.#stats };
  }

  /**
   * Queues one Event and resolves once it was written, failed or dropped.
   * Never rejects; callers that must not wait simply do not await it. `uid` is
   * the Lease's `metadata.uid` when the caller knows it (the elector does);
   * without it the recorder reads the Lease first.
   */
  record(action: LeaderEventAction, uid?: string): Promise<void> {
    if (!this.#take()) {
      this.#stats.dropped++;
      this.#once("rate", "leadership event dropped by the rate limit", { action });
      return Promise.resolve();
    }
    if (this.#queued >= this.#o.maxQueue) {
      this.#stats.dropped++;
      this.#once("queue", "leadership event dropped: earlier events are still being written", { action });
      return Promise.resolve();
    }
    this.#queued++;
    const at = this.#clock.wallTime().getTime();
    const next = this.#chain.then(() => this.#write(action, at, uid)).finally(() => {
      this.#queued--;
    });
    this.#chain = next;
    return next;
  }

  /**
   * Resolves once every Event queued so far was written, failed or dropped
   * (each write is bounded by `timeoutMs`), e.g. before a process exits so that
   * its last `stopped leading` is not lost. Never rejects.
   */
  flush(): Promise<void> {
    return this.#chain.catch(() => {});
  }

  /**
   * Records `became leader` on every `started` event of an elector and
   * `stopped leading` on every `stopped` event, with the uid of the Lease the
   * elector last observed (no extra read). Returns a function that detaches.
   */
  attach(elector: EventTarget & { readonly leaseUid?: string }): () => void {
    const started = () => void this.record("became leader", elector.leaseUid);
    const stopped = () => void this.record("stopped leading", elector.leaseUid);
    elector.addEventListener("started", started);
    elector.addEventListener("stopped", stopped);
    return () => {
      elector.removeEventListener("started", started);
      elector.removeEventListener("stopped", stopped);
    };
  }

  #take(): boolean {
    const now = this.#clock.now();
    const earned = Math.floor((now - this.#refilledAt) / this.#o.refillMs);
    if (earned > 0) {
      this.#tokens = Math.min(this.#o.burst, this.#tokens + earned);
      this.#refilledAt += earned * this.#o.refillMs;
    }
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  async #write(action: LeaderEventAction, wallMs: number, knownUid?: string): Promise<void> {
    const { namespace, leaseName, identity, component, timeoutMs } = this.#o;
    const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases/`;
    try {
      // The Lease's uid ties the Event to this incarnation of the object.
      let uid = knownUid;
      if (!uid) {
        const lease = await this.#client.request("GET", base + encodeURIComponent(leaseName), {
          timeoutMs,
          intent: { verb: "get", resource: "leases.coordination.k8s.io", namespace, name: leaseName },
        }) as { metadata?: { uid?: unknown } };
        uid = typeof lease?.metadata?.uid === "string" ? lease.metadata.uid : undefined;
      }
      const stamp = rfc3339Seconds(wallMs);
      const suffix = (BigInt(Math.floor(wallMs)) * 1000000n + BigInt(this.#seq++ % 1000000)).toString(16);
      const body = {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${leaseName}.${suffix}`.slice(0, 253), namespace },
        involvedObject: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          namespace,
          name: leaseName,
          ...(uid ? { uid } : {}),
        },
        reason: "LeaderElection",
        message: `${identity} ${action}`,
        type: "Normal",
        source: { component },
        reportingComponent: component,
        reportingInstance: identity,
        firstTimestamp: stamp,
        lastTimestamp: stamp,
        count: 1,
      };
      await this.#client.request("POST", `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`, {
        body,
        timeoutMs,
        intent: { verb: "create", resource: "events", namespace },
      });
      this.#stats.written++;
      this.#log.debug("leadership event written", { action });
    } catch (e) {
      this.#stats.failed++;
      this.#once(`error:${errorKind(e)}`, "could not write a leadership event; the election is not affected", {
        action,
        error: e instanceof Error ? e.message : String(e),
      });
    }
  }

  #once(key: string, msg: string, fields: Record<string, unknown>): void {
    if (this.#warned.has(key)) {
      this.#log.debug(msg, fields);
      return;
    }
    this.#warned.add(key);
    this.#log.warn(msg + " (logged once; later ones at debug level)", fields);
  }
}
