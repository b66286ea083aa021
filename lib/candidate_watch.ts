/**
 * The watch of one LeaseCandidate (field selector `metadata.name`), so that
 * the election controller's pings are answered as soon as they are written
 * rather than at the next poll.
 *
 * @module
 */

import type { Clock } from "./clock.ts";
import { TimeoutError } from "./errors.ts";
import type { KubeClient } from "./kube_client.ts";
import { WatchExpiredError, watchStream } from "./lease_api.ts";
import { candidatePinged, type LeaseCandidate, leaseCandidateIntent, leaseCandidatePath } from "./lease_candidate.ts";

/** What {@linkcode watchCandidatePings} watches and whom it tells. Durations are in milliseconds. */
export interface CandidateWatch {
  /** Client for the API server. */
  client: KubeClient;
  /** Time source (monotonic time for the renewals due). */
  clock: Clock;
  /** Namespace of the candidate. */
  namespace: string;
  /** Name of the candidate (the replica's identity). */
  name: string;
  /** Renew the candidate at least this often even without pings. */
  renewIntervalMs: number;
  /** A watch that ends sooner than this after it opened, having delivered nothing, failed. */
  pollMs: number;
  /** A watch silent (not even a bookmark) for this long is over. */
  idleMs: number;
  /** Monotonic time of the candidate's last renewal. */
  renewedAt(): number;
  /** Renews the candidate from what the watch delivered (`read.current`), or from a fresh read. */
  renew(read: { current?: LeaseCandidate } | undefined, signal: AbortSignal): Promise<unknown>;
  /** A ping was answered. */
  answered(): void;
  /** The watch delivers events (`true`) or is over (`false`). */
  watching(open: boolean): void;
  /** The watch could not be opened or kept, for `error`. */
  cannotWatch(error: unknown): void;
}

/**
 * Watches the candidate from `from`'s resourceVersion, answering pings and
 * renewing when due. Resolves `"reopen"` when the watch ended in a way that
 * calls for a fresh read and a new watch at once (the server closed it after a
 * healthy while, 410 Gone, silent for `idleMs`, the candidate was deleted),
 * `"failed"` when it could not be kept (the caller polls for a while) or
 * `signal` aborted. Errors of the renewals propagate.
 *
 * @example Usage
 * ```ts
 * import { KubeClient, ManualClock } from "@leasehold/leasehold";
 * import { watchCandidatePings } from "./candidate_watch.ts";
 * const client = new KubeClient({ server: "https://k", fetch: () => Promise.resolve(new Response("", { status: 403 })) });
 * const outcome = await watchCandidatePings({ metadata: { resourceVersion: "7" } }, {
 *   client, clock: new ManualClock(), namespace: "default", name: "pod-a",
 *   renewIntervalMs: 300000, pollMs: 2000, idleMs: 90000,
 *   renewedAt: () => 0, renew: () => Promise.resolve(), answered() {}, watching() {},
 *   cannotWatch: (e) => console.log((e as Error).message.includes("watch")), // true: no watch verb
 * }, new AbortController().signal);
 * console.log(outcome); // "failed": poll instead
 * ```
 */
export async function watchCandidatePings(
  from: LeaseCandidate,
  w: CandidateWatch,
  signal: AbortSignal,
): Promise<"reopen" | "failed"> {
  const q = new URLSearchParams({
    watch: "1",
    fieldSelector: `metadata.name=${w.name}`,
    allowWatchBookmarks: "true",
    timeoutSeconds: "300",
  });
  if (from.metadata.resourceVersion) q.set("resourceVersion", from.metadata.resourceVersion);
  const stop = new AbortController();
  const onAbort = () => stop.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const it = watchStream(w.client, `${leaseCandidatePath(w.namespace)}?${q}`, {
    signal: stop.signal,
    intent: leaseCandidateIntent("watch", w.namespace, w.name),
    idleMs: w.idleMs,
    where: `watch leasecandidate ${w.namespace}/${w.name}`,
  })[Symbol.asyncIterator]();
  type Next = IteratorResult<{ type: string; object: unknown }> | { error: unknown };
  const pull = (): Promise<Next> => it.next().then((r) => r, (error) => ({ error }));
  const opened = w.clock.now();
  let events = 0;
  let next = pull();
  try {
    for (;;) {
      const timer = new AbortController();
      const wait = Math.max(0, w.renewIntervalMs - (w.clock.now() - w.renewedAt()));
      const tick = w.clock.sleep(wait, timer.signal).then(() => "due" as const, () => "cancelled" as const);
      const r = await Promise.race([next, tick]);
      timer.abort();
      if (signal.aborted) return "failed";
      if (r === "due") {
        await w.renew(undefined, signal);
        continue;
      }
      if (r === "cancelled") continue;
      if ("error" in r) {
        // 410 Gone, or silent for idleMs (a dead connection): read and watch again.
        if (r.error instanceof WatchExpiredError || r.error instanceof TimeoutError) return "reopen";
        w.cannotWatch(r.error);
        return "failed";
      }
      if (r.done) {
        // A watch the server closed after a while is reopened at once; one that
        // ends as soon as it opens (no watch support) counts as failed.
        return events > 0 || w.clock.now() - opened >= w.pollMs ? "reopen" : "failed";
      }
      next = pull();
      w.watching(true);
      events++;
      const ev = r.value;
      if (ev.type === "DELETED") return "reopen";
      if (ev.type !== "ADDED" && ev.type !== "MODIFIED") continue;
      const c = ev.object as LeaseCandidate;
      if (candidatePinged(c)) {
        await w.renew({ current: c }, signal);
        w.answered();
      }
    }
  } finally {
    w.watching(false);
    signal.removeEventListener("abort", onAbort);
    stop.abort();
    next.catch(() => {});
    it.return?.(undefined).catch(() => {});
  }
}
