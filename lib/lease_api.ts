/**
 * The Lease endpoints of `coordination.k8s.io/v1`: get, create, update (with
 * `metadata.resourceVersion` optimistic concurrency) and watch.
 *
 * @module
 */

import type { Clock } from "./clock.ts";
import { InvalidResponseError, isNotFound, TimeoutError } from "./errors.ts";
import type { KubeClient, RequestIntent } from "./kube_client.ts";
import type { Lease } from "./lease.ts";
import { ENDED } from "./signal.ts";

/** One event of a Lease watch. */
export interface LeaseWatchEvent {
  /** `ADDED`, `MODIFIED`, `DELETED` or `BOOKMARK`. */
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";
  /** The Lease after the change (for BOOKMARK only `metadata.resourceVersion`). */
  object: Lease;
  /**
   * When this version was first seen, on the monotonic clock of the LeaseApi's
   * `clock` (set by a shared watch that saw it before this subscriber did). An
   * elector that runs on that same clock times the claim from then.
   */
  observedAt?: number;
}

/**
 * Storage of one Lease, as the elector sees it. {@linkcode KubeLeaseApi} is the
 * real one; tests can supply their own.
 */
export interface LeaseApi {
  /** Namespace of the Lease. */
  readonly namespace: string;
  /** Name of the Lease. */
  readonly name: string;
  /** Reads the Lease; `undefined` when it does not exist. */
  get(signal?: AbortSignal): Promise<Lease | undefined>;
  /** Creates the Lease; a 409 AlreadyExists means someone else did first. */
  create(lease: Lease, signal?: AbortSignal): Promise<Lease>;
  /** Replaces the Lease; `metadata.resourceVersion` must be the one last read (else 409). */
  update(lease: Lease, signal?: AbortSignal): Promise<Lease>;
  /**
   * Watches the Lease from `resourceVersion`; ends when the stream ends. Optional:
   * without it followers poll.
   */
  watch?(resourceVersion: string | undefined, signal: AbortSignal): AsyncIterable<LeaseWatchEvent>;
  /** The clock of the `observedAt` times of its watch events, if it sets them. */
  readonly clock?: Clock;
}

const RESOURCE = "leases.coordination.k8s.io";

/**
 * How long a watch may stay silent before it is treated as dead, in ms. The API
 * server's watch cache sends a BOOKMARK to every watch that allows them about
 * once a minute (and 2 s before the watch's own timeout), so a healthy watch is
 * never silent much longer than 60 s; 90 s leaves half a period for delays.
 * Servers without bookmarks (watch cache off) just see the watch reopened.
 */
export const DEFAULT_WATCH_IDLE_TIMEOUT_MS = 90_000;

/** Options of {@linkcode KubeLeaseApi}. */
export interface KubeLeaseApiOptions {
  /** A watch that delivers nothing (not even a bookmark) for this long ends with a {@linkcode TimeoutError}. @default 90000 */
  watchIdleTimeoutMs?: number;
  /**
   * What a 403 names as the fix: the shipped manifest with the Role, and whether
   * that Role can list this Lease in `resourceNames`.
   * @default { roleFile: "deploy/rbac.yaml", byName: true }
   */
  rbac?: { roleFile?: string; byName?: boolean };
}

/**
 * Throws unless `v` looks like a Lease: an object with `metadata.resourceVersion`.
 *
 * @example Usage
 * ```ts
 * import { assertLease } from "@leasehold/leasehold";
 * assertLease({ metadata: { resourceVersion: "1" } }, "GET lease");
 * ```
 */
export function assertLease(v: unknown, where: string): asserts v is Lease {
  const m = (v as { metadata?: { resourceVersion?: unknown } } | null)?.metadata;
  if (
    !v || typeof v !== "object" || Array.isArray(v) || !m || typeof m !== "object" ||
    typeof m.resourceVersion !== "string"
  ) {
    throw new InvalidResponseError(
      `${where}: the answer is not a Lease object (no metadata.resourceVersion); is the server URL the Kubernetes API server?`,
    );
  }
}

