// The shared LIST + WATCH of many Leases: catch-up, routing by name, failure
// and re-list, the label on writes.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import {
  type Lease,
  type LeaseListSource,
  type LeaseWatchEvent,
  LeaseWatchHub,
  LeaseWatchHubError,
  ManualClock,
  MemoryLeaseStore,
  settle,
} from "../mod.ts";

const LABEL = { key: "leasehold.dev/group", value: "g" };

function lease(name: string, rv: string, holder = ""): Lease {
  return { metadata: { name, namespace: "ns", resourceVersion: rv }, spec: { holderIdentity: holder } };
}

/** A source the test drives: list() answers with `items`; watch() yields what `push` gives. */
function fakeSource(items: Lease[]) {
  let push: ((e: LeaseWatchEvent | Error | "end") => void) | undefined;
  const counts = { lists: 0, watches: 0 };
  const source: LeaseListSource = {
    list: () => {
      counts.lists++;
      return Promise.resolve({ items: structuredClone(items), resourceVersion: "100" });
    },
    async *watch(_rv, signal) {
      counts.watches++;
      const queue: (LeaseWatchEvent | Error | "end")[] = [];
      let wake: (() => void) | undefined;
      push = (e) => {
        queue.push(e);
        wake?.();
      };
      while (!signal.aborted) {
        const e = queue.shift();
        if (e === "end") return;
        if (e instanceof Error) throw e;
        if (e) {
          yield e;
          continue;
        }
        await new Promise<void>((r) => {
          wake = r;
          signal.addEventListener("abort", () => r(), { once: true });
        });
      }
    },
  };
  return {
    source,
    counts,
    push: (e: LeaseWatchEvent | Error | "end") => push!(e),
    setItems: (l: Lease[]) => (items = l),
  };
}

async function take(it: AsyncIterator<LeaseWatchEvent>): Promise<LeaseWatchEvent> {
  const r = await it.next();
  assert.equal(r.done, false);
  return r.value;
}

test("hub: a subscriber is caught up, then gets only its own Lease's events", async () => {
  const clock = new ManualClock();
  const src = fakeSource([lease("a", "5"), lease("b", "6")]);
  const hub = new LeaseWatchHub({ source: src.source, label: LABEL, clock });
  const stop = new AbortController();
  const running = hub.run(stop.signal);
  const store = new MemoryLeaseStore();
  const a = hub.api(store.api("ns", "a"));
  const sub = new AbortController();
  const it = a.watch!("4", sub.signal)[Symbol.asyncIterator]();
  assert.equal((await take(it)).object.metadata.resourceVersion, "5", "caught up with what the hub holds");
  const next = take(it);
  await settle();
  src.push({ type: "MODIFIED", object: lease("b", "7", "x") });
  src.push({ type: "MODIFIED", object: lease("a", "8", "y") });
  const ev = await next;
  assert.equal(ev.object.metadata.name, "a");
  assert.equal(ev.object.metadata.resourceVersion, "8");
  assert.equal(hub.stats().subscribers, 1);
  sub.abort();
  await assert.rejects(it.next());
  assert.equal(hub.stats().subscribers, 0, "an ended watch leaves no subscriber behind");
  stop.abort();
  await running;
});

test("hub: an up-to-date subscriber gets no catch-up event; an unknown seen Lease is refused", async () => {
  const src = fakeSource([lease("a", "5")]);
  const hub = new LeaseWatchHub({ source: src.source, label: LABEL, clock: new ManualClock() });
  const stop = new AbortController();
  const running = hub.run(stop.signal);
  const store = new MemoryLeaseStore();
  const it = hub.api(store.api("ns", "a")).watch!("5", stop.signal)[Symbol.asyncIterator]();
  const first = take(it);
  await settle();
  src.push({ type: "DELETED", object: lease("a", "9") });
  assert.equal((await first).type, "DELETED");
  const missing = hub.api(store.api("ns", "zz")).watch!("3", stop.signal)[Symbol.asyncIterator]();
  await assert.rejects(missing.next(), /not in the shared watch.*leasehold\.dev\/group=g/);
  stop.abort();
  await running;
});

test("hub: a broken stream ends every per-Lease watch; the hub lists again after a backoff", async () => {
  const clock = new ManualClock();
  const src = fakeSource([lease("a", "5")]);
  const hub = new LeaseWatchHub({ source: src.source, label: LABEL, clock, random: () => 0.5, minBackoffMs: 1000 });
  const stop = new AbortController();
  const running = hub.run(stop.signal);
  const store = new MemoryLeaseStore();
  const it = hub.api(store.api("ns", "a")).watch!("5", stop.signal)[Symbol.asyncIterator]();
  const pending = it.next();
  await settle();
  src.push(new Error("connection reset"));
  await assert.rejects(pending, LeaseWatchHubError);
  assert.equal(hub.synced, false);
  assert.equal(src.counts.lists, 1);
  await clock.advance(999);
  assert.equal(src.counts.lists, 1, "no re-list before the backoff");
  await clock.advance(1);
  await settle();
  assert.equal(src.counts.lists, 2);
  assert.equal(hub.synced, true);
  stop.abort();
  await running;
});

test("hub: a 410 lists again at once; a stream that ends lists again", async () => {
  const clock = new ManualClock();
  const src = fakeSource([lease("a", "5")]);
  const hub = new LeaseWatchHub({ source: src.source, label: LABEL, clock });
  const stop = new AbortController();
  const running = hub.run(stop.signal);
  await settle();
  src.push(Object.assign(new Error("too old"), { code: 410 }));
  await settle();
  await clock.advance(0);
  await settle();
  assert.equal(src.counts.lists, 2);
  // A re-list that no longer holds "a" forgets it.
  src.setItems([lease("b", "11")]);
  src.push("end");
  await settle();
  await clock.advance(2000);
  await settle();
  assert.equal(src.counts.lists, 3);
  const store = new MemoryLeaseStore();
  await assert.rejects(hub.api(store.api("ns", "a")).watch!("5", stop.signal)[Symbol.asyncIterator]().next());
  stop.abort();
  await running;
});

test("hub: writes through the hub's API carry its label, other labels kept", async () => {
  const src = fakeSource([]);
  const hub = new LeaseWatchHub({ source: src.source, label: LABEL });
  const store = new MemoryLeaseStore();
  const api = hub.api(store.api("ns", "a"));
  const created = await api.create({ metadata: {}, spec: { holderIdentity: "x" } });
  assert.deepEqual(created.metadata.labels, { [LABEL.key]: LABEL.value });
  store.put("ns", "a", { metadata: { labels: { team: "t" } }, spec: { holderIdentity: "x" } });
  const read = (await api.get())!;
  const updated = await api.update(read);
  assert.deepEqual(updated.metadata.labels, { team: "t", [LABEL.key]: LABEL.value });
});
