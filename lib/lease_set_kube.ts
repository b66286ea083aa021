/**
 * A {@linkcode ShardedLeaseSet} against a real API server: every request
 * through one {@linkcode KubeClient}.
 *
 * @module
 */

import type { KubeClient } from "./kube_client.ts";
import { KubeLeaseApi, type LeaseApi } from "./lease_api.ts";
import { kubeLeaseListSource } from "./lease_hub.ts";
import { ShardedLeaseSet } from "./lease_set.ts";
import { SHARD_SET_LABEL, type ShardedLeaseSetOptions } from "./lease_set_rules.ts";

/** The shipped manifest with the sharded mode's Role. */
const SHARDS_ROLE_FILE = "deploy/rbac.shards.yaml";

/** Options of {@linkcode kubeShardedLeaseSet}: those of the set without the Lease access. */
export type KubeShardedLeaseSetOptions = Omit<ShardedLeaseSetOptions, "leaseApi" | "source"> & {
  /** A watch silent for this long is ended and opened again. @default 90000 */
  watchIdleTimeoutMs?: number;
  /** Wraps each per-Lease API, e.g. to note the uids it reads and writes. @default none */
  wrapLeaseApi?: (api: LeaseApi) => LeaseApi;
};

/**
 * A {@linkcode ShardedLeaseSet} against a real API server, every request
 * through `client`: per-Lease reads and writes, and one
 * LIST + WATCH of the set's labelled Leases. RBAC: get, create, update, list
 * and watch on leases in the namespace.
 *
 * @example Usage
 * ```ts ignore
 * import { inClusterConfig, KubeClient, kubeShardedLeaseSet } from "@leasehold/leasehold";
 * const client = new KubeClient(await inClusterConfig());
 * const set = kubeShardedLeaseSet(client, {
 *   namespace: "default",
 *   prefix: "work",
 *   shards: 16,
 *   identity: Deno.env.get("POD_NAME")!,
 *   onStartedLeading: async (shard, { signal, fencingToken }) => {
 *     while (!signal.aborted) await processShard(shard, fencingToken, signal);
 *   },
 * });
 * await set.run(stopSignal);
 * ```
 */
export function kubeShardedLeaseSet(client: KubeClient, options: KubeShardedLeaseSetOptions): ShardedLeaseSet {
  const label = { key: SHARD_SET_LABEL, value: options.prefix };
  const idle = { watchIdleTimeoutMs: options.watchIdleTimeoutMs };
  // A 403 names the sharded mode's Role; it cannot list member Leases by name (they are named after pods).
  const rbac = { roleFile: SHARDS_ROLE_FILE, byName: false };
  return new ShardedLeaseSet({
    ...options,
    leaseApi: (name) => {
      const api = new KubeLeaseApi(client, options.namespace, name, { ...idle, rbac });
      return options.wrapLeaseApi ? options.wrapLeaseApi(api) : api;
    },
    source: kubeLeaseListSource(client, options.namespace, label, { ...idle, roleFile: SHARDS_ROLE_FILE }),
  });
}
