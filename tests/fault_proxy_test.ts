// Tests of tests/support/fault_proxy.ts against the real kube-apiserver, through
// the library's own client, so each fault is also checked to surface as the
// typed error a replica would handle. Runs under Deno and Bun.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import * as tls from "node:tls";
import {
  createFetch,
  type FetchLike,
  InvalidResponseError,
  KubeApiError,
  KubeClient,
  NetworkError,
  TimeoutError,
} from "../mod.ts";
import { apiServer } from "./env/testenv.mjs";
import * as https from "node:https";
import {
  type Exchange,
  type FaultProxy,
  type FaultProxyOptions,
  startFaultProxy,
  startTcpProxy,
} from "./support/fault_proxy.ts";

type Info = { url: string; host: string; port: number; caFile: string; adminToken: string; dir?: string };

interface Setup {
  info: Info;
  proxy: FaultProxy;
  caCert: string;
  fetch: FetchLike;
  client: (timeoutMs?: number) => KubeClient;
}

/** Starts a proxy in front of the test API server, or skips the test when there is none. */
async function setup(
  t: { skip: (m: string) => void },
  extra: Partial<FaultProxyOptions> = {},
): Promise<Setup | undefined> {
  const info: Info | undefined = await apiServer();
  if (!info) {
    t.skip("real API server not available (see the message above)");
    return undefined;
  }
  const dir = info.dir ?? dirname(info.caFile);
  const caCert = readFileSync(info.caFile, "utf8");
  const proxy = await startFaultProxy({
    target: info.url,
    caCert,
    cert: readFileSync(join(dir, "serving.crt"), "utf8"),
    key: readFileSync(join(dir, "serving.key"), "utf8"),
    ...extra,
  });
  const fetch = await createFetch({ caCert });
  const client = (timeoutMs = 3000) =>
    new KubeClient({
      server: proxy.url,
      fetch,
      tokenSource: { token: () => Promise.resolve(info.adminToken) },
      timeoutMs,
    });
  return { info, proxy, caCert, fetch, client };
}

/** A test with a proxy in front of the test API server, closed after it; skipped when there is no server. */
function proxyTest(name: string, body: (s: Setup) => Promise<void>): void {
  test(name, async (t) => {
    const s = await setup(t);
    if (!s) return;
    try {
      await body(s);
    } finally {
      await s.proxy.close();
    }
  });
}

const NS_PATH = "/api/v1/namespaces/default";
const LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

function isA(cls: abstract new (...args: never[]) => Error, check?: (e: Error) => void) {
  return (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e instanceof Error ? `${e.name}: ${e.message}` : e}`);
    check?.(e);
    return true;
  };
}

function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/** Reads `body` until `pred(text so far)` holds; rejects after `ms`. */
async function readUntil(body: ReadableStream<Uint8Array>, pred: (s: string) => boolean, ms: number) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not seen within ${ms} ms; got ${JSON.stringify(text)}`)), ms);
  });
  try {
    while (!pred(text)) {
      const r = await Promise.race([reader.read(), deadline]);
      if (r.done) throw new Error(`stream ended before the expected data; got ${JSON.stringify(text)}`);
      text += decoder.decode(r.value, { stream: true });
    }
    return text;
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => {});
  }
}

proxyTest("fault proxy: passes requests through unchanged and counts them", async (s) => {
  const ns = (await s.client().request("GET", NS_PATH)) as { kind: string; metadata: { name: string } };
  assert.equal(ns.kind, "Namespace");
  assert.equal(ns.metadata.name, "default");
  const list = (await s.client().request("GET", LEASES)) as { kind: string };
  assert.equal(list.kind, "LeaseList");
  assert.equal(s.proxy.stats.requests, 2);
  assert.equal(s.proxy.stats.byMethod.GET, 2);
  assert.equal(s.proxy.stats.faulted, 0);
  assert.equal(s.proxy.stats.watches, 0);
  // An error from the real server passes through as is.
  await assert.rejects(
    s.client().request("GET", `${LEASES}/${unique("missing")}`),
    isA(KubeApiError, (e) => assert.equal((e as KubeApiError).code, 404)),
  );
});

