/**
 * An in-memory Lease store with the API server's concurrency rules
 * (resourceVersion conflicts, AlreadyExists, watch), for tests, examples and demos.
 * It is not a substitute for a real API server in integration tests.
 *
 * @module
 */

import { KubeApiError } from "./errors.ts";
import type { Lease } from "./lease.ts";
import type { LeaseApi, LeaseWatchEvent } from "./lease_api.ts";
import type { LeaseListSource } from "./lease_hub.ts";

/** An operation of the store, for fault injection. */
export type MemoryOp = "get" | "create" | "update" | "watch";

function apiError(
  code: number,
  reason: "NotFound" | "AlreadyExists" | "Conflict" | "Invalid",
  msg: string,
): KubeApiError {
  return new KubeApiError(`${reason}: ${msg}`, { code, reason, method: "", url: "memory://", serverMessage: msg });
}

/**
 * Yields `initial`, then the events `listen` pushes until `signal` aborts; `listen`
 * subscribes and returns its unsubscribe.
 */
async function* pushedEvents(
  listen: (push: (e: LeaseWatchEvent) => void) => () => void,
  initial: () => LeaseWatchEvent[],
  signal: AbortSignal,
): AsyncIterable<LeaseWatchEvent> {
  const queue: LeaseWatchEvent[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = listen((e) => {
    queue.push(e);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    yield* initial();
    for (;;) {
      if (signal.aborted) return;
      const e = queue.shift();
      if (e) {
        yield e;
        continue;
      }
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  } finally {
    unsubscribe();
    signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Many Leases in memory, keyed by namespace/name, with one global resourceVersion counter.
 *
 * @example Usage
 * ```ts
 * import { MemoryLeaseStore } from "@leasehold/leasehold";
 * const store = new MemoryLeaseStore();
 * const api = store.api("default", "my-lease");
 * console.log(await api.get()); // undefined
 * ```
 */
export class MemoryLeaseStore {
  #leases = new Map<string, Lease>();
  #rv = 0;
  #uids = 0;
  #watchers = new Set<{ key: string; push: (e: LeaseWatchEvent) => void }>();
  /** Return an error to make that operation fail (fault injection); called before each operation. */
  fault?: (op: MemoryOp, key: string) => Error | undefined | Promise<Error | undefined>;
  /** Every operation, in order, for assertions. */
  readonly log: { op: MemoryOp; key: string; ok: boolean }[] = [];

  /** A {@linkcode LeaseApi} for one Lease of this store. */
  api(namespace: string, name: string): MemoryLeaseApi {
    return new MemoryLeaseApi(namespace, name, this);
  }

  /** Reads a Lease directly (no fault injection), as a copy. */
  peek(namespace: string, name: string): Lease | undefined {
    const l = this.#leases.get(`${namespace}/${name}`);
    return l ? structuredClone(l) : undefined;
  }

  /** Writes a Lease directly, as `kubectl apply` would (a new resourceVersion; watchers notified). */
  put(namespace: string, name: string, lease: Omit<Lease, "metadata"> & { metadata?: Lease["metadata"] }): Lease {
    const key = `${namespace}/${name}`;
    const cur = this.#leases.get(key);
    const existed = cur !== undefined;
    // The uid stays for the object's life; a Lease created again gets a new one.
    const uid = cur?.metadata.uid ?? `memory-uid-${++this.#uids}`;
    const stored: Lease = {
      ...structuredClone(lease),
      metadata: { ...(lease.metadata ?? {}), name, namespace, uid, resourceVersion: String(++this.#rv) },
    };
    this.#leases.set(key, stored);
    this.#notify(key, existed ? "MODIFIED" : "ADDED", stored);
    return structuredClone(stored);
  }

  /** Deletes a Lease directly. */
  delete(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const l = this.#leases.get(key);
    if (!l) return;
    this.#leases.delete(key);
    this.#notify(key, "DELETED", { ...l, metadata: { ...l.metadata, resourceVersion: String(++this.#rv) } });
  }

  #notify(key: string, type: LeaseWatchEvent["type"], lease: Lease) {
    for (const w of this.#watchers) {
      if (w.key === key || (w.key.endsWith("/*") && key.startsWith(w.key.slice(0, -1)))) {
        w.push({ type, object: structuredClone(lease) });
      }
    }
  }

  /**
   * The LIST + WATCH of the Leases of `namespace` that carry `label`, as a
   * {@linkcode LeaseListSource} for a {@linkcode LeaseWatchHub}. The watch
   * starts with the labelled Leases changed after the given resourceVersion.
   *
   * @example Usage
   * ```ts
   * import { MemoryLeaseStore } from "@leasehold/leasehold";
   * const store = new MemoryLeaseStore();
   * store.put("default", "a", { metadata: { labels: { group: "g" } }, spec: {} });
   * const source = store.listSource("default", { key: "group", value: "g" });
   * console.log((await source.list(new AbortController().signal)).items.length); // 1
   * ```
   */
  listSource(namespace: string, label: { key: string; value: string }): LeaseListSource {
    const op = this.op.bind(this);
    const subscribe = this.subscribe.bind(this);
    const prefix = `${namespace}/`;
    const labelled = (l: Lease) =>
      (l.metadata?.labels as Record<string, string> | undefined)?.[label.key] === label.value;
    const current = () => [...this.#leases].filter(([k, l]) => k.startsWith(prefix) && labelled(l)).map(([, l]) => l);
    return {
      list: (signal) =>
        this.op("watch", `${prefix}*`, () => ({
          items: structuredClone(current()),
          resourceVersion: String(this.#rv),
        }), signal),
      watch: async function* (this: void, rv: string, signal: AbortSignal) {
        await op("watch", `${prefix}*`, () => undefined, signal);
        // A Lease that loses the label leaves the selection: DELETED, as the API server says.
        yield* pushedEvents(
          (push) =>
            subscribe(`${prefix}*`, (e) => {
              if (labelled(e.object)) push(e);
              else if (e.type !== "DELETED") push({ type: "DELETED", object: e.object });
            }),
          () =>
            current().filter((l) => Number(l.metadata.resourceVersion) > Number(rv))
              .map((l) => ({ type: "MODIFIED" as const, object: structuredClone(l) })),
          signal,
        );
      },
    };
  }

  /** @internal */
  async op<T>(
    op: MemoryOp,
    key: string,
    fn: () => T,
    signal?: AbortSignal,
    local?: (op: MemoryOp) => Error | undefined | Promise<Error | undefined>,
  ): Promise<T> {
    signal?.throwIfAborted();
    const pending = Promise.all([this.fault?.(op, key), local?.(op)]).then(([a, b]) => a ?? b);
    const err = signal
      ? await new Promise<Error | undefined>((resolve, reject) => {
        const onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        pending.then((v) => {
          signal.removeEventListener("abort", onAbort);
          resolve(v);
        }, reject);
      })
      : await pending;
    if (err) {
      this.log.push({ op, key, ok: false });
      throw err;
    }
    try {
      const v = fn();
      this.log.push({ op, key, ok: true });
      return v;
    } catch (e) {
      this.log.push({ op, key, ok: false });
      throw e;
    }
  }

  /** @internal */
  getLease(key: string): Lease | undefined {
    const l = this.#leases.get(key);
    return l ? structuredClone(l) : undefined;
  }

  /** @internal */
  createLease(key: string, lease: Lease): Lease {
    if (this.#leases.has(key)) throw apiError(409, "AlreadyExists", `leases "${key}" already exists`);
    const [namespace, name] = key.split("/");
    return this.put(namespace, name, { ...lease, metadata: { ...lease.metadata } });
  }

  /** @internal */
  updateLease(key: string, lease: Lease): Lease {
    const cur = this.#leases.get(key);
    if (!cur) throw apiError(404, "NotFound", `leases "${key}" not found`);
    if (lease.metadata?.resourceVersion !== cur.metadata.resourceVersion) {
      throw apiError(
        409,
        "Conflict",
        `the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    const d = lease.spec?.leaseDurationSeconds;
    if (typeof d === "number" && d <= 0) {
      throw apiError(422, "Invalid", "spec.leaseDurationSeconds: must be greater than 0");
    }
    const [namespace, name] = key.split("/");
    return this.put(namespace, name, lease);
  }

  /** @internal */
  subscribe(key: string, push: (e: LeaseWatchEvent) => void): () => void {
    const w = { key, push };
    this.#watchers.add(w);
    return () => this.#watchers.delete(w);
  }
}

/**
 * One Lease of a {@linkcode MemoryLeaseStore}, as a {@linkcode LeaseApi}.
 *
 * @example Usage
 * ```ts
 * import { MemoryLeaseApi } from "@leasehold/leasehold";
 * const api = new MemoryLeaseApi("default", "my-lease");
 * const created = await api.create({ metadata: {}, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } });
 * console.log(created.metadata.resourceVersion); // "1"
 * ```
 */
export class MemoryLeaseApi implements LeaseApi {
  /** Namespace. */
  readonly namespace: string;
  /** Name. */
  readonly name: string;
  /** The store behind it. */
  readonly store: MemoryLeaseStore;
  /** Fault injection for this API only (one replica's view): return an error, or a promise that never settles to hang. */
  fault?: (op: MemoryOp) => Error | undefined | Promise<Error | undefined>;
  #key: string;

  /** Creates the API; a private store is made when none is given. */
  constructor(namespace: string, name: string, store: MemoryLeaseStore = new MemoryLeaseStore()) {
    this.namespace = namespace;
    this.name = name;
    this.store = store;
    this.#key = `${namespace}/${name}`;
  }

  /** Reads the Lease. */
  get(signal?: AbortSignal): Promise<Lease | undefined> {
    return this.store.op("get", this.#key, () => this.store.getLease(this.#key), signal, this.fault);
  }

  /** Creates the Lease. */
  create(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    return this.store.op("create", this.#key, () => this.store.createLease(this.#key, lease), signal, this.fault);
  }

  /** Updates the Lease (resourceVersion must match). */
  update(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    return this.store.op("update", this.#key, () => this.store.updateLease(this.#key, lease), signal, this.fault);
  }

  /** Streams changes after `resourceVersion` (current state first when none is given). */
  async *watch(resourceVersion: string | undefined, signal: AbortSignal): AsyncIterable<LeaseWatchEvent> {
    await this.store.op("watch", this.#key, () => undefined, signal, this.fault);
    yield* pushedEvents(
      (push) => this.store.subscribe(this.#key, push),
      () => {
        const cur = this.store.getLease(this.#key);
        return cur && (!resourceVersion || Number(cur.metadata.resourceVersion) > Number(resourceVersion))
          ? [{ type: "ADDED", object: cur }]
          : [];
      },
      signal,
    );
  }
}