/**
 * The Lease API over a {@linkcode KubeClient}.
 *
 * @example Usage
 * ```ts
 * import { KubeClient, KubeLeaseApi } from "@leasehold/leasehold";
 * const fakeFetch = () => Promise.resolve(Response.json({ kind: "Status", reason: "NotFound", code: 404 }, { status: 404 }));
 * const api = new KubeLeaseApi(new KubeClient({ server: "https://k8s", fetch: fakeFetch }), "default", "my-lease");
 * console.log(await api.get()); // undefined
 * ```
 */
export class KubeLeaseApi implements LeaseApi {
  /** Namespace of the Lease. */
  readonly namespace: string;
  /** Name of the Lease. */
  readonly name: string;
  #client: KubeClient;
  #idleMs: number;
  #rbac: { roleFile?: string; byName?: boolean };

  /** Creates the API for one Lease. */
  constructor(client: KubeClient, namespace: string, name: string, options: KubeLeaseApiOptions = {}) {
    this.#client = client;
    this.#idleMs = options.watchIdleTimeoutMs ?? DEFAULT_WATCH_IDLE_TIMEOUT_MS;
    this.#rbac = options.rbac ?? {};
    this.namespace = namespace;
    this.name = name;
  }

  /** The client this API talks through, e.g. to write Events over the same connection. */
  get client(): KubeClient {
    return this.#client;
  }

  #path(withName: boolean): string {
    const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.namespace)}/leases`;
    return withName ? `${base}/${encodeURIComponent(this.name)}` : base;
  }

  #intent(verb: string) {
    return { verb, resource: RESOURCE, namespace: this.namespace, name: this.name, ...this.#rbac };
  }

  /** GET the Lease; `undefined` on 404. */
  async get(signal?: AbortSignal): Promise<Lease | undefined> {
    try {
      const v = await this.#client.request("GET", this.#path(true), { signal, intent: this.#intent("get") });
      assertLease(v, `GET lease ${this.namespace}/${this.name}`);
      return v;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** POST a new Lease. */
  async create(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    const body = { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease };
    body.metadata = { ...lease.metadata, name: this.name, namespace: this.namespace };
    delete body.metadata.resourceVersion;
    const v = await this.#client.request("POST", this.#path(false), { body, signal, intent: this.#intent("create") });
    assertLease(v, `POST lease ${this.namespace}/${this.name}`);
    return v;
  }

  /**
   * PUT the Lease with its `resourceVersion`. `metadata.managedFields` is left
   * out: the API server keeps the stored ones when a write omits them, and the
   * renewal stays small.
   */
  async update(lease: Lease, signal?: AbortSignal): Promise<Lease> {
    const { managedFields: _, ...metadata } = lease.metadata as Lease["metadata"] & { managedFields?: unknown };
    const body = { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease, metadata };
    const v = await this.#client.request("PUT", this.#path(true), { body, signal, intent: this.#intent("update") });
    assertLease(v, `PUT lease ${this.namespace}/${this.name}`);
    return v;
  }

  /**
   * Watches this one Lease (by field selector) with bookmarks. Ends with an
   * error when the stream stops inside an event, or stays silent for longer than
   * `watchIdleTimeoutMs` (a dead connection that never closed); the transport's
   * pooled connections are dropped then.
   */
  async *watch(resourceVersion: string | undefined, signal: AbortSignal): AsyncIterable<LeaseWatchEvent> {
    const q = new URLSearchParams({
      watch: "1",
      fieldSelector: `metadata.name=${this.name}`,
      allowWatchBookmarks: "true",
      timeoutSeconds: "300",
    });
    if (resourceVersion) q.set("resourceVersion", resourceVersion);
    yield* watchStream(this.#client, `${this.#path(false)}?${q}`, {
      signal,
      intent: this.#intent("watch"),
      idleMs: this.#idleMs,
      where: `watch lease ${this.namespace}/${this.name}`,
    });
  }
}

/** Options of {@linkcode watchStream}. */
export interface WatchStreamOptions {
  /** Ends the stream. */
  signal: AbortSignal;
  /** For error messages (403 names the verb). */
  intent: RequestIntent;
  /** Silence after which the connection is presumed dead (ms). */
  idleMs: number;
  /** What is watched, for error messages, e.g. `watch lease ns/name`. */
  where: string;
}

