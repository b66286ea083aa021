/**
 * One LIST + WATCH for many Leases. A process that takes part in many
 * elections (shards, one Lease per tenant, ...) shares a single watch of the
 * Leases that carry one label, instead of holding one watch stream per Lease:
 * on Deno one HTTP/2 connection carries at most about 100 streams, so 100+
 * per-Lease watches starve every other request.
 *
 * {@linkcode LeaseWatchHub.api} wraps a per-Lease {@linkcode LeaseApi}: reads
 * and writes go through it as before (same client, same connection), `watch`
 * is served from the shared stream, and every write puts the hub's label on
 * the Lease so that the shared watch sees it.
 *
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";
import { errorKind, LeaseholdError } from "./errors.ts";
import type { Lease } from "./lease.ts";
import { type LeaseApi, type LeaseWatchEvent, watchStream } from "./lease_api.ts";
import { DEFAULT_WATCH_IDLE_TIMEOUT_MS } from "./lease_api.ts";
import type { KubeClient } from "./kube_client.ts";
import { type Logger, silentLogger } from "./log.ts";

/** Where the hub gets the Leases from: one LIST, then a WATCH from its resourceVersion. */
export interface LeaseListSource {
  /** Lists the labelled Leases of the namespace. */
  list(signal: AbortSignal): Promise<{ items: Lease[]; resourceVersion: string }>;
  /** Watches the labelled Leases from `resourceVersion`; ends or throws when the stream does. */
  watch(resourceVersion: string, signal: AbortSignal): AsyncIterable<LeaseWatchEvent>;
}

/** Options of {@linkcode LeaseWatchHub}. Durations are in milliseconds. */
export interface LeaseWatchHubOptions {
  /** The shared LIST + WATCH. */
  source: LeaseListSource;
  /** The label every Lease of the hub carries (the source selects on it). */
  label: { key: string; value: string };
  /** Time source. @default systemClock */
  clock?: Clock;
  /** Structured logger. @default silentLogger */
  logger?: Logger;
  /** Random numbers in [0, 1) for jitter. @default Math.random */
  random?: () => number;
  /** First delay after a failed LIST or WATCH. @default 500 */
  minBackoffMs?: number;
  /** Longest delay between attempts. @default 30000 */
  maxBackoffMs?: number;
}

/** Counters of {@linkcode LeaseWatchHub}. */
export interface LeaseWatchHubStats {
  /** LIST requests sent. */
  lists: number;
  /** WATCH streams opened. */
  watches: number;
  /** Events received on the shared stream. */
  events: number;
  /** Per-Lease watches being served now. */
  subscribers: number;
}

interface Subscriber {
  queue: LeaseWatchEvent[];
  error?: unknown;
  wake?: () => void;
}

/** The hub lost its stream: per-Lease watches end with this and are opened again. */
export class LeaseWatchHubError extends LeaseholdError {
  /** Creates the error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LeaseWatchHubError";
  }
}

/**
 * A shared LIST + WATCH of labelled Leases, serving the `watch` of many
 * per-Lease APIs.
 *
 * @example Usage
 * ```ts
 * import { LeaseWatchHub, MemoryLeaseStore } from "@leasehold/leasehold";
 * const store = new MemoryLeaseStore();
 * const source = {
 *   list: () => Promise.resolve({ items: [], resourceVersion: "1" }),
 *   watch: async function* () {},
 * };
 * const hub = new LeaseWatchHub({ source, label: { key: "leasehold.dev/group", value: "shards" } });
 * const api = hub.api(store.api("default", "shard-0"));
 * console.log(api.name); // "shard-0"
 * ```
 */
export class LeaseWatchHub {
  readonly #source: LeaseListSource;
  readonly #label: { key: string; value: string };
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #minBackoff: number;
  readonly #maxBackoff: number;
  /** Each Lease and when the hub first saw that resourceVersion of it. */
  readonly #cache = new Map<string, { lease: Lease; seenAt: number }>();
  readonly #subs = new Map<string, Set<Subscriber>>();
  #synced = false;
  #syncWaiters: (() => void)[] = [];
  readonly #stats = { lists: 0, watches: 0, events: 0 };

  /** Creates the hub; nothing is requested until {@linkcode LeaseWatchHub.run}. */
  constructor(options: LeaseWatchHubOptions) {
    this.#source = options.source;
    this.#label = options.label;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger ?? silentLogger;
    this.#random = options.random ?? Math.random;
    this.#minBackoff = options.minBackoffMs ?? 500;
    this.#maxBackoff = options.maxBackoffMs ?? 30000;
  }

