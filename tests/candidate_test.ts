// LeaseCandidate keeping for coordinated leader election, against a small fake
// of the candidate endpoint with resourceVersion checks.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import {
  ConfigError,
  KubeClient,
  type LeaseCandidate,
  LeaseCandidateKeeper,
  type LeaseCandidateOptions,
  ManualClock,
  settle,
} from "../mod.ts";

/**
 * A fake of the candidate endpoint. `watch`: "none" answers a watch with the
 * plain object (a server without watch support), "stream" streams events of
 * every change, "forbidden" answers 403.
 */
function fakeCandidates(watch: "none" | "stream" | "forbidden" = "none") {
  let obj: (LeaseCandidate & { metadata: { resourceVersion: string } }) | undefined;
  let rv = 1;
  const calls: string[] = [];
  const watchers = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const enc = new TextEncoder();
  const emit = (type: string, object: unknown) => {
    for (const w of watchers) w.enqueue(enc.encode(JSON.stringify({ type, object }) + "\n"));
  };
  const fetch = (input: string | URL | Request, init?: RequestInit) => {
    const method = init?.method ?? "GET";
    const isWatch = String(input).includes("watch=1");
    calls.push(isWatch ? "WATCH" : method);
    const body = init?.body ? JSON.parse(String(init.body)) : undefined;
    const notFound = () =>
      Response.json({ kind: "Status", code: 404, reason: "NotFound", message: "not found" }, { status: 404 });
    if (isWatch && watch === "forbidden") {
      return Promise.resolve(
        Response.json({ kind: "Status", code: 403, reason: "Forbidden", message: "forbidden" }, { status: 403 }),
      );
    }
    if (isWatch && watch === "stream") {
      let self: ReadableStreamDefaultController<Uint8Array>;
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          self = c;
          watchers.add(c);
        },
        cancel() {
          watchers.delete(self);
        },
      });
      init?.signal?.addEventListener("abort", () => watchers.delete(self));
      return Promise.resolve(new Response(stream));
    }
    if (method === "GET") return Promise.resolve(obj ? Response.json(obj) : notFound());
    if (method === "POST") {
      obj = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
      emit("ADDED", obj);
      return Promise.resolve(Response.json(obj, { status: 201 }));
    }
    if (method === "PUT") {
      if (!obj) return Promise.resolve(notFound());
      if (body.metadata.resourceVersion !== obj.metadata.resourceVersion) {
        return Promise.resolve(
          Response.json({ kind: "Status", code: 409, reason: "Conflict", message: "conflict" }, { status: 409 }),
        );
      }
      obj = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
      emit("MODIFIED", obj);
      return Promise.resolve(Response.json(obj));
    }
    if (method === "DELETE") {
      if (obj) emit("DELETED", obj);
      obj = undefined;
      return Promise.resolve(Response.json({}));
    }
    return Promise.resolve(new Response("?", { status: 405 }));
  };
  return {
    fetch,
    calls,
    get: () => obj,
    watchers: () => watchers.size,
    ping(at: string) {
      obj = {
        ...obj!,
        spec: { ...obj!.spec!, pingTime: at },
        metadata: { ...obj!.metadata, resourceVersion: String(++rv) },
      };
      emit("MODIFIED", obj);
    },
  };
}

/**
 * A keeper of candidate "pod-a" for Lease ns1/app (binary 1.5.0) on the fake
 * endpoint and a manual clock at 2026-11-26T10:00:00Z, already running.
 */
function runKeeper(
  watch: "none" | "stream" | "forbidden",
  options: Partial<LeaseCandidateOptions>,
) {
  const clock = new ManualClock(new Date("2026-11-26T10:00:00Z"));
  const api = fakeCandidates(watch);
  const client = new KubeClient({ server: "https://k", fetch: api.fetch, clock });
  const keeper = new LeaseCandidateKeeper({
    client,
    clock,
    namespace: "ns1",
    leaseName: "app",
    identity: "pod-a",
    binaryVersion: "1.5.0",
    ...options,
  });
  const stop = new AbortController();
  return { clock, api, keeper, stop, done: keeper.run(stop.signal) };
}

test("candidate: created with the Lease name, versions and strategy; pings answered; deleted on stop", async () => {
  const { clock, api, keeper, stop, done } = runKeeper("none", { emulationVersion: "1.4.0", pollMs: 1000 });
  await settle();
  const c = api.get()!;
  assert.equal(c.metadata.name, "pod-a");
  assert.deepEqual(
    { ...c.spec, renewTime: undefined },
    {
      leaseName: "app",
      binaryVersion: "1.5.0",
      emulationVersion: "1.4.0",
      strategy: "OldestEmulationVersion",
      renewTime: undefined,
    },
  );
  const firstRenew = c.spec!.renewTime!;
  await clock.advance(5000);
  api.ping("2026-11-26T10:00:05.500000Z");
  await clock.advance(1000);
  await settle();
  assert.equal(keeper.pingsAnswered, 1);
  const after = api.get()!;
  assert.ok(after.spec!.renewTime! > "2026-11-26T10:00:05.500000Z", `${after.spec!.renewTime} after the ping`);
  assert.equal(after.spec!.pingTime, "2026-11-26T10:00:05.500000Z", "the ping time is kept");
  assert.notEqual(after.spec!.renewTime, firstRenew);
  // No ping, not due: only reads.
  const puts = api.calls.filter((m) => m === "PUT").length;
  await clock.advance(10000);
  await settle();
  assert.equal(api.calls.filter((m) => m === "PUT").length, puts);
  stop.abort();
  await done;
  assert.equal(api.get(), undefined, "deleted on stop");
});

