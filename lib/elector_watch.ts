/**
 * The follower's watch of its Lease: every event is observed and wakes the
 * waiting loop; reopening is paced by election_rules.ts's watchReopen.
 *
 * @module
 */

import { WATCH_BACKOFF_MIN_MS, watchReopen } from "./election_rules.ts";
import { errorKind } from "./errors.ts";
import type { ElectorCore } from "./elector_core.ts";

/**
 * Watches the Lease while following. Request rate: a watch is opened again at
 * once only after one that lived at least 10 s; after a shorter one (ended by
 * the server or failed) it waits a jittered, doubling backoff of 1 s to 30 s
 * ([b, 2b) for backoff b), reset after a watch that lived 10 s or delivered an
 * event; after a 403 at least 60 s. So a follower opens at most one watch per
 * second, and while watches keep ending at once without events, fewer than one
 * per 30 s after about a minute (plus its polls, one GET per jittered
 * retryPeriod, while it has no watch). A 410 Gone (or any ERROR event) restarts
 * the watch from the current state.
 */
export async function watchLoop(c: ElectorCore, signal: AbortSignal): Promise<void> {
  const gen = ++c.watchGen;
  const setHealthy = (v: boolean) => {
    if (gen === c.watchGen) c.watchHealthy = v;
  };
  let backoff = WATCH_BACKOFF_MIN_MS;
  let warnedForbidden = false;
  let rv = c.observed?.lease.metadata?.resourceVersion;
  while (!signal.aborted) {
    const opened = c.clock.now();
    let events = 0;
    let delay: number;
    try {
      for await (const ev of c.api.watch!(rv, signal)) {
        if (signal.aborted) break;
        const obj = ev?.object;
        if (!obj || typeof obj !== "object" || !obj.metadata || typeof obj.metadata !== "object") continue;
        if (!c.watchHealthy) {
          setHealthy(true);
          c.log.debug("watching the lease", {});
        }
        const next = obj.metadata.resourceVersion;
        if (typeof next === "string" && next) rv = next;
        // A deletion changes nothing until the last record seen expires (see #attempt),
        // but it is news: the next attempt reads the Lease instead of writing over it.
        if (ev.type === "DELETED") {
          events++;
          c.observeAbsent(c.clock.now(), obj);
        } else if (ev.type !== "BOOKMARK") {
          events++;
          const now = c.clock.now();
          // A shared watch on this same clock may have seen this version earlier.
          const seen = ev.observedAt;
          const earlier = c.api.clock === c.clock && typeof seen === "number" && seen <= now ? seen : now;
          c.observe(obj, earlier);
        }
        c.wake?.();
      }
      if (signal.aborted) break;
      // The server (or a proxy) ended the stream.
      setHealthy(false);
      c.wake?.();
      const lived = c.clock.now() - opened;
      ({ delay, backoff } = watchReopen({ how: "closed", lived, events, backoff, random: c.unitRandom() }));
      if (delay > 0) c.log.debug("lease watch ended early; reopening it later", { lived, delay });
    } catch (e) {
      setHealthy(false);
      c.wake?.();
      if (signal.aborted) break;
      const forbidden = errorKind(e) === "forbidden";
      if (forbidden && !warnedForbidden) {
        warnedForbidden = true;
        c.log.warn(
          "watching the lease is forbidden; polling every retryPeriod instead (grant list and watch on leases to enable it)",
          { error: e instanceof Error ? e.message : String(e) },
        );
      } else if (!forbidden) {
        c.log.debug("lease watch ended; reconnecting", { error: e instanceof Error ? e.message : String(e) });
      }
      const name = (e as { name?: string } | null)?.name;
      if (name === "WatchExpiredError" || (e as { code?: number } | null)?.code === 410) rv = undefined; // re-read: start from now
      const lived = c.clock.now() - opened;
      ({ delay, backoff } = watchReopen({
        how: forbidden ? "forbidden" : "failed",
        lived,
        events,
        backoff,
        random: c.unitRandom(),
      }));
    }
    if (delay > 0) {
      try {
        await c.clock.sleep(delay, signal);
      } catch {
        break;
      }
    }
  }
  setHealthy(false);
}
