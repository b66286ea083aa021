// The simulated API server's Lease: the concurrency rules of lib/memory.ts and the
// real API server (resourceVersion optimistic concurrency, 409 Conflict and
// AlreadyExists, 404, 422 for an invalid spec), a short watch history (older
// resourceVersions get 410 Gone), and hand edits (kubectl) that go around the replicas.

import { KubeApiError, type StatusReason } from "../../lib/errors.ts";
import type { Lease } from "../../lib/lease.ts";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

export interface StoreEvent {
  type: EventType;
  rv: number;
  object: Lease;
}

/** Who wrote: a replica identity or "operator" (a hand edit). */
export type Writer = string;

export function apiError(code: number, reason: StatusReason, msg: string, retryAfterSeconds?: number): KubeApiError {
  return new KubeApiError(`${reason}: ${msg}`, {
    code,
    reason,
    method: "",
    url: "sim://apiserver",
    serverMessage: msg,
    retryAfterSeconds,
  });
}

export function copyLease(l: Lease): Lease {
  return { ...l, metadata: { ...l.metadata }, spec: l.spec ? { ...l.spec } : l.spec };
}

const HISTORY = 24;

export class SimStore {
  readonly namespace: string;
  readonly name: string;
  #lease?: Lease;
  #rv = 0;
  #history: StoreEvent[] = [];
  #watchers = new Set<(e: StoreEvent) => void>();
  /** Called after every applied change. */
  onChange?: (e: StoreEvent, by: Writer) => void;

  constructor(namespace: string, name: string) {
    this.namespace = namespace;
    this.name = name;
  }

  get rv(): number {
    return this.#rv;
  }

  get watcherCount(): number {
    return this.#watchers.size;
  }

  peek(): Lease | undefined {
    return this.#lease ? copyLease(this.#lease) : undefined;
  }

  get(): Lease | undefined {
    return this.peek();
  }

  #validate(l: Lease) {
    const s = l.spec;
    if (!s || typeof s !== "object") return;
    const d = s.leaseDurationSeconds;
    if (d !== undefined && d !== null && (typeof d !== "number" || !Number.isInteger(d))) {
      throw apiError(400, "BadRequest", `spec.leaseDurationSeconds: cannot unmarshal ${JSON.stringify(d)} into int32`);
    }
    if (typeof d === "number" && d <= 0) {
      throw apiError(422, "Invalid", "spec.leaseDurationSeconds: Invalid value: must be greater than 0");
    }
    const t = s.leaseTransitions;
    if (typeof t === "number" && (!Number.isInteger(t) || t < 0)) {
      throw apiError(422, "Invalid", "spec.leaseTransitions: Invalid value: must be non-negative");
    }
    const h = s.holderIdentity;
    if (h !== undefined && h !== null && typeof h !== "string") {
      throw apiError(400, "BadRequest", "spec.holderIdentity: not a string");
    }
  }

  #commit(type: EventType, l: Lease | undefined, last: Lease, by: Writer): Lease {
    const rv = ++this.#rv;
    const stored: Lease = {
      ...copyLease(last),
      metadata: { ...last.metadata, name: this.name, namespace: this.namespace, resourceVersion: String(rv) },
    };
    this.#lease = l ? stored : undefined;
    const ev: StoreEvent = { type, rv, object: stored };
    this.#history.push(ev);
    if (this.#history.length > HISTORY) this.#history.shift();
    this.onChange?.(ev, by);
    for (const w of this.#watchers) w(ev);
    return copyLease(stored);
  }

  create(l: Lease, by: Writer): Lease {
    if (this.#lease) {
      throw apiError(409, "AlreadyExists", `leases.coordination.k8s.io "${this.name}" already exists`);
    }
    this.#validate(l);
    return this.#commit("ADDED", l, l, by);
  }

  update(l: Lease, by: Writer): Lease {
    if (!this.#lease) throw apiError(404, "NotFound", `leases.coordination.k8s.io "${this.name}" not found`);
    if (l.metadata?.resourceVersion !== this.#lease.metadata.resourceVersion) {
      throw apiError(
        409,
        "Conflict",
        `Operation cannot be fulfilled on leases.coordination.k8s.io "${this.name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    this.#validate(l);
    return this.#commit("MODIFIED", l, l, by);
  }

  /** A hand edit of the spec (kubectl edit/apply): unconditional. */
  edit(spec: Lease["spec"]): Lease {
    const base: Lease = this.#lease ?? { metadata: { name: this.name, namespace: this.namespace } };
    return this.#commit(this.#lease ? "MODIFIED" : "ADDED", base, { ...base, spec: { ...spec } }, "operator");
  }

  /** A hand delete (kubectl delete lease). */
  delete(): boolean {
    if (!this.#lease) return false;
    this.#commit("DELETED", undefined, this.#lease, "operator");
    return true;
  }

  /**
   * Opens a watch: the events after `rv` (or ADDED of the current object when
   * none is given); 410 Gone when `rv` is older than the history kept.
   */
  watch(rv: string | undefined, push: (e: StoreEvent) => void): { initial: StoreEvent[]; close: () => void } {
    const initial: StoreEvent[] = [];
    if (rv === undefined || rv === "") {
      if (this.#lease) {
        initial.push({ type: "ADDED", rv: this.#rv, object: copyLease(this.#lease) });
      }
    } else {
      const from = Number(rv);
      if (!Number.isFinite(from)) throw apiError(400, "BadRequest", `invalid resourceVersion ${JSON.stringify(rv)}`);
      const oldest = this.#history.length ? this.#history[0].rv : this.#rv + 1;
      if (from < this.#rv && from < oldest - 1) {
        throw apiError(410, "Gone", `too old resource version: ${from} (${oldest - 1})`);
      }
      for (const e of this.#history) if (e.rv > from) initial.push(e);
    }
    this.#watchers.add(push);
    return { initial, close: () => this.#watchers.delete(push) };
  }
}