proxyTest("fault proxy: latency delays the request and the response", async (s) => {
  const client = s.client();
  await client.request("GET", NS_PATH); // warm the connection
  s.proxy.set({ kind: "latency", ms: 300 });
  const start = performance.now();
  const ns = (await client.request("GET", NS_PATH)) as { kind: string };
  const took = performance.now() - start;
  assert.equal(ns.kind, "Namespace");
  assert.ok(took >= 590, `latency 300 ms each way should add >= 600 ms, took ${took.toFixed(0)} ms`);
  assert.equal(s.proxy.stats.faulted, 1);
});

proxyTest("fault proxy: blackhole makes requests time out; clearing it lets new requests through", async (s) => {
  const client = s.client(800);
  await client.request("GET", NS_PATH);
  s.proxy.set({ kind: "blackhole" });
  const start = performance.now();
  await assert.rejects(client.request("GET", NS_PATH), isA(TimeoutError));
  assert.ok(performance.now() - start >= 750, "the request should hang until the client's timeout");
  s.proxy.clear();
  const ns = (await client.request("GET", NS_PATH)) as { kind: string };
  assert.equal(ns.kind, "Namespace");
});

proxyTest("fault proxy: reset gives a NetworkError; clearing it lets new requests through", async (s) => {
  const client = s.client();
  await client.request("GET", NS_PATH);
  s.proxy.set({ kind: "reset" });
  await assert.rejects(client.request("GET", NS_PATH), isA(NetworkError));
  s.proxy.clear();
  assert.equal(((await client.request("GET", NS_PATH)) as { kind: string }).kind, "Namespace");
});

proxyTest("fault proxy: an HTML 502 page from a proxy is a KubeApiError 502 that blames a proxy", async (s) => {
  s.proxy.set({
    kind: "status",
    status: 502,
    contentType: "text/html",
    body: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>",
  });
  await assert.rejects(
    s.client().request("GET", NS_PATH),
    isA(KubeApiError, (e) => {
      const k = e as KubeApiError;
      assert.equal(k.code, 502);
      assert.match(k.message, /proxy/);
      assert.match(k.message, /text\/html/);
    }),
  );
});

proxyTest("fault proxy: 429 with Retry-After and 500 with a Status body become KubeApiErrors", async (s) => {
  s.proxy.set({
    kind: "status",
    status: 429,
    body: "Too many requests, please try again later.\n",
    headers: { "Retry-After": "3" },
  });
  await assert.rejects(
    s.client().request("GET", NS_PATH),
    isA(KubeApiError, (e) => {
      const k = e as KubeApiError;
      assert.equal(k.code, 429);
      assert.equal(k.reason, "TooManyRequests");
      assert.equal(k.retryAfterSeconds, 3);
    }),
  );
  s.proxy.set({
    kind: "status",
    status: 500,
    contentType: "application/json",
    body: JSON.stringify({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "etcdserver: request timed out",
      reason: "InternalError",
      code: 500,
    }),
  });
  await assert.rejects(
    s.client().request("GET", NS_PATH),
    isA(KubeApiError, (e) => {
      const k = e as KubeApiError;
      assert.equal(k.code, 500);
      assert.equal(k.reason, "InternalError");
      assert.equal(k.serverMessage, "etcdserver: request timed out");
    }),
  );
  assert.equal(s.proxy.stats.faulted, 2);
});

proxyTest("fault proxy: a truncated body is an InvalidResponseError or a NetworkError", async (s) => {
  s.proxy.set({ kind: "truncated" });
  await assert.rejects(s.client().request("GET", NS_PATH), (e: unknown) => {
    assert.ok(
      e instanceof InvalidResponseError || e instanceof NetworkError,
      `expected InvalidResponseError or NetworkError, got ${e instanceof Error ? `${e.name}: ${e.message}` : e}`,
    );
    return true;
  });
});

