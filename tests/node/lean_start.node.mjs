// Node: what the built package loads at start. A follower talks node:https and
// must not load Node's bundled fetch (undici): the first use of the global
// Headers, Response or Request loads it, about 5 MiB of resident memory and tens
// of milliseconds. Each check runs in a fresh process, since the test runner
// itself may have loaded undici.
import { test } from "../support/guard.mjs";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import process from "node:process";

const dist = fileURLToPath(new URL("../../dist/", import.meta.url));

function runFresh(code) {
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { encoding: "utf8", timeout: 30000 });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1));
}

test(
  "node: a request and a watch through the node:https adapter do not load undici",
  { skip: !existsSync(dist) },
  () => {
    const out = runFresh(`
    import http from "node:http";
    const { KubeClient, KubeLeaseApi } = await import(${JSON.stringify(`${dist}mod.js`)});
    const { nodeFetch } = await import(${JSON.stringify(`${dist}lib/transport_node.js`)});
    const lease = { metadata: { name: "l", namespace: "ns", resourceVersion: "7" }, spec: { holderIdentity: "a" } };
    const srv = http.createServer((req, res) => {
      res.setHeader("Content-Type", "application/json");
      res.setHeader("X-Twice", "1");
      res.appendHeader?.("X-Twice", "2");
      if (req.url.includes("watch=1")) {
        res.write(JSON.stringify({ type: "MODIFIED", object: lease }) + "\\n");
        return; // the watch stays open
      }
      res.end(JSON.stringify({ ...lease, accept: req.headers.accept }));
    });
    await new Promise((r) => srv.listen(0, "127.0.0.1", r));
    const server = "http://127.0.0.1:" + srv.address().port;
    const f = nodeFetch({});
    const raw = await f(server + "/x", { headers: { Accept: "application/json" } });
    const body = await raw.json();
    const api = new KubeLeaseApi(new KubeClient({ server, fetch: f }), "ns", "l");
    const got = await api.get();
    const stop = new AbortController();
    let event;
    for await (const ev of api.watch("7", stop.signal)) { event = ev.type; break; }
    stop.abort();
    srv.closeAllConnections();
    srv.close();
    console.log(JSON.stringify({
      status: raw.status, ok: raw.ok, accept: body.accept, twice: raw.headers.get("x-twice"),
      holder: got.spec.holderIdentity, event,
      undici: process.moduleLoadList.filter((m) => m.includes("undici")),
    }));
  `);
    assert.equal(out.status, 200);
    assert.equal(out.ok, true);
    assert.equal(out.accept, "application/json");
    assert.match(out.twice, /^1(, 2)?$/);
    assert.equal(out.holder, "a");
    assert.equal(out.event, "MODIFIED");
    assert.deepEqual(out.undici, []);
  },
);

test("node: the check above can fail: the global Response loads undici", () => {
  const out = runFresh(
    `new Response("x"); console.log(JSON.stringify(process.moduleLoadList.filter((m) => m.includes("undici"))));`,
  );
  assert.ok(out.length > 0, "undici not seen in moduleLoadList: the check would pass vacuously");
});
