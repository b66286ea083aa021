/**
 * One balancing pass of a sharded lease set's replica: which of its shards it
 * gives up and which it contends for, from the live members, its quota and
 * the Leases seen on the shared watch. Safety (never two holders of one shard)
 * stays with each shard's own elector; this only picks what to contend for.
 *
 * @module
 */

import { assignShards, fnv1a, shardLeaseName } from "./lease_set_rules.ts";
import type { LeaseSetView } from "./lease_set_view.ts";
import type { ShardSlot } from "./lease_set_slot.ts";

/** What a balancing pass looks at. */
export interface BalanceInput {
  /** This replica's identity. */
  identity: string;
  /** Name prefix of the set's Leases. */
  prefix: string;
  /** Number of shards. */
  shardCount: number;
  /** Live members, sorted (this replica included). */
  members: readonly string[];
  /** The same members, as a set. */
  live: ReadonlySet<string>;
  /** How many shards this replica may hold now. */
  quota: number;
  /** Monotonic time of the pass. */
  now: number;
  /** Whether the set is stopping (it then contends for nothing). */
  stopping: boolean;
  /** The Leases seen on the shared watch. */
  view: LeaseSetView;
  /** This replica's slots by shard ({@linkcode BalanceActions.contend} adds to it). */
  slots: ReadonlyMap<number, ShardSlot>;
}

/** What a balancing pass asks of the set. */
export interface BalanceActions {
  /** Asks a slot to stop; false while it cannot yet (see {@linkcode ShardSlot.giveUp}). */
  giveUp(slot: ShardSlot, why: string): boolean;
  /** Gives up a held shard over this replica's share (counted as given up). */
  shed(slot: ShardSlot): void;
  /** Starts contending for a shard. */
  contend(shard: number): void;
}

/**
 * Rendezvous order: the preference of `identity` for a shard (higher first).
 *
 * @example Usage
 * ```ts
 * import { shardPreference } from "./lease_set_balance.ts";
 * console.log(shardPreference("pod-a", "work", 1) === shardPreference("pod-a", "work", 1)); // true
 * ```
 */
export function shardPreference(identity: string, prefix: string, shard: number): number {
  return fnv1a(`${identity}/${prefix}/${shard}`);
}

/**
 * One balancing pass: a contender steps back from a shard a live member holds;
 * over the share, the least preferred shards are given up, contenders first
 * (a contender whose write is on its way keeps going until it is answered: it
 * may have won, and a won shard is then given up properly, released); under
 * the share, it contends for free shards first, then those of holders that are
 * gone. Every replica assigns open shards the same way from what it sees (each
 * to the live member with room that scores it highest), so replicas seldom
 * race for one shard: a loser's next elector would start observing a claim
 * afresh and wait it out again.
 *
 * @example Usage
 * ```ts
 * import { systemClock } from "@leasehold/leasehold";
 * import { balanceShards } from "./lease_set_balance.ts";
 * import { LeaseSetView } from "./lease_set_view.ts";
 * const view = new LeaseSetView({ clock: systemClock, defaultDurationMs: 15000, onChange: () => {} });
 * const contended: number[] = [];
 * balanceShards(
 *   { identity: "a", prefix: "work", shardCount: 2, members: ["a"], live: new Set(["a"]), quota: 2,
 *     now: 0, stopping: false, view, slots: new Map() },
 *   { giveUp: () => true, shed() {}, contend: (i) => contended.push(i) },
 * );
 * console.log(contended); // [ 0, 1 ]: both free, both its own
 * ```
 */
export function balanceShards(input: BalanceInput, actions: BalanceActions): void {
  const { identity, prefix, shardCount, members, live, quota, now, view, slots } = input;
  const score = (s: ShardSlot) => shardPreference(identity, prefix, s.shard);
  const active = [...slots.values()].filter((s) => !s.givingUp);
  const leading = active.filter((s) => s.isLeader);
  let contending = active.filter((s) => !s.isLeader && !s.elector.workSettling);
  // A contender whose shard a live member (not this replica) now holds steps back.
  for (const s of contending) {
    const seen = view.seen.get(shardLeaseName(prefix, s.shard));
    if (seen && seen.holder && seen.holder !== identity && live.has(seen.holder) && !view.expired(seen, now)) {
      actions.giveUp(s, "held by a live member");
    }
  }
  contending = contending.filter((s) => !s.givingUp);
  let surplus = leading.length + contending.length - quota;
  for (const s of [...contending].sort((a, b) => score(a) - score(b))) {
    if (surplus <= 0) break;
    if (actions.giveUp(s, "over quota")) surplus--;
  }
  for (const s of [...leading].sort((a, b) => score(a) - score(b))) {
    if (surplus <= 0) break;
    actions.shed(s);
    surplus--;
  }
  let room = -surplus;
  if (room <= 0 || input.stopping) return;
  const free: number[] = [], orphaned: number[] = [];
  const heldBy = new Map<string, number>();
  for (let i = 0; i < shardCount; i++) {
    const seen = view.seen.get(shardLeaseName(prefix, i));
    if (!seen || seen.holder === "") free.push(i);
    // Held by a replica that is gone, or by this one without an elector (a write
    // that landed after its elector stopped), or unchanged past its duration:
    // each shard's own elector waits the claim out before it takes it.
    else if ((seen.holder === identity && !slots.has(i)) || !live.has(seen.holder) || view.expired(seen, now)) {
      orphaned.push(i);
    } else heldBy.set(seen.holder, (heldBy.get(seen.holder) ?? 0) + 1);
  }
  for (const [i, m] of assignShards(prefix, shardCount, members, [...free, ...orphaned], heldBy)) {
    if (m !== identity || slots.has(i)) continue;
    if (room <= 0) break;
    actions.contend(i);
    room--;
  }
}
