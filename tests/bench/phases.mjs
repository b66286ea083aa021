// One process of the start-up phase benchmark (tests/bench/phases.ts): it walks
// through what a replica does at start, one phase at a time, and writes after
// each phase a JSON line on stderr with the wall-clock time (epoch ms, to the
// µs) and the resident set size, so that the time and memory of each phase can
// be told apart. Plain JavaScript so Deno, Bun and Node run the same file; it
// has no static import, so its first line runs right after the runtime is up.
//
// Modes (BENCH_MODE):
//   empty     the empty program of the memory benchmark: one HTTPS GET with the CA, then idle
//   builtins  imports the node: modules the entrypoint uses, one after another
//   steps     the entrypoint's start-up taken apart: import lib/cli, read the
//             in-cluster config, parse the CA, create the client, GET the Lease,
//             open the watch, idle
//   lib       as steps, through mod (the library alone) and without the CA parse
//   main      the real entrypoint: lib/cli main(), marks at its log lines
// Env: BENCH_CLI and BENCH_LIB (URLs of lib/cli and mod), BENCH_URL and
// BENCH_CA (empty), BENCH_SA_DIR, BENCH_LEASE, BENCH_IDENTITY, BENCH_IDLE_MS,
// plus KUBERNETES_SERVICE_HOST/PORT.

const now = () => performance.timeOrigin + performance.now();
const t0 = now();
const bootMs = performance.now();
const D = globalThis.Deno;
const env = (k) => (D ? D.env.get(k) : globalThis.process.env[k]);
const mem = () => (D ? D.memoryUsage() : globalThis.process.memoryUsage());
const out = (o) => {
  const line = JSON.stringify(o) + "\n";
  if (D) D.stderr.writeSync(new TextEncoder().encode(line));
  else globalThis.process.stderr.write(line);
};
const mark = (phase, extra = {}) => {
  const m = mem();
  out({ mark: phase, t: now(), rss: m.rss, heap: m.heapUsed, ...extra });
};
out({ mark: "start", t: t0, bootMs, rss: mem().rss, heap: mem().heapUsed });

const mode = env("BENCH_MODE") ?? "steps";
const idleMs = Number(env("BENCH_IDLE_MS") ?? "3000");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function gcMark() {
  await sleep(idleMs);
  mark("idle");
  // A full collection where the runtime lets us ask for one (Node --expose-gc, Deno --v8-flags=--expose-gc, Bun).
  const gc = globalThis.gc ?? (globalThis.Bun ? () => globalThis.Bun.gc(true) : undefined);
  if (gc) {
    gc();
    await sleep(200);
    mark("idle after gc");
  }
}

if (mode === "empty") {
  const fs = await import("node:fs");
  const ca = fs.readFileSync(env("BENCH_CA"), "utf8");
  const url = env("BENCH_URL");
  let status;
  if (D) {
    const res = await fetch(url, { client: D.createHttpClient({ caCerts: [ca] }) });
    await res.arrayBuffer();
    status = res.status;
  } else if (globalThis.Bun) {
    const res = await fetch(url, { tls: { ca } });
    await res.arrayBuffer();
    status = res.status;
  } else {
    const https = await import("node:https");
    const agent = new https.Agent({ ca, keepAlive: true });
    status = await new Promise((resolve, reject) => {
      https.get(url, { agent }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      }).on("error", reject);
    });
  }
  mark("first answer", { status });
  setInterval(() => {}, 1000);
  await gcMark();
} else if (mode === "builtins") {
  for (const m of ["process", "os", "url", "fs", "fs/promises", "crypto", "stream", "http", "https", "child_process"]) {
    await import(`node:${m}`);
    mark(`node:${m}`);
  }
} else if (mode === "steps" || mode === "lib") {
  if (mode === "steps") {
    // The node: modules lib/cli imports, first, so that the next phase is the project's own code.
    for (const m of ["process", "os", "fs", "crypto"]) await import(`node:${m}`);
    mark("node: modules of lib/cli");
  }
  const cli = mode === "steps" ? await import(env("BENCH_CLI")) : undefined;
  const lib = await import(env("BENCH_LIB"));
  mark(mode === "steps" ? "import lib/cli" : "import mod");
  const config = await lib.inClusterConfig({ serviceAccountDir: env("BENCH_SA_DIR") });
  mark("config read");
  if (cli) {
    const { X509Certificate } = await import("node:crypto");
    for (const b of config.caCert.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)) {
      new X509Certificate(b);
    }
    mark("CA parsed");
  }
  const lease = await lib.createLeaseApi(config, { name: env("BENCH_LEASE") });
  mark("client created");
  const first = await lease.get();
  mark("first answer", { holder: first?.spec?.holderIdentity });
  const stop = new AbortController();
  // Without a resourceVersion the server answers at once with the Lease as ADDED.
  for await (const ev of lease.watch(undefined, stop.signal)) {
    mark("watch answered", { type: ev.type });
    break;
  }
  // A follower keeps its watch open: reopen it and stay idle.
  const idle = new AbortController();
  const watching = (async () => {
    for await (const _ of lease.watch(first?.metadata?.resourceVersion, idle.signal)) { /* idle */ }
  })().catch(() => {});
  setInterval(() => {}, 1000);
  await gcMark();
  idle.abort();
  await watching;
} else if (mode === "main") {
  const cli = await import(env("BENCH_CLI"));
  mark("import lib/cli");
  const args = ["--lease-name", env("BENCH_LEASE"), "--identity", env("BENCH_IDENTITY")];
  args.push("--service-account-dir", env("BENCH_SA_DIR"));
  let answered;
  const seen = new Promise((r) => (answered = r));
  const stop = new AbortController();
  const run = cli.main(args, {
    handleSignals: false,
    signal: stop.signal,
    write: (line) => {
      const msg = JSON.parse(line).msg;
      if (msg === "starting") mark("starting");
      if (msg === "new leader") {
        mark("first answer");
        answered();
      }
    },
  });
  await seen;
  await gcMark();
  stop.abort();
  await run;
} else {
  throw new Error(`unknown BENCH_MODE ${mode}`);
}
mark("end");
if (D) D.exit(0);
else globalThis.process.exit(0);
