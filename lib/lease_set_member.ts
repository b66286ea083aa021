/**
 * A replica's member Lease in a sharded lease set, `<prefix>-member-<identity>`:
 * held and renewed like any Lease, it tells the other replicas that this one
 * is alive, whether or not it holds a shard.
 *
 * @module
 */

import { LeaderElector } from "./elector.ts";
import type { LeaseWatchHub } from "./lease_hub.ts";
import { memberLeaseName, type ShardedLeaseSetOptions } from "./lease_set_rules.ts";
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
  return new LeaderElector({
    lease: watchedLeaseApi(hub.api(o.leaseApi(name)), (r) => r, (p) => {
      p.then((l) => view.ownWrite(name, l), () => {});
      return p;
    }),
    ...pickElectorOptions(o),
    releaseOnCancel: true,
  });
}