/**
 * Reads one Kubernetes watch stream of Leases (JSON lines) from `path`: yields
 * ADDED, MODIFIED, DELETED and BOOKMARK events; an ERROR event throws
 * {@linkcode WatchExpiredError}; a stream silent for `idleMs` throws a
 * `TimeoutError` and drops the client's pooled connections; a stream cut inside
 * an event throws.
 *
 * @example Usage
 * ```ts
 * import { KubeClient, watchStream } from "@leasehold/leasehold";
 * const body = '{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"7"}}}\n';
 * const client = new KubeClient({ server: "https://k", fetch: () => Promise.resolve(new Response(body)) });
 * const signal = new AbortController().signal;
 * for await (const ev of watchStream(client, "/x", { signal, intent: { verb: "watch", resource: "leases" }, idleMs: 1000, where: "watch" })) {
 *   console.log(ev.type, ev.object.metadata.name); // ADDED a
 * }
 * ```
 */
export async function* watchStream(
  client: KubeClient,
  path: string,
  o: WatchStreamOptions,
): AsyncIterable<LeaseWatchEvent> {
  const res = await client.stream(path, { signal: o.signal, intent: o.intent });
  if (!res.body) return;
  // Bytes decoded here rather than through a TextDecoderStream: one stream less held open per watch.
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const onAbort = () => reader.cancel().catch(() => {});
  o.signal.addEventListener("abort", onAbort, { once: true });
  const clock = client.clock;
  const idleMs = o.idleMs;
  const where = o.where;
  let buf = "";
  try {
    for (;;) {
      const idle = new AbortController();
      const silent = clock.sleep(idleMs, idle.signal).then(() => true, () => false);
      let next: ReadableStreamReadResult<Uint8Array> | boolean;
      try {
        next = await Promise.race([reader.read(), silent]);
      } finally {
        idle.abort(ENDED);
      }
      if (o.signal.aborted) throw o.signal.reason;
      if (typeof next === "boolean") {
        client.resetConnections();
        throw new TimeoutError(
          `${where}: nothing arrived for ${idleMs} ms (the API server sends a bookmark about every minute); the connection is presumed dead and is reopened`,
        );
      }
      const { done, value } = next;
      if (done) {
        buf += decoder.decode();
        if (buf.trim()) {
          throw new InvalidResponseError(
            `${where}: the stream ended inside an event (${buf.length} characters without a closing newline); the connection was cut, reconnecting`,
          );
        }
        return;
      }
      buf += decoder.decode(value, { stream: true });
      if (buf.length > 1 << 20) throw new InvalidResponseError(`${where}: a single event exceeded 1 MiB`);
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let ev: { type?: string; object?: unknown };
        try {
          ev = JSON.parse(line);
        } catch {
          throw new InvalidResponseError(`${where}: a line is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
        }
        if (ev.type === "ERROR") {
          const st = ev.object as { code?: number; message?: string; reason?: string } | undefined;
          throw new WatchExpiredError(
            `watch ended by the server: ${st?.code ?? "?"} ${st?.reason ?? ""} ${st?.message ?? ""}`.trim(),
            st?.code,
          );
        }
        if (ev.type !== "ADDED" && ev.type !== "MODIFIED" && ev.type !== "DELETED" && ev.type !== "BOOKMARK") {
          continue;
        }
        if (!ev.object || typeof ev.object !== "object") continue;
        yield { type: ev.type, object: ev.object as Lease };
      }
    }
  } finally {
    o.signal.removeEventListener("abort", onAbort);
    reader.cancel().catch(() => {});
  }
}

/**
 * The server ended a watch with an ERROR event (410 Gone: the resourceVersion is
 * too old). Re-read the Lease and watch again from the new version.
 *
 * @example Usage
 * ```ts
 * import { WatchExpiredError } from "@leasehold/leasehold";
 * console.log(new WatchExpiredError("gone", 410).code); // 410
 * ```
 */
export class WatchExpiredError extends InvalidResponseError {
  /** Status code from the ERROR event. */
  readonly code?: number;
  /** Creates the error. */
  constructor(message: string, code?: number) {
    super(message);
    this.name = "WatchExpiredError";
    this.code = code;
  }
}
