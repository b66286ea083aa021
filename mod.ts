/**
 * leasehold: Kubernetes leader election through a `coordination.k8s.io/v1` Lease,
 * over `fetch`, with no runtime dependencies, for Deno, Bun and Node.
 *
 * It follows client-go's `tools/leaderelection` (same Lease fields, MicroTime
 * format and expiry rules, so client-go and leasehold replicas can share one
 * Lease) and adds: an `AbortSignal` and a fencing token for the leader's work,
 * release only after that work settled, re-contention after loss, and followers
 * that watch the Lease instead of polling.
 *
 * Limits, stated plainly:
 * - Leadership is a belief bounded by time, not a lock. Expiry is judged from
 *   each replica's local monotonic clock since it last saw the record change,
 *   which tolerates clocks that are off but not clocks that run at different
 *   rates by more than about leaseDuration / renewDeadline.
 * - Stop working when the signal aborts. Work that ignores it can overlap with
 *   the next leader; use the fencing token where the resource can check it.
 * - A Lease deleted and created again restarts `leaseTransitions` at 0.
 *
 * @example Usage
 * ```ts ignore
 * import { inClusterConfig, createLeaseApi, LeaderElector } from "@leasehold/leasehold";
 *
 * const config = await inClusterConfig();
 * const elector = new LeaderElector({
 *   lease: await createLeaseApi(config, { name: "my-app" }),
 *   identity: Deno.env.get("POD_NAME")!,
 *   onStartedLeading: async ({ signal, fencingToken }) => {
 *     while (!signal.aborted) await doCriticalWork(fencingToken, signal);
 *   },
 * });
 * const stop = new AbortController();
 * Deno.addSignalListener("SIGTERM", () => stop.abort());
 * await elector.run(stop.signal); // resolves after the work settled and the Lease was released
 * ```
 *
 * @module
 */

export * from "./lib/errors.ts";
export * from "./lib/clock.ts";
export * from "./lib/log.ts";
export * from "./lib/lease.ts";
export * from "./lib/kube_client.ts";
export * from "./lib/lease_api.ts";
export * from "./lib/memory.ts";
export * from "./lib/elector.ts";
export * from "./lib/config.ts";
export * from "./lib/transport.ts";
export * from "./lib/events.ts";
export * from "./lib/candidate.ts";
export * from "./lib/lease_hub.ts";
export * from "./lib/lease_set.ts";
export * from "./lib/lease_set_kube.ts";
