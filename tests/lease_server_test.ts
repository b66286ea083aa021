import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { type LeaseServer, startLeaseServer } from "./support/lease_server.ts";

const NS = "default";
const BASE = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`;
const MICRO = "2026-07-24T13:13:51.123456Z";

type Json = Record<string, unknown>;

async function call(
  srv: LeaseServer,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Json; headers: Headers }> {
  const res = await fetch(srv.url + path, {
    method,
    headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) as Json, headers: res.headers };
}

const lease = (name: string, spec: Json = {}): Json => ({
  apiVersion: "coordination.k8s.io/v1",
  kind: "Lease",
  metadata: { name },
  spec: { holderIdentity: "a", leaseDurationSeconds: 15, acquireTime: MICRO, renewTime: MICRO, ...spec },
});

const meta = (obj: Json) => obj.metadata as Json;
const spec = (obj: Json) => obj.spec as Json;

async function withServer(fn: (srv: LeaseServer) => Promise<void>, opts = {}): Promise<void> {
  const srv = await startLeaseServer(opts);
  try {
    await fn(srv);
  } finally {
    await srv.close();
  }
}

/** Reads newline-delimited watch events until `count` arrived or the stream ended, then cancels. */
async function readEvents(res: Response, count: number): Promise<Json[]> {
  assert.ok(res.body);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const events: Json[] = [];
  let buf = "";
  try {
    while (events.length < count) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += value;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0 && events.length < count) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) events.push(JSON.parse(line) as Json);
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return events;
}

test("create, get and update a Lease", async () => {
  await withServer(async (srv) => {
    const created = await call(srv, "POST", BASE, lease("x"));
    assert.equal(created.status, 201);
    assert.equal(created.headers.get("content-type"), "application/json");
    assert.equal(created.json.kind, "Lease");
    const m = meta(created.json);
    assert.equal(m.name, "x");
    assert.equal(m.namespace, NS);
    assert.match(String(m.resourceVersion), /^\d+$/);
    assert.equal(typeof m.uid, "string");
    assert.match(String(m.creationTimestamp), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);

    const got = await call(srv, "GET", `${BASE}/x`);
    assert.equal(got.status, 200);
    assert.deepEqual(got.json, created.json);

    const again = await call(srv, "POST", BASE, lease("x"));
    assert.equal(again.status, 409);
    assert.equal(again.json.reason, "AlreadyExists");

    const next = { ...got.json, spec: { ...spec(got.json), holderIdentity: "b", leaseTransitions: 1 } };
    const updated = await call(srv, "PUT", `${BASE}/x`, next);
    assert.equal(updated.status, 200);
    assert.equal(spec(updated.json).holderIdentity, "b");
    assert.equal(meta(updated.json).uid, m.uid);
    assert.ok(Number(meta(updated.json).resourceVersion) > Number(m.resourceVersion));

    const listed = await call(srv, "GET", BASE);
    assert.equal(listed.status, 200);
    assert.equal(listed.json.kind, "LeaseList");
    assert.equal((listed.json.items as Json[]).length, 1);

    assert.equal(srv.countBy("POST"), 2);
    assert.equal(srv.countBy("put"), 1);
    assert.deepEqual(srv.requests[0], { method: "POST", path: BASE, status: 201 });
    assert.equal((srv.leases().get(`${NS}/x`) as Json).kind, "Lease");
  });
});

test("a stale resourceVersion on PUT is a 409 Conflict", async () => {
  await withServer(async (srv) => {
    const first = (await call(srv, "POST", BASE, lease("x"))).json;
    const renewed = await call(srv, "PUT", `${BASE}/x`, {
      ...first,
      spec: { ...spec(first), renewTime: MICRO.replace("51", "52") },
    });
    assert.equal(renewed.status, 200);
    const stale = await call(srv, "PUT", `${BASE}/x`, { ...first, spec: { ...spec(first), holderIdentity: "thief" } });
    assert.equal(stale.status, 409);
    assert.equal(stale.json.kind, "Status");
    assert.equal(stale.json.reason, "Conflict");
    assert.equal(stale.json.code, 409);
    assert.equal(
      stale.json.message,
      'Operation cannot be fulfilled on leases.coordination.k8s.io "x": the object has been modified; please apply your changes to the latest version and try again',
    );
  });
});

test("missing Leases are a 404 NotFound Status", async () => {
  await withServer(async (srv) => {
    const got = await call(srv, "GET", `${BASE}/nope`);
    assert.equal(got.status, 404);
    assert.equal(got.json.kind, "Status");
    assert.equal(got.json.reason, "NotFound");
    assert.equal(got.json.message, 'leases.coordination.k8s.io "nope" not found');
    assert.deepEqual(got.json.details, { name: "nope", group: "coordination.k8s.io", kind: "leases" });

    const put = await call(srv, "PUT", `${BASE}/nope`, {
      ...lease("nope"),
      metadata: { name: "nope", resourceVersion: "1" },
    });
    assert.equal(put.status, 404);

    const other = await call(srv, "GET", "/api/v1/pods");
    assert.equal(other.status, 404);
    assert.equal(other.json.kind, "Status");
  });
});

test("invalid bodies: 3-digit MicroTime and bad duration are 422, broken JSON is 400", async () => {
  await withServer(async (srv) => {
    const created = (await call(srv, "POST", BASE, lease("x"))).json;
    const threeDigits = await call(srv, "PUT", `${BASE}/x`, {
      ...created,
      spec: { ...spec(created), renewTime: "2026-07-24T13:13:51.123Z" },
    });
    assert.equal(threeDigits.status, 422);
    assert.equal(threeDigits.json.reason, "Invalid");

    const zero = await call(srv, "PUT", `${BASE}/x`, {
      ...created,
      spec: { ...spec(created), leaseDurationSeconds: 0 },
    });
    assert.equal(zero.status, 422);

    const noName = await call(srv, "POST", BASE, { ...lease("x"), metadata: {} });
    assert.equal(noName.status, 422);

    const broken = await call(srv, "POST", BASE, "{not json");
    assert.equal(broken.status, 400);
    assert.equal(broken.json.reason, "BadRequest");

    assert.equal(Number(meta((await call(srv, "GET", `${BASE}/x`)).json).resourceVersion), 1);
  });
});

test("with a token, requests without it are a 401", async () => {
  await withServer(async (srv) => {
    const anonymous = await call(srv, "GET", `${BASE}/x`);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.json.kind, "Status");
    assert.equal(anonymous.json.reason, "Unauthorized");

    const wrong = await call(srv, "GET", `${BASE}/x`, undefined, { Authorization: "Bearer nope" });
    assert.equal(wrong.status, 401);

    const ok = await call(srv, "GET", `${BASE}/x`, undefined, { Authorization: "Bearer s3cret" });
    assert.equal(ok.status, 404);
  }, { token: "s3cret" });
});

test("a watch delivers ADDED, then MODIFIED after a PUT", async () => {
  await withServer(async (srv) => {
    const created = (await call(srv, "POST", BASE, lease("x"))).json;
    const q = new URLSearchParams({
      watch: "1",
      fieldSelector: "metadata.name=x",
      allowWatchBookmarks: "true",
      timeoutSeconds: "30",
    });
    const res = await fetch(`${srv.url}${BASE}?${q}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    const events = readEvents(res, 2);
    srv.put(NS, "unrelated", { spec: {} });
    const updated = await call(srv, "PUT", `${BASE}/x`, {
      ...created,
      spec: { ...spec(created), holderIdentity: "b" },
    });
    assert.equal(updated.status, 200);
    const [added, modified] = await events;
    assert.equal(added.type, "ADDED");
    assert.equal(meta(added.object as Json).resourceVersion, meta(created).resourceVersion);
    assert.equal(modified.type, "MODIFIED");
    assert.equal(spec(modified.object as Json).holderIdentity, "b");
    assert.equal((modified.object as Json).kind, "Lease");
  });
});

