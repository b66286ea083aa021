// Leadership Events: what is written, and that a failing or hung API never
// reaches the election.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { KubeClient, LeaderEventRecorder, type Logger, ManualClock, settle } from "../mod.ts";

interface Sent {
  method: string;
  url: string;
  body?: Record<string, unknown>;
}

function fakeApi(answer: (req: Sent) => Response | Promise<Response>) {
  const sent: Sent[] = [];
  const fetch = (input: string | URL | Request, init?: RequestInit) => {
    const req: Sent = {
      method: init?.method ?? "GET",
      url: String(input),
      body: init?.body ? JSON.parse(String(init.body)) : undefined,
    };
    sent.push(req);
    return Promise.resolve(answer(req));
  };
  return { sent, fetch };
}

type Line = { level: string; msg: string; fields?: Record<string, unknown> };
function capture(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) =>
    void lines.push({ level, msg, fields });
  return { lines, logger: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") } };
}

const lease = () => Response.json({ kind: "Lease", metadata: { name: "app", namespace: "ns1", uid: "uid-7" } });

test("events: a Normal LeaderElection event on the Lease, with its uid, as client-go writes it", async () => {
  const api = fakeApi((r) => r.method === "GET" ? lease() : Response.json({}, { status: 201 }));
  const client = new KubeClient({ server: "https://k", fetch: api.fetch });
  const rec = new LeaderEventRecorder({ client, namespace: "ns1", leaseName: "app", identity: "pod-a" });
  await rec.record("became leader");
  await rec.record("stopped leading");
  const posts = api.sent.filter((s) => s.method === "POST");
  assert.equal(posts.length, 2);
  assert.equal(posts[0].url, "https://k/api/v1/namespaces/ns1/events");
  const e = posts[0].body!;
  assert.equal(e.reason, "LeaderElection");
  assert.equal(e.type, "Normal");
  assert.equal(e.message, "pod-a became leader");
  assert.equal(posts[1].body!.message, "pod-a stopped leading");
  assert.deepEqual(e.involvedObject, {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    namespace: "ns1",
    name: "app",
    uid: "uid-7",
  });
  assert.match(String((e.metadata as { name: string }).name), /^app\.[0-9a-f]+$/);
  assert.notEqual((e.metadata as { name: string }).name, (posts[1].body!.metadata as { name: string }).name);
  assert.match(String(e.firstTimestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.deepEqual(rec.stats(), { written: 2, failed: 0, dropped: 0 });
});

test("events: a 403 is logged once, naming the missing RBAC rule, and never rejects", async () => {
  const status = {
    kind: "Status",
    status: "Failure",
    reason: "Forbidden",
    code: 403,
    message: 'events is forbidden: User "x" cannot create resource "events"',
  };
  const api = fakeApi((r) => r.method === "GET" ? lease() : Response.json(status, { status: 403 }));
  const client = new KubeClient({ server: "https://k", fetch: api.fetch });
  const log = capture();
  const rec = new LeaderEventRecorder({
    client,
    namespace: "ns1",
    leaseName: "app",
    identity: "pod-a",
    logger: log.logger,
  });
  for (let i = 0; i < 3; i++) await rec.record("became leader");
  const warns = log.lines.filter((l) => l.level === "warn");
  assert.equal(warns.length, 1, JSON.stringify(log.lines));
  assert.match(String(warns[0].fields?.error), /create/);
  assert.match(String(warns[0].fields?.error), /events/);
  assert.equal(rec.stats().failed, 3);
});

test("events: a hung API server does not block record() callers beyond the queue bound", async () => {
  const clock = new ManualClock();
  // Never answers; like a real fetch it gives up only when its signal aborts.
  let hung: AbortSignal | undefined;
  const api = fakeApi(() =>
    new Promise<Response>((_, reject) => hung!.addEventListener("abort", () => reject(hung!.reason)))
  );
  const fetch = (i: string | URL | Request, init?: RequestInit) => {
    hung = init?.signal ?? undefined;
    return api.fetch(i, init);
  };
  const client = new KubeClient({ server: "https://k", fetch, clock });
  const rec = new LeaderEventRecorder({
    client,
    clock,
    namespace: "ns1",
    leaseName: "app",
    identity: "pod-a",
    timeoutMs: 1000,
    maxQueue: 2,
  });
  const a = rec.record("became leader");
  rec.record("stopped leading");
  await rec.record("became leader"); // queue full: dropped at once
  assert.equal(rec.stats().dropped, 1);
  await settle();
  await clock.advance(1000); // the GET of the first event times out
  await a;
  assert.equal(rec.stats().failed, 1);
  await settle();
  await clock.advance(1000); // the second one times out as well
  await settle();
  assert.equal(rec.stats().failed, 2);
});

test("events: rate-limited to the burst, refilled over time", async () => {
  const clock = new ManualClock();
  const api = fakeApi((r) => r.method === "GET" ? lease() : Response.json({}, { status: 201 }));
  const client = new KubeClient({ server: "https://k", fetch: api.fetch, clock });
  const rec = new LeaderEventRecorder({
    client,
    clock,
    namespace: "ns1",
    leaseName: "app",
    identity: "pod-a",
    burst: 2,
    refillMs: 10000,
  });
  for (let i = 0; i < 5; i++) await rec.record("became leader");
  assert.deepEqual(rec.stats(), { written: 2, failed: 0, dropped: 3 });
  await clock.advance(10000);
  await rec.record("stopped leading");
  assert.equal(rec.stats().written, 3);
});

test("events: attach() follows an elector's started and stopped events and detaches", async () => {
  const api = fakeApi((r) => r.method === "GET" ? lease() : Response.json({}, { status: 201 }));
  const client = new KubeClient({ server: "https://k", fetch: api.fetch });
  const rec = new LeaderEventRecorder({ client, namespace: "ns1", leaseName: "app", identity: "pod-a" });
  const target = new EventTarget();
  const detach = rec.attach(target);
  target.dispatchEvent(new CustomEvent("started"));
  target.dispatchEvent(new CustomEvent("stopped"));
  detach();
  target.dispatchEvent(new CustomEvent("started"));
  await rec.record("became leader"); // waits for the queue ahead of it
  const messages = api.sent.filter((s) => s.method === "POST").map((s) => s.body!.message);
  assert.deepEqual(messages, ["pod-a became leader", "pod-a stopped leading", "pod-a became leader"]);
});

test("events: attach() takes the Lease's uid from the elector: one POST per event, no read of the Lease", async () => {
  const api = fakeApi((r) => r.method === "GET" ? lease() : Response.json({}, { status: 201 }));
  const client = new KubeClient({ server: "https://k", fetch: api.fetch });
  const rec = new LeaderEventRecorder({ client, namespace: "ns1", leaseName: "app", identity: "pod-a" });
  const elector = Object.assign(new EventTarget(), { leaseUid: "uid-from-elector" });
  rec.attach(elector);
  elector.dispatchEvent(new CustomEvent("started"));
  elector.dispatchEvent(new CustomEvent("stopped"));
  await rec.record("became leader", "uid-from-elector"); // waits for the queue ahead of it
  assert.deepEqual(api.sent.map((s) => s.method), ["POST", "POST", "POST"], "no GET of the Lease");
  for (const s of api.sent) {
    assert.equal((s.body!.involvedObject as { uid: string }).uid, "uid-from-elector");
  }
  // Without a known uid (recorded by hand, or an elector that has seen no Lease yet) it is read.
  await rec.record("stopped leading");
  assert.deepEqual(api.sent.slice(3).map((s) => s.method), ["GET", "POST"]);
  assert.equal((api.sent[4].body!.involvedObject as { uid: string }).uid, "uid-7");
});
