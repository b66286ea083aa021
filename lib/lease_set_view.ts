/**
 * What one replica of a sharded lease set knows of its Leases: every version
 * the shared LIST + WATCH delivered, when it changed on this process's
 * monotonic clock, who is a live member, and whether the watch still echoes
 * this replica's own writes.
 *
 * @module
 */

import type { Clock } from "./clock.ts";
import { type Lease, readRecord } from "./lease.ts";
import type { LeaseWatchEvent } from "./lease_api.ts";
import type { LeaseListSource } from "./lease_hub.ts";
import type { Logger } from "./log.ts";

/** One Lease as last seen on the shared watch. */
export interface SeenLease {
  /** The version last delivered. */
  lease: Lease;
  /** Order of arrival on the shared watch. */
  seq: number;
  /** The record, for change detection. */
  key: string;
  /** `holderIdentity` (`""` when free). */
  holder: string;
  /** `leaseDurationSeconds` in ms. */
  durationMs: number;
  /** When the record last changed, on the monotonic clock. */
  at: number;
}

/**
 * The observed Leases of one set, fed by {@linkcode LeaseSetView.tap}.
 *
 * @example Usage
 * ```ts
 * import { systemClock } from "@leasehold/leasehold";
 * import { LeaseSetView } from "./lease_set_view.ts";
 * const view = new LeaseSetView({ clock: systemClock, defaultDurationMs: 15000, onChange: () => {} });
 * console.log(view.listed); // false until the tapped source listed
 * ```
 */
export class LeaseSetView {
  /** Every Lease seen, by name. */
  readonly seen = new Map<string, SeenLease>();
  /** Whether the tapped source listed at least once. */
  listed = false;
  #seq = 0;
  /** Writes of this replica's member Lease not yet seen on the watch: resourceVersion -> when answered. */
  #unechoed = new Map<string, number>();
  #clock: Clock;
  #defaultDurationMs: number;
  #onChange: () => void;
  #log?: Logger;
  #lastWarn = "";

  /** Creates an empty view; `onChange` is called after every list and event. */
  constructor(o: { clock: Clock; defaultDurationMs: number; onChange: () => void; logger?: Logger }) {
    this.#clock = o.clock;
    this.#defaultDurationMs = o.defaultDurationMs;
    this.#onChange = o.onChange;
    this.#log = o.logger;
  }

  /** Passes `source` through, noting every Lease it lists or delivers. */
  tap(source: LeaseListSource): LeaseListSource {
    const warn = (e: unknown) => {
      const msg = e instanceof Error ? e.message : String(e);
      if (msg === this.#lastWarn) return;
      this.#lastWarn = msg;
      this.#log?.warn(
        "cannot list or watch the shard leases (grant list and watch on leases in the namespace, not limited by name, as deploy/rbac.shards.yaml does)",
        { error: msg },
      );
    };
    return {
      list: async (signal) => {
        try {
          const r = await source.list(signal);
          this.#resync(r.items);
          this.#lastWarn = "";
          return r;
        } catch (e) {
          if (!signal.aborted) warn(e);
          throw e;
        }
      },
      watch: (rv, signal) => {
        const it = source.watch(rv, signal);
        const apply = (ev: LeaseWatchEvent) => this.#apply(ev);
        return (async function* () {
          for await (const ev of it) {
            apply(ev);
            yield ev;
          }
        })();
      },
    };
  }

  /** The holder last seen of `name` (`undefined` when never seen). */
  holder(name: string): string | undefined {
    return this.seen.get(name)?.holder;
  }

  /** Unchanged for longer than its duration, as this process observed it. */
  expired(s: SeenLease, now: number): boolean {
    return now - s.at >= s.durationMs;
  }