  /** Counters: lists, watches, events, subscribers. */
  stats(): LeaseWatchHubStats {
    let subscribers = 0;
    for (const s of this.#subs.values()) subscribers += s.size;
    return { ...this.#stats, subscribers };
  }

  /** Whether the shared stream is listed and watching. */
  get synced(): boolean {
    return this.#synced;
  }

  /**
   * Lists and watches until `signal` aborts: a 410 (or any end of the stream)
   * lists again; a failure backs off (jittered, doubling up to maxBackoffMs) and
   * ends every per-Lease watch, whose electors then poll until it is back.
   */
  async run(signal: AbortSignal): Promise<void> {
    let backoff = this.#minBackoff;
    while (!signal.aborted) {
      let delivered = false;
      try {
        this.#stats.lists++;
        const { items, resourceVersion } = await this.#source.list(signal);
        this.#resync(items);
        this.#setSynced(true);
        this.#stats.watches++;
        for await (const ev of this.#source.watch(resourceVersion, signal)) {
          delivered = true;
          this.#stats.events++;
          this.#apply(ev);
        }
        throw new LeaseWatchHubError("the shared lease watch ended; listing again");
      } catch (e) {
        this.#setSynced(false);
        this.#fail(e);
        if (signal.aborted) break;
        const gone = (e as { code?: number }).code === 410;
        if (!gone) {
          this.#log.debug("shared lease watch failed", { error: e instanceof Error ? e.message : String(e) });
        }
        if (delivered || gone) backoff = this.#minBackoff;
        const wait = gone ? 0 : backoff * (0.5 + this.#random());
        backoff = Math.min(backoff * 2, this.#maxBackoff);
        try {
          await this.#clock.sleep(wait, signal);
        } catch {
          break;
        }
      }
    }
    this.#setSynced(false);
    this.#fail(new LeaseWatchHubError("the shared lease watch was stopped"));
  }

  /**
   * A {@linkcode LeaseApi} for one Lease whose `watch` is served by this hub and
   * whose writes carry the hub's label.
   */
  api(base: LeaseApi): LeaseApi {
    const label = (lease: Lease): Lease => ({
      ...lease,
      metadata: {
        ...lease.metadata,
        labels: {
          ...(lease.metadata?.labels as Record<string, string> | undefined),
          [this.#label.key]: this.#label.value,
        },
      },
    });
    return {
      namespace: base.namespace,
      name: base.name,
      get: (signal) => base.get(signal),
      create: (lease, signal) => base.create(label(lease), signal),
      update: (lease, signal) => base.update(label(lease), signal),
      watch: (rv, signal) => this.#subscribe(base.name, rv, signal),
      clock: this.#clock,
    };
  }

  #setSynced(v: boolean): void {
    this.#synced = v;
    if (v) {
      const waiters = this.#syncWaiters;
      this.#syncWaiters = [];
      for (const w of waiters) w();
    }
  }

  #resync(items: Lease[]): void {
    const seen = new Set<string>();
    for (const l of items) {
      const name = l?.metadata?.name;
      if (typeof name !== "string") continue;
      seen.add(name);
      this.#remember(name, l);
    }
    for (const name of [...this.#cache.keys()]) if (!seen.has(name)) this.#cache.delete(name);
  }

  #apply(ev: LeaseWatchEvent): void {
    if (ev.type === "BOOKMARK") return;
    const name = ev.object?.metadata?.name;
    if (typeof name !== "string") return;
    if (ev.type === "DELETED") this.#cache.delete(name);
    else this.#remember(name, ev.object);
    const subs = this.#subs.get(name);
    if (!subs) return;
    for (const s of subs) {
      s.queue.push(ev);
      s.wake?.();
    }
  }

  /** Keeps `lease`; the time it was first seen changes only with its resourceVersion. */
  #remember(name: string, lease: Lease): void {
    const prev = this.#cache.get(name);
    const same = prev && prev.lease.metadata?.resourceVersion === lease.metadata?.resourceVersion;
    this.#cache.set(name, { lease, seenAt: same ? prev.seenAt : this.#clock.now() });
  }

  #fail(e: unknown): void {
    for (const subs of this.#subs.values()) {
      for (const s of subs) {
        s.error ??= e instanceof LeaseWatchHubError ? e : new LeaseWatchHubError(
          `the shared lease watch failed (${errorKind(e)}): ${e instanceof Error ? e.message : String(e)}`,
          { cause: e },
        );
        s.wake?.();
      }
    }
  }

  #waitSynced(signal: AbortSignal): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.#syncWaiters = this.#syncWaiters.filter((w) => w !== done);
        reject(signal.reason);
      };
      const done = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      this.#syncWaiters.push(done);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  async *#subscribe(name: string, rv: string | undefined, signal: AbortSignal): AsyncIterable<LeaseWatchEvent> {
    await this.#waitSynced(signal);
    const sub: Subscriber = { queue: [] };
    let subs = this.#subs.get(name);
    if (!subs) this.#subs.set(name, subs = new Set());
    subs.add(sub);
    const onAbort = () => sub.wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      // Catch the subscriber up with what the hub knows now.
      const current = this.#cache.get(name);
      if (current && current.lease.metadata?.resourceVersion !== rv) {
        // With the time the hub first saw it: an elector on the same clock times the claim from then.
        yield { type: "MODIFIED", object: current.lease, observedAt: current.seenAt };
      } else if (!current && rv !== undefined) {
        // The caller has seen this Lease but the shared watch does not hold it:
        // deleted, or not (yet) labelled. Either way it is not watched here.
        throw new LeaseWatchHubError(
          `lease ${name} is not in the shared watch (deleted, or missing the label ${this.#label.key}=${this.#label.value} that the first write adds)`,
        );
      }
      for (;;) {
        if (signal.aborted) throw signal.reason;
        if (sub.error) throw sub.error;
        const ev = sub.queue.shift();
        if (ev) {
          yield ev;
          continue;
        }
        await new Promise<void>((resolve) => (sub.wake = resolve));
        sub.wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      subs.delete(sub);
      if (subs.size === 0) this.#subs.delete(name);
    }
  }
}

/** Leases per LIST page of {@linkcode kubeLeaseListSource}. */
const LIST_PAGE_SIZE = 250;
/** Pages one LIST may take before it gives up (a label selector that matches far too much). */
const MAX_LIST_PAGES = 400;

/**
 * The LIST + WATCH of the Leases that carry `label` in `namespace`, through one
 * client: the source of a {@linkcode LeaseWatchHub} against a real API server.
 * RBAC: `list` and `watch` on `leases` in the namespace (not limited by name).
 *
 * @example Usage
 * ```ts
 * import { KubeClient, kubeLeaseListSource, LeaseWatchHub } from "@leasehold/leasehold";
 * const client = new KubeClient({ server: "https://127.0.0.1:6443" });
 * const label = { key: "leasehold.dev/group", value: "shards" };
 * const hub = new LeaseWatchHub({ source: kubeLeaseListSource(client, "default", label), label });
 * console.log(hub.synced); // false until run() has listed
 * ```
 */
export function kubeLeaseListSource(
  client: KubeClient,
  namespace: string,
  label: { key: string; value: string },
  options: { watchIdleTimeoutMs?: number; roleFile?: string } = {},
): LeaseListSource {
  const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`;
  const labelSelector = `${label.key}=${label.value}`;
  const intent = (verb: string) => ({
    verb,
    resource: "leases.coordination.k8s.io",
    namespace,
    roleFile: options.roleFile,
  });
  return {
    async list(signal) {
      // In pages, so that each answer stays small (the client refuses bodies over its
      // size cap) whatever the number of Leases; every page is of one snapshot.
      const items: Lease[] = [];
      let cont = "";
      let rv = "";
      for (let page = 0;; page++) {
        const q = new URLSearchParams({ labelSelector, limit: String(LIST_PAGE_SIZE) });
        if (cont) q.set("continue", cont);
        const v = await client.request("GET", `${base}?${q}`, { signal, intent: intent("list") }) as {
          items?: unknown;
          metadata?: { resourceVersion?: unknown; continue?: unknown };
        };
        const pageRv = v?.metadata?.resourceVersion;
        if (!Array.isArray(v?.items) || typeof pageRv !== "string") {
          throw new LeaseholdError(`list leases in ${namespace}: the answer is not a LeaseList`);
        }
        items.push(...(v.items as Lease[]));
        rv = pageRv;
        const next = v.metadata?.continue;
        if (typeof next !== "string" || next === "") break;
        if (page >= MAX_LIST_PAGES) {
          throw new LeaseholdError(
            `list leases in ${namespace}: more than ${MAX_LIST_PAGES * LIST_PAGE_SIZE} Leases carry ${labelSelector}`,
          );
        }
        cont = next;
      }
      return { items, resourceVersion: rv };
    },
    watch(resourceVersion, signal) {
      const q = new URLSearchParams({
        watch: "1",
        labelSelector,
        allowWatchBookmarks: "true",
        timeoutSeconds: "300",
        resourceVersion,
      });
      return watchStream(client, `${base}?${q}`, {
        signal,
        intent: intent("watch"),
        idleMs: options.watchIdleTimeoutMs ?? DEFAULT_WATCH_IDLE_TIMEOUT_MS,
        where: `watch leases ${labelSelector} in ${namespace}`,
      });
    },
  };
}