proxyTest("fault proxy: a 10 MB body is refused at the client's 1 MiB cap, without buffering it", async (s) => {
  s.proxy.set({ kind: "huge", bytes: 10 * 1024 * 1024 });
  const before = process.memoryUsage().rss;
  const start = performance.now();
  await assert.rejects(
    s.client(5000).request("GET", NS_PATH),
    isA(InvalidResponseError, (e) => assert.match(e.message, /larger than 1048576 bytes/)),
  );
  const grew = process.memoryUsage().rss - before;
  assert.ok(performance.now() - start < 4000, "the cap should stop the read early");
  assert.ok(grew < 64 * 1024 * 1024, `memory grew by ${(grew / 1048576).toFixed(1)} MiB`);

  // Read in full on a raw socket, the body is exactly `bytes` long and looks like JSON.
  s.proxy.set({ kind: "huge", bytes: 3 * 1024 * 1024 + 7 });
  const res = await s.fetch(s.proxy.url + NS_PATH);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  const text = await res.text();
  assert.equal(text.length, 3 * 1024 * 1024 + 7);
  assert.ok(text.startsWith('{"kind":"Lease"') && text.endsWith('"}}}'));
  assert.equal((JSON.parse(text) as { kind: string }).kind, "Lease");
});

proxyTest("fault proxy: a never-ending body is a TimeoutError", async (s) => {
  s.proxy.set({ kind: "never-ending" });
  const start = performance.now();
  await assert.rejects(s.client(1000).request("GET", NS_PATH), isA(TimeoutError));
  assert.ok(performance.now() - start >= 950);
});

proxyTest("fault proxy: trickle slows the body down", async (s) => {
  const size = (await (await s.fetch(s.proxy.url + NS_PATH, {
    headers: { authorization: `Bearer ${s.info.adminToken}` },
  })).arrayBuffer()).byteLength;
  const bps = Math.max(200, Math.ceil(size / 0.8)); // about 0.8 s for the body
  s.proxy.set({ kind: "trickle", bytesPerSecond: bps });
  const start = performance.now();
  const ns = (await s.client(5000).request("GET", NS_PATH)) as { kind: string };
  const took = performance.now() - start;
  assert.equal(ns.kind, "Namespace");
  const expected = ((size - Math.floor(bps / 10)) / bps) * 1000; // the last slice needs no wait before it
  assert.ok(took >= expected * 0.9, `${size} bytes at ${bps} B/s took only ${took.toFixed(0)} ms`);
});

proxyTest("fault proxy: times applies a rule to the next N matching requests; match filters by method", async (s) => {
  const client = s.client();
  s.proxy.set({ fault: { kind: "status", status: 503, body: "busy" }, times: 1 });
  await assert.rejects(
    client.request("GET", NS_PATH),
    isA(KubeApiError, (e) => assert.equal((e as KubeApiError).code, 503)),
  );
  assert.equal(((await client.request("GET", NS_PATH)) as { kind: string }).kind, "Namespace");
  assert.equal(s.proxy.stats.faulted, 1);

  s.proxy.set({ fault: { kind: "status", status: 500, body: "no writes" }, match: { method: "post" } });
  assert.equal(((await client.request("GET", NS_PATH)) as { kind: string }).kind, "Namespace");
  await assert.rejects(
    client.request("POST", LEASES, { body: { metadata: { name: unique("never") } } }),
    isA(KubeApiError, (e) => assert.equal((e as KubeApiError).code, 500)),
  );
  assert.equal(s.proxy.stats.faulted, 2);
  assert.equal(s.proxy.stats.byMethod.POST, 1);
  assert.throws(() => s.proxy.set({ kind: "trickle", bytesPerSecond: 0 }), TypeError);
});