test("a watch from a resourceVersion replays later changes and sends bookmarks", async () => {
  await withServer(async (srv) => {
    const created = (await call(srv, "POST", BASE, lease("x"))).json;
    srv.delete(NS, "x");
    const q = `watch=1&fieldSelector=metadata.name%3Dx&allowWatchBookmarks=true&resourceVersion=${
      meta(created).resourceVersion
    }`;
    const res = await fetch(`${srv.url}${BASE}?${q}`);
    const [deleted, bookmark] = await readEvents(res, 2);
    assert.equal(deleted.type, "DELETED");
    assert.equal(meta(deleted.object as Json).resourceVersion, "2");
    assert.deepEqual(bookmark, {
      type: "BOOKMARK",
      object: { kind: "Lease", apiVersion: "coordination.k8s.io/v1", metadata: { resourceVersion: "2" } },
    });
  }, { bookmarkIntervalMs: 50 });
});

test("a watch from a compacted resourceVersion gets a 410 Expired ERROR event", async () => {
  await withServer(async (srv) => {
    for (let i = 0; i < 120; i++) srv.put(NS, "x", { spec: { holderIdentity: `h${i}`, leaseDurationSeconds: 15 } });
    const res = await fetch(`${srv.url}${BASE}?watch=1&fieldSelector=metadata.name%3Dx&resourceVersion=5`);
    assert.equal(res.status, 200);
    const events = await readEvents(res, 5);
    assert.equal(events.length, 1);
    assert.equal(events[0].type, "ERROR");
    const st = events[0].object as Json;
    assert.equal(st.kind, "Status");
    assert.equal(st.code, 410);
    assert.equal(st.reason, "Expired");
    assert.match(String(st.message), /^too old resource version/);
  });
});

test("close() ends open watches and timeoutSeconds ends a watch", async () => {
  const srv = await startLeaseServer();
  try {
    const short = await fetch(`${srv.url}${BASE}?watch=1&timeoutSeconds=1`);
    assert.deepEqual(await readEvents(short, 1), []);
    const open = await fetch(`${srv.url}${BASE}?watch=1`);
    const pending = readEvents(open, 1);
    await srv.close();
    assert.deepEqual(await pending.catch(() => []), []);
  } finally {
    await srv.close();
  }
});
