/**
 * A replica's member Lease in a sharded lease set, `<prefix>-member-<identity>`:
 * held and renewed like any Lease, it tells the other replicas that this one
 * is alive, whether or not it holds a shard.
 *
 * @module
 */

import { LeaderElector } from "./elector.ts";
import type { LeaseWatchHub } from "./lease_hub.ts";
import type { LeaseApi } from "./lease_api.ts";
import type { Lease } from "./lease.ts";
import { memberLeaseName, type MemberOwner, type ShardedLeaseSetOptions } from "./lease_set_rules.ts";
import { pickElectorOptions, watchedLeaseApi } from "./lease_set_slot.ts";
import type { LeaseSetView } from "./lease_set_view.ts";

/**
 * The elector of this replica's member Lease, through the set's shared watch.
 * Only this replica writes that Lease, so each write is noted in `view` and
 * must come back on the watch (else the watch is stale).
 *
 * @example Usage
 * ```ts
 * import { LeaseWatchHub, MemoryLeaseStore, SHARD_SET_LABEL, systemClock } from "@leasehold/leasehold";
 * import { memberElector } from "./lease_set_member.ts";
 * import { LeaseSetView } from "./lease_set_view.ts";
 * const store = new MemoryLeaseStore();
 * const label = { key: SHARD_SET_LABEL, value: "work" };
 * const view = new LeaseSetView({ clock: systemClock, defaultDurationMs: 15000, onChange: () => {} });
 * const source = view.tap(store.listSource("default", label));
 * const hub = new LeaseWatchHub({ source, label });
 * const options = {
 *   namespace: "default", prefix: "work", shards: 2, identity: "pod-a", source,
 *   leaseApi: (name: string) => store.api("default", name),
 * };
 * console.log(memberElector(options, hub, view).identity); // "pod-a"
 * ```
 */
export function memberElector(o: ShardedLeaseSetOptions, hub: LeaseWatchHub, view: LeaseSetView): LeaderElector {
  const name = memberLeaseName(o.prefix, o.identity);
  const api = o.memberOwner ? ownedLeaseApi(o.leaseApi(name), o.memberOwner) : o.leaseApi(name);
  return new LeaderElector({
    lease: watchedLeaseApi(hub.api(api), (r) => r, (p) => {
      p.then((l) => view.ownWrite(name, l), () => {});
      return p;
    }),
    ...pickElectorOptions(o),
    releaseOnCancel: true,
  });
}

/**
 * `api` with every write naming `owner` as the Lease's only owner reference
 * (a Lease taken over from an earlier owner of the same name gets the new one).
 *
 * @example Usage
 * ```ts
 * import { MemoryLeaseStore } from "@leasehold/leasehold";
 * import { ownedLeaseApi } from "./lease_set_member.ts";
 * const store = new MemoryLeaseStore();
 * const owner = { apiVersion: "v1", kind: "Pod", name: "pod-a", uid: "0b5c3f1e-0000-4000-8000-000000000001" };
 * await ownedLeaseApi(store.api("default", "work-member-pod-a"), owner).create({ metadata: {}, spec: {} });
 * const refs = store.peek("default", "work-member-pod-a")?.metadata.ownerReferences as { name: string }[];
 * console.log(refs[0].name); // "pod-a"
 * ```
 */
export function ownedLeaseApi(api: LeaseApi, owner: MemberOwner): LeaseApi {
  const owned = (lease: Lease): Lease => ({
    ...lease,
    metadata: { ...lease.metadata, ownerReferences: [{ ...owner }] },
  });
  return {
    namespace: api.namespace,
    name: api.name,
    get: (signal) => api.get(signal),
    create: (lease, signal) => api.create(owned(lease), signal),
    update: (lease, signal) => api.update(owned(lease), signal),
    watch: api.watch ? (rv, signal) => api.watch!(rv, signal) : undefined,
    clock: api.clock,
  };
}