test("fault proxy: every request on a kept-alive connection sees the current fault", async (t) => {
  const s = await setup(t);
  if (!s) return;
  const socket = tls.connect({ host: "127.0.0.1", port: s.proxy.port, ca: s.caCert, servername: "localhost" });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
    });
    let received = "";
    socket.on("data", (d: Uint8Array) => (received += new TextDecoder().decode(d)));
    const ask = async (tries = 100) => {
      const from = received.length;
      socket.write(
        `GET ${NS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${s.info.adminToken}\r\nAccept: application/json\r\n\r\n`,
      );
      for (let i = 0; i < tries; i++) {
        const m = /^HTTP\/1\.1 (\d+)[^]*?\r\n\r\n/.exec(received.slice(from));
        const len = m && /content-length: (\d+)/i.exec(m[0]);
        if (m && len && received.length - from >= m[0].length + Number(len[1])) return Number(m[1]);
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`no complete answer; got ${JSON.stringify(received.slice(from, from + 300))}`);
    };
    assert.equal(await ask(), 200);
    s.proxy.set({ kind: "status", status: 503, body: "maintenance" });
    assert.equal(await ask(), 503);
    s.proxy.clear();
    assert.equal(await ask(), 200);
    assert.equal(s.proxy.stats.requests, 3);
    // A blackhole set and cleared while the connection is idle leaves it working.
    s.proxy.set({ kind: "blackhole" });
    s.proxy.clear();
    assert.equal(await ask(), 200);
    // A request that arrives during a blackhole gets no answer.
    s.proxy.set({ kind: "blackhole" });
    await assert.rejects(ask(25), /no complete answer/);
    assert.equal(s.proxy.stats.requests, 5);
    assert.equal(s.proxy.stats.faulted, 2);
  } finally {
    socket.destroy();
    await s.proxy.close();
  }
});

proxyTest("fault proxy: a watch streams through and delivers an event for a new Lease", async (s) => {
  const client = s.client();
  const list = (await client.request("GET", LEASES)) as { metadata: { resourceVersion: string } };
  const res = await client.stream(`${LEASES}?watch=1&resourceVersion=${list.metadata.resourceVersion}`);
  assert.equal(res.status, 200);
  assert.equal(s.proxy.stats.watches, 1);
  const name = unique("fp-watch");
  const seen = readUntil(res.body!, (text) => text.includes(`"name":"${name}"`), 5000);
  await client.request("POST", LEASES, {
    body: { metadata: { name }, spec: { holderIdentity: "x", leaseDurationSeconds: 15 } },
  });
  const text = await seen;
  const line = text.split("\n").find((l) => l.includes(`"name":"${name}"`))!;
  const event = JSON.parse(line) as { type: string; object: { spec: { holderIdentity: string } } };
  assert.equal(event.type, "ADDED");
  assert.equal(event.object.spec.holderIdentity, "x");
});

proxyTest("fault proxy: blackhole freezes an open watch, reset breaks it", async (s) => {
  const client = s.client();
  const watch = async () => {
    const list = (await client.request("GET", LEASES)) as { metadata: { resourceVersion: string } };
    return await client.stream(`${LEASES}?watch=1&resourceVersion=${list.metadata.resourceVersion}`);
  };
  const create = (name: string) =>
    s.client().request("POST", LEASES, {
      body: { metadata: { name }, spec: { holderIdentity: "x", leaseDurationSeconds: 15 } },
    });

  // Blackhole: the open watch stays open but delivers nothing.
  const frozen = await watch();
  s.proxy.set({ fault: { kind: "blackhole" }, match: { watch: true } });
  const name = unique("fp-frozen");
  await create(name); // a plain POST does not match the rule
  await assert.rejects(
    readUntil(frozen.body!, (text) => text.includes(name), 1500),
    /not seen within 1500 ms/,
  );
  s.proxy.clear();

  // Reset: the open watch breaks.
  const broken = await watch();
  s.proxy.set({ kind: "reset" });
  await assert.rejects(readUntil(broken.body!, () => false, 3000), (e: unknown) => {
    assert.ok(!(e instanceof Error && /not seen within/.test(e.message)), `the watch did not break: ${e}`);
    return true;
  });
});

