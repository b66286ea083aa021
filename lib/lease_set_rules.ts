/**
 * The rules of a sharded lease set that need no I/O: its label and limits,
 * its options and state types, member Lease names, each member's share of the
 * shards, and the checks of its settings.
 *
 * @module
 */

import type { Clock } from "./clock.ts";
import type { LeaderContext, StopReason } from "./elector.ts";
import type { FencingToken } from "./elector.ts";
import { invalidLeaseName, invalidNamespace } from "./lease.ts";
import type { LeaseApi } from "./lease_api.ts";
import type { LeaseListSource } from "./lease_hub.ts";
import type { Logger } from "./log.ts";

/** The label key every Lease of a {@linkcode ShardedLeaseSet} carries; its value is the set's prefix. */
export const SHARD_SET_LABEL = "leasehold.dev/shard-set";

/** The most shards one set may have. */
export const MAX_SHARDS = 4096;

/** Options of {@linkcode ShardedLeaseSet}. Durations are in milliseconds. */
export interface ShardedLeaseSetOptions {
  /** Namespace of the Leases. */
  namespace: string;
  /** Name prefix: shards are `<prefix>-0` .. `<prefix>-<N-1>`, members `<prefix>-member-<identity>`. */
  prefix: string;
  /** Number of shards, 1 .. {@linkcode MAX_SHARDS}. */
  shards: number;
  /** This replica's identity, unique among replicas (e.g. the pod name). */
  identity: string;
  /** The per-Lease API of one Lease of the namespace (all through one client). */
  leaseApi: (name: string) => LeaseApi;
  /** The LIST + WATCH of the Leases labelled {@linkcode SHARD_SET_LABEL}`=<prefix>` in the namespace. */
  source: LeaseListSource;
  /** Lease duration of every shard and member, whole seconds. @default 15000 */
  leaseDuration?: number;
  /** Renew deadline. @default 10000 */
  renewDeadline?: number;
  /** Retry period. @default 2000 */
  retryPeriod?: number;
  /** Called when this replica starts holding shard `shard`; stop when `ctx.signal` aborts. */
  onStartedLeading?: (shard: number, ctx: LeaderContext) => void | Promise<unknown>;
  /** Called once when a shard's term ends (before its work settled and its release). */
  onStoppedLeading?: (shard: number, reason: StopReason | "given-up") => void;
  /** Time source. @default systemClock */
  clock?: Clock;
  /** Structured logger. @default silentLogger */
  logger?: Logger;
  /** Random numbers in [0, 1) for jitter. @default Math.random */
  random?: () => number;
  /**
   * The object this replica runs as, usually its Pod (`{ apiVersion: "v1", kind: "Pod", name, uid }`,
   * the uid from the downward API's `metadata.uid`). The member Lease names it in
   * `metadata.ownerReferences`, so Kubernetes' garbage collector deletes the member
   * Lease with the Pod instead of leaving one behind for every replaced Pod.
   */
  memberOwner?: MemberOwner;
}

/** An owner of a member Lease: an entry of `metadata.ownerReferences`. */
export interface MemberOwner {
  /** API version of the owner, e.g. `v1`. */
  apiVersion: string;
  /** Kind of the owner, e.g. `Pod`. */
  kind: string;
  /** Name of the owner. */
  name: string;
  /** `metadata.uid` of the owner. */
  uid: string;
}

/** One shard as this replica sees it. */
export interface ShardState {
  /** The shard's index. */
  shard: number;
  /** `namespace/name` of its Lease. */
  lease: string;
  /** The holder last seen on the shared watch (`""` when free, `undefined` when not seen). */
  holderIdentity: string | undefined;
  /** Whether this replica holds it now. */
  isLeader: boolean;
  /** The fencing token of this replica's term, if it holds it. */
  fencingToken: FencingToken | undefined;
  /** Wall time this replica started holding it (ISO), if it does. */
  leadingSince: string | undefined;
  /** Terms of this shard started by this replica. */
  startedTotal: number;
  /** Terms of this shard this replica gave up to balance. */
  givenUpTotal: number;
  /** Terms of this shard that ended otherwise (renew deadline, taken, deleted). */
  lostTotal: number;
}

/** A snapshot of a {@linkcode ShardedLeaseSet}, e.g. for a `/leader` endpoint. */
export interface ShardedLeaseSetState {
  /** `namespace/prefix`. */
  set: string;
  /** This replica's identity. */
  identity: string;
  /** Number of shards. */
  shards: number;
  /** Live members, sorted (this replica included while it runs). */
  members: string[];
  /** How many shards this replica may hold now. */
  quota: number;
  /** Shards this replica holds now, ascending. */
  held: number[];
}

