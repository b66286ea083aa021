// One replica of a sharded lease set on the in-memory store, with the two
// faults the tests and the simulator inject: cut off from the API server
// (every request fails with a 503) and a shared watch gone deaf (the streams
// open now stay open but deliver nothing more, as a black-holed connection).
import {
  KubeApiError,
  type MemoryLeaseStore,
  SHARD_SET_LABEL,
  ShardedLeaseSet,
  type ShardedLeaseSetOptions,
} from "../../mod.ts";

/** A running replica and its fault switches. */
export interface ShardReplica {
  id: string;
  set: ShardedLeaseSet;
  stop: AbortController;
  /** The set's run(), started at once. */
  done: Promise<void>;
  /** Makes every request of this replica fail (a replica cut off from the API server). */
  down: boolean;
  /** The shared watch streams open now deliver nothing more, without ending (a black-holed connection). */
  deafen: () => void;
}

/** The set's options but its source (the store's, behind the faults); `leaseApi` replaces the faulty default. */
export type ShardReplicaOptions = Omit<ShardedLeaseSetOptions, "leaseApi" | "source"> & {
  leaseApi?: ShardedLeaseSetOptions["leaseApi"];
};

/** Starts a replica: its set runs on `store` (Leases and the labelled LIST + WATCH) until `stop` aborts. */
export function startShardReplica(store: MemoryLeaseStore, options: ShardReplicaOptions): ShardReplica {
  const { namespace, prefix } = options;
  const r = { id: options.identity, down: false } as ShardReplica;
  let streams = 0, deafUpTo = 0;
  r.deafen = () => (deafUpTo = streams);
  const fault = () =>
    r.down
      ? new KubeApiError("unavailable", { code: 503, reason: "ServiceUnavailable", method: "", url: "memory://" })
      : undefined;
  const source = store.listSource(namespace, { key: SHARD_SET_LABEL, value: prefix });
  r.stop = new AbortController();
  r.set = new ShardedLeaseSet({
    ...options,
    leaseApi: options.leaseApi ?? ((name) => {
      const api = store.api(namespace, name);
      api.fault = fault;
      return api;
    }),
    source: {
      list: (signal) => {
        const e = fault();
        return e ? Promise.reject(e) : source.list(signal);
      },
      async *watch(rv, signal) {
        const stream = ++streams;
        for await (const ev of source.watch(rv, signal)) {
          if (r.down) throw fault();
          if (stream <= deafUpTo) continue;
          yield ev;
        }
      },
    },
  });
  r.done = r.set.run(r.stop.signal);
  return r;
}