test("fault proxy: close() does not hang on blackholed and never-ending connections", async (t) => {
  const s = await setup(t);
  if (!s) return;
  let closedIn = Infinity;
  const aborts = new AbortController();
  try {
    s.proxy.set({ fault: { kind: "blackhole" }, times: 1 });
    const held = s.client(10_000).request("GET", NS_PATH, { signal: aborts.signal }).catch((e) => e);
    await new Promise((r) => setTimeout(r, 200));
    s.proxy.set({ kind: "never-ending" });
    const res = await s.fetch(s.proxy.url + NS_PATH, { signal: aborts.signal });
    assert.equal(res.status, 200);
    const reading = res.text().catch((e) => e);
    await new Promise((r) => setTimeout(r, 300));
    const start = performance.now();
    await s.proxy.close();
    closedIn = performance.now() - start;
    // Both clients see their connection end.
    const [a, b] = await Promise.all([held, reading]);
    assert.ok(a instanceof NetworkError || a instanceof InvalidResponseError, `held request: ${a}`);
    assert.ok(b instanceof Error, `never-ending body: ${b}`);
  } finally {
    aborts.abort();
    await s.proxy.close();
  }
  assert.ok(closedIn < 2500, `close() took ${closedIn.toFixed(0)} ms`);
});

test("fault proxy: every forwarded write is reported with the times around the server's answer", async (t) => {
  const seen: Exchange[] = [];
  const s = await setup(t, { onExchange: (e) => seen.push(e) });
  if (!s) return;
  try {
    const name = unique("fp-exchange");
    const before = Date.now();
    const created = (await s.client().request("POST", LEASES, {
      body: { metadata: { name }, spec: { holderIdentity: "x", leaseDurationSeconds: 15 } },
    })) as { metadata: { resourceVersion: string } };
    const after = Date.now();
    const post = seen.find((e) => e.method === "POST")!;
    assert.ok(post, "the POST was not reported");
    assert.equal(post.status, 201);
    assert.equal(post.fault, "none");
    assert.ok(before <= post.sentAt && post.sentAt <= post.answeredAt! && post.answeredAt! <= after);
    assert.equal(JSON.parse(post.body!).metadata.resourceVersion, created.metadata.resourceVersion);
  } finally {
    await s.proxy.close();
  }
});

test("fault proxy: lose-response lets the write happen and resets the client without its answer", async (t) => {
  const seen: Exchange[] = [];
  const s = await setup(t, { onExchange: (e) => seen.push(e) });
  if (!s) return;
  try {
    const name = unique("fp-lost");
    s.proxy.set({ fault: { kind: "lose-response" }, match: { method: "POST" }, times: 1 });
    await assert.rejects(
      s.client().request("POST", LEASES, {
        body: { metadata: { name }, spec: { holderIdentity: "lost", leaseDurationSeconds: 15 } },
      }),
      isA(NetworkError),
    );
    const lease = (await s.client().request("GET", `${LEASES}/${name}`)) as { spec: { holderIdentity: string } };
    assert.equal(lease.spec.holderIdentity, "lost", "the write was not applied");
    const post = seen.find((e) => e.method === "POST")!;
    assert.equal(post.status, 201);
    assert.equal(post.fault, "lose-response");
    assert.equal(s.proxy.stats.byFault["lose-response"], 1);
  } finally {
    await s.proxy.close();
  }
});

