// LeaseCandidate keeping for coordinated leader election, against a small fake
// of the candidate endpoint with resourceVersion checks.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { ConfigError, KubeClient, type LeaseCandidate, LeaseCandidateKeeper, ManualClock, settle } from "../mod.ts";

function fakeCandidates() {
  let obj: (LeaseCandidate & { metadata: { resourceVersion: string } }) | undefined;
  let rv = 1;
  const calls: string[] = [];
  const fetch = (_input: string | URL | Request, init?: RequestInit) => {
    const method = init?.method ?? "GET";
    calls.push(method);
    const body = init?.body ? JSON.parse(String(init.body)) : undefined;
    const notFound = () =>
      Response.json({ kind: "Status", code: 404, reason: "NotFound", message: "not found" }, { status: 404 });
    if (method === "GET") return Promise.resolve(obj ? Response.json(obj) : notFound());
    if (method === "POST") {
      obj = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
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
      return Promise.resolve(Response.json(obj));
    }
    if (method === "DELETE") {
      obj = undefined;
      return Promise.resolve(Response.json({}));
    }
    return Promise.resolve(new Response("?", { status: 405 }));
  };
  return {
    fetch,
    calls,
    get: () => obj,
    ping(at: string) {
      obj = {
        ...obj!,
        spec: { ...obj!.spec!, pingTime: at },
        metadata: { ...obj!.metadata, resourceVersion: String(++rv) },
      };
    },
  };
}

test("candidate: created with the Lease name, versions and strategy; pings answered; deleted on stop", async () => {
  const clock = new ManualClock(new Date("2026-11-26T10:00:00Z"));
  const api = fakeCandidates();
  const client = new KubeClient({ server: "https://k", fetch: api.fetch, clock });
  const keeper = new LeaseCandidateKeeper({
    client,
    clock,
    namespace: "ns1",
    leaseName: "app",
    identity: "pod-a",
    binaryVersion: "1.5.0",
    emulationVersion: "1.4.0",
    pollMs: 1000,
  });
  const stop = new AbortController();
  const done = keeper.run(stop.signal);
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