  /**
   * The members whose Lease `<prefix>-member-*` names a holder and changed
   * within its duration (plus `self`), and when the next of them expires.
   */
  liveMembers(prefix: string, self: string, now: number): { live: Set<string>; nextExpiry: number } {
    const live = new Set<string>([self]);
    let nextExpiry = Infinity;
    const pre = `${prefix}-member-`;
    for (const [name, s] of this.seen) {
      if (!name.startsWith(pre) || s.holder === "") continue;
      const end = s.at + s.durationMs;
      if (end <= now) continue;
      live.add(s.holder);
      nextExpiry = Math.min(nextExpiry, end);
    }
    return { live, nextExpiry };
  }

  /**
   * A read that the shared watch overtook: when the watch delivered another
   * version of the Lease after the GET was sent, that version is at least as
   * recent as the GET's and is returned instead, so a release seen on the
   * watch is not hidden by a GET answer that arrived later (the elector would
   * then wait out a claim that is gone). A newer version than that still
   * arrives on the watch; any write is guarded by resourceVersion as ever.
   */
  async fresh(name: string, read: Promise<Lease | undefined>): Promise<Lease | undefined> {
    const sent = this.#seq;
    const got = await read;
    const seen = this.seen.get(name);
    if (!got || !seen || seen.seq <= sent) return got;
    if (seen.lease.metadata?.resourceVersion === got.metadata?.resourceVersion) return got;
    return structuredClone(seen.lease);
  }

  /** Notes a write of this replica's own member Lease, which the watch must deliver back. */
  ownWrite(name: string, written: Lease | undefined): void {
    const rv = written?.metadata?.resourceVersion;
    if (typeof rv === "string" && rv !== this.seen.get(name)?.lease.metadata?.resourceVersion) {
      this.#unechoed.set(rv, this.#clock.now());
    }
  }

  /** When the oldest own write not yet delivered back was answered (`Infinity` when none). */
  oldestUnechoed(): number {
    let oldest = Infinity;
    for (const at of this.#unechoed.values()) oldest = Math.min(oldest, at);
    return oldest;
  }

  /** Forgets the own writes awaited (the watch is opened again). */
  clearUnechoed(): void {
    this.#unechoed.clear();
  }

  #note(lease: Lease, now: number): void {
    const name = lease.metadata?.name;
    if (typeof name !== "string") return;
    const rv = lease.metadata?.resourceVersion;
    const at = typeof rv === "string" ? this.#unechoed.get(rv) : undefined;
    // A version of the member Lease came back: it and every earlier write are echoed.
    if (at !== undefined) { for (const [k, t] of this.#unechoed) if (t <= at) this.#unechoed.delete(k); }
    const r = readRecord(lease);
    const holder = r.ok ? r.record.holderIdentity : (r.holderIdentity ?? "<malformed>");
    const durationMs = r.ok ? r.record.leaseDurationSeconds * 1000 : this.#defaultDurationMs;
    const key = JSON.stringify(r.ok ? r.record : { broken: lease.spec ?? null });
    const prev = this.seen.get(name);
    const seq = ++this.#seq;
    if (prev?.key === key) {
      prev.lease = lease;
      prev.seq = seq;
      return;
    }
    this.seen.set(name, { lease, seq, key, holder, durationMs, at: now });
  }

  #resync(items: Lease[]): void {
    const now = this.#clock.now();
    const names = new Set<string>();
    for (const l of items) {
      if (typeof l?.metadata?.name !== "string") continue;
      names.add(l.metadata.name);
      this.#note(l, now);
    }
    for (const n of [...this.seen.keys()]) if (!names.has(n)) this.seen.delete(n);
    this.listed = true;
    this.#onChange();
  }

  #apply(ev: LeaseWatchEvent): void {
    if (ev?.type === "BOOKMARK" || !ev?.object?.metadata) return;
    if (ev.type === "DELETED") {
      if (typeof ev.object.metadata.name === "string") this.seen.delete(ev.object.metadata.name);
    } else this.#note(ev.object, this.#clock.now());
    this.#onChange();
  }
}