proxyTest(
  "fault proxy: end-watch answers a watch with a stream that ends at once, counted as a faulted watch",
  async (s) => {
    s.proxy.set({ fault: { kind: "end-watch" }, match: { watch: true } });
    const res = await s.client().stream(`${LEASES}?watch=1`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "");
    assert.equal(s.proxy.stats.faultedWatches, 1);
    assert.equal(s.proxy.stats.byFault["end-watch watch"], 1);
    // A plain GET does not match.
    await s.client().request("GET", LEASES);
    assert.equal(s.proxy.stats.faulted, 1);
  },
);

proxyTest("fault proxy: injectWatchEvent writes an event into an open watch; dropWatches breaks it", async (s) => {
  const client = s.client();
  const list = (await client.request("GET", LEASES)) as { metadata: { resourceVersion: string } };
  const res = await client.stream(`${LEASES}?watch=1&resourceVersion=${list.metadata.resourceVersion}`);
  const body = res.body!;
  const marker = unique("fp-injected");
  let n = 0;
  for (let i = 0; i < 100 && n === 0; i++) {
    n = s.proxy.injectWatchEvent(
      JSON.stringify({ type: "MODIFIED", object: { kind: "Lease", metadata: { name: marker } } }),
    );
    if (n === 0) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(n, 1);
  assert.equal(s.proxy.stats.injected, 1);
  const reader = body.getReader();
  let text = "";
  while (!text.includes(marker)) {
    const r = await reader.read();
    assert.ok(!r.done, "the watch ended before the injected event");
    text += new TextDecoder().decode(r.value);
  }
  assert.equal(JSON.parse(text.trim().split("\n").pop()!).object.metadata.name, marker);
  assert.equal(s.proxy.dropWatches(), 1);
  await assert.rejects(
    (async () => {
      for (;;) if ((await reader.read()).done) throw new Error("ended cleanly");
    })(),
    (e: unknown) => e instanceof Error && !/ended cleanly/.test(e.message),
  );
  assert.equal(s.proxy.stats.dropped, 1);
});

test("tcp proxy: freeze silences established connections without closing them; new ones pass; heal resumes", async (t) => {
  const info = await apiServer();
  if (!info) return t.skip("real API server not available (see the message above)");
  const relay = await startTcpProxy({ target: `127.0.0.1:${info.port}` });
  const ca = readFileSync(info.caFile, "utf8");
  const get = (agent: https.Agent) =>
    new Promise<number>((resolve, reject) => {
      const req = https.request(`https://127.0.0.1:${relay.port}/readyz`, {
        ca,
        agent,
        headers: { authorization: `Bearer ${info.adminToken}` },
      }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode!));
      });
      req.on("error", reject);
      req.end();
    });
  const old = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const fresh = new https.Agent({ keepAlive: false });
  try {
    assert.equal(await get(old), 200);
    assert.equal(relay.connections.length, 1);
    assert.equal(relay.freeze(), 1);
    let settled = false;
    const stuck = get(old).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(settled, false, "a request on a frozen connection was answered or failed");
    assert.ok(relay.connections[0].stalledAt !== undefined);
    assert.equal(relay.connections[0].closedAt, undefined);
    assert.equal(await get(fresh), 200, "a new connection does not pass while others are frozen");
    relay.heal();
    assert.equal(await stuck, 200);
  } finally {
    old.destroy();
    fresh.destroy();
    await relay.close();
  }
});

proxyTest("fault proxy: watch-events answers a watch with the given events and holds it open", async (s) => {
  const line = JSON.stringify({ type: "MODIFIED", object: { kind: "Lease", spec: { holderIdentity: 42 } } });
  s.proxy.set({ fault: { kind: "watch-events", events: [line] }, match: { watch: true } });
  const res = await s.client().stream(`${LEASES}?watch=1`);
  assert.equal(res.status, 200);
  const text = await readUntil(res.body!, (t) => t.includes("\n"), 3000);
  assert.equal(text.trim(), line);
  assert.equal(s.proxy.stats.byFault["watch-events watch"], 1);
});