/**
 * FNV-1a, 32 bits: a stable spread of shards over identities (rendezvous
 * order: each replica prefers the shards it scores highest).
 *
 * @example Usage
 * ```ts
 * import { fnv1a } from "./lease_set_rules.ts";
 * console.log(fnv1a("pod-a/work/3") === fnv1a("pod-a/work/3")); // true
 * ```
 */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * The Lease name of shard `shard` in the set `prefix`.
 *
 * @example Usage
 * ```ts
 * import { shardLeaseName } from "./lease_set_rules.ts";
 * console.log(shardLeaseName("work", 3)); // "work-3"
 * ```
 */
export function shardLeaseName(prefix: string, shard: number): string {
  return `${prefix}-${shard}`;
}

/**
 * The member Lease name of `identity` in the set `prefix`: the identity itself
 * when it is a valid name part, else a cleaned form plus a hash of the identity.
 *
 * @example Usage
 * ```ts
 * import { memberLeaseName } from "@leasehold/leasehold";
 * console.log(memberLeaseName("work", "pod-a")); // "work-member-pod-a"
 * console.log(memberLeaseName("work", "Pod_A").startsWith("work-member-pod-a-")); // true
 * ```
 */
export function memberLeaseName(prefix: string, identity: string): string {
  const plain = `${prefix}-member-${identity}`;
  if (!invalidLeaseName(plain)) return plain;
  const clean = identity.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60);
  const hash = fnv1a(identity).toString(16).padStart(8, "0");
  return clean ? `${prefix}-member-${clean}-${hash}` : `${prefix}-member-${hash}`;
}

/**
 * How many shards each live member may hold: members sorted by identity, the
 * first `shards mod members` get one more. Returns identity → quota.
 *
 * @example Usage
 * ```ts
 * import { shardQuotas } from "@leasehold/leasehold";
 * console.log(shardQuotas(16, ["c", "a", "b"])); // Map(3) { "a" => 6, "b" => 5, "c" => 5 }
 * ```
 */
export function shardQuotas(shards: number, members: readonly string[]): Map<string, number> {
  const sorted = [...new Set(members)].sort();
  const out = new Map<string, number>();
  if (!sorted.length) return out;
  const base = Math.floor(shards / sorted.length), extra = shards % sorted.length;
  sorted.forEach((m, i) => out.set(m, base + (i < extra ? 1 : 0)));
  return out;
}

/**
 * Who should take the shards nobody holds (`open`, in order of preference):
 * each goes to the live member with room left (its quota minus what `heldBy`
 * says it holds) that scores it highest. Every replica computes the same from
 * the same view, so replicas seldom race for one shard. Returns shard ->
 * member, in the order of `open`, for as long as any member has room.
 *
 * @example Usage
 * ```ts
 * import { assignShards } from "@leasehold/leasehold";
 * const a = assignShards("work", 4, ["a", "b"], [0, 1, 2, 3], new Map());
 * console.log([...a.values()].filter((m) => m === "a").length); // 2
 * ```
 */
export function assignShards(
  prefix: string,
  shards: number,
  members: readonly string[],
  open: readonly number[],
  heldBy: ReadonlyMap<string, number>,
): Map<number, string> {
  const quotas = shardQuotas(shards, members);
  const rooms = new Map([...quotas].map(([m, q]) => [m, Math.max(0, q - (heldBy.get(m) ?? 0))]));
  const out = new Map<number, string>();
  for (const i of open) {
    let best: string | undefined, bestScore = -1;
    for (const [m, r] of rooms) {
      const score = r > 0 ? fnv1a(`${m}/${prefix}/${i}`) : -1;
      if (score > bestScore) (best = m), (bestScore = score);
    }
    if (best === undefined) break;
    rooms.set(best, rooms.get(best)! - 1);
    out.set(i, best);
  }
  return out;
}

/**
 * The problems of a set's settings (empty when fine): prefix, namespace and
 * shard count; timings and identity are checked by each {@linkcode LeaderElector}.
 *
 * @example Usage
 * ```ts
 * import { validateShardedLeaseSetOptions } from "@leasehold/leasehold";
 * console.log(validateShardedLeaseSetOptions({ namespace: "default", prefix: "work", shards: 0 }));
 * // [ "shards must be a whole number from 1 to 4096 (got 0)" ]
 * ```
 */
export function validateShardedLeaseSetOptions(o: { namespace: string; prefix: string; shards: number }): string[] {
  const problems: string[] = [];
  if (!Number.isInteger(o.shards) || o.shards < 1 || o.shards > MAX_SHARDS) {
    problems.push(`shards must be a whole number from 1 to ${MAX_SHARDS} (got ${o.shards})`);
  }
  const ns = invalidNamespace(o.namespace);
  if (ns) problems.push(`namespace ${JSON.stringify(o.namespace)} ${ns}`);
  // The prefix is also the label value: at most 63 characters, a DNS label here.
  if (!o.prefix || o.prefix.length > 50 || !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(o.prefix)) {
    problems.push(
      `prefix ${JSON.stringify(o.prefix)} must be 1 to 50 lower case letters, digits and '-', ` +
        "starting and ending with a letter or digit (it names the Leases and is their label value)",
    );
  }
  return problems;
}