test("candidate: versions are checked with a message that names the flag", () => {
  const client = new KubeClient({ server: "https://k", fetch: () => Promise.reject(new Error("unused")) });
  const base = { client, namespace: "n", leaseName: "l", identity: "i" };
  assert.throws(() => new LeaseCandidateKeeper({ ...base, binaryVersion: "v1.2.3" }), ConfigError);
  assert.throws(
    () => new LeaseCandidateKeeper({ ...base, binaryVersion: "1.2.3", emulationVersion: "1.3.0" }),
    /at most the binary's version/,
  );
  assert.throws(() => new LeaseCandidateKeeper({ ...base, binaryVersion: "1.2" }), /--binary-version/);
});

test("candidate: pinged() compares pingTime with renewTime", () => {
  const spec = { leaseName: "l", binaryVersion: "1.0.0", strategy: "OldestEmulationVersion" };
  assert.equal(LeaseCandidateKeeper.pinged({ metadata: {}, spec }), false);
  assert.equal(
    LeaseCandidateKeeper.pinged({ metadata: {}, spec: { ...spec, pingTime: "2026-01-01T00:00:01.000000Z" } }),
    true,
  );
  assert.equal(
    LeaseCandidateKeeper.pinged({
      metadata: {},
      spec: { ...spec, pingTime: "2026-01-01T00:00:01.000000Z", renewTime: "2026-01-01T00:00:02.000000Z" },
    }),
    false,
  );
});

const count = (calls: string[], m: string) => calls.filter((c) => c === m).length;

test("candidate: with a watch, a ping is answered as it arrives, nothing is polled, and renewals keep their period", async () => {
  const { clock, api, keeper, stop, done } = runKeeper("stream", { renewIntervalMs: 60000 });
  await settle();
  assert.deepEqual(api.calls, ["GET", "POST", "WATCH"], "read, create, then watch");
  assert.equal(api.watchers(), 1);
  await clock.advance(5000);
  api.ping("2026-11-26T10:00:04.900000Z");
  await settle();
  assert.equal(keeper.pingsAnswered, 1, "answered without the clock moving");
  assert.ok(api.get()!.spec!.renewTime! > "2026-11-26T10:00:04.900000Z");
  assert.deepEqual(api.calls.slice(3), ["PUT"], "the watch event is the read: one request per ping");
  assert.ok(keeper.watching);
  // No pings for almost a renewal period: no requests at all.
  await clock.advance(50000);
  await settle();
  assert.equal(api.calls.length, 4, `no polling: ${api.calls.join(" ")}`);
  // The renewal period still holds: due 60 s after the last renewal (at 5 s).
  await clock.advance(10500);
  await settle();
  assert.deepEqual(api.calls.slice(4), ["GET", "PUT"], "renewed when due");
  assert.equal(api.watchers(), 1, "on the same watch");
  stop.abort();
  await done;
  assert.equal(api.get(), undefined, "deleted on stop");
  assert.equal(api.watchers(), 0, "the watch is closed");
});

test("candidate: a refused watch (403) falls back to polling, warns once, and is tried again later", async () => {
  const warnings: string[] = [];
  const logger = {
    debug() {},
    info() {},
    warn(msg: string, f?: Record<string, unknown>) {
      warnings.push(`${msg} ${JSON.stringify(f)}`);
    },
    error() {},
  };
  const { clock, api, keeper, stop, done } = runKeeper("forbidden", { logger, pollMs: 1000 });
  await settle();
  await clock.advance(500);
  api.ping("2026-11-26T10:00:00.500000Z");
  await clock.advance(1000);
  await settle();
  assert.equal(keeper.pingsAnswered, 1, "answered by polling");
  assert.equal(keeper.watching, false);
  await clock.advance(30000);
  await settle();
  const watches = count(api.calls, "WATCH");
  assert.ok(watches >= 3 && watches <= 6, `the watch is retried with a growing pause (${watches} tries in 31 s)`);
  assert.equal(warnings.filter((w) => w.includes("cannot watch the LeaseCandidate")).length, 1);
  assert.match(warnings.join("\n"), /watch/);
  stop.abort();
  await done;
});

test("candidate: a server that answers a watch with a plain object is polled, not re-watched in a tight loop", async () => {
  const { clock, api, stop, done } = runKeeper("none", { pollMs: 1000 });
  await clock.advance(10000);
  await settle();
  assert.ok(count(api.calls, "WATCH") <= 4, `watch tries in 10 s: ${count(api.calls, "WATCH")}`);
  assert.ok(count(api.calls, "GET") <= 12, `polls in 10 s: ${count(api.calls, "GET")}`);
  stop.abort();
  await done;
});
