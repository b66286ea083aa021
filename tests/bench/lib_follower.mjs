// An idle follower through the library API alone, without the entrypoint (no
// flag parsing, HTTP server or child-process support), for the memory benchmark.
// Plain JavaScript so Deno, Bun and Node run the same file. Env: BENCH_LIB (file
// URL of mod.ts, or of the Node build's mod.js), BENCH_SA_DIR, BENCH_LEASE,
// BENCH_IDENTITY, plus KUBERNETES_SERVICE_HOST/PORT.
import process from "node:process";

const lib = await import(process.env.BENCH_LIB);
const config = await lib.inClusterConfig({ serviceAccountDir: process.env.BENCH_SA_DIR });
const lease = await lib.createLeaseApi(config, { name: process.env.BENCH_LEASE });
const elector = new lib.LeaderElector({
  lease,
  identity: process.env.BENCH_IDENTITY,
  onNewLeader: (leader) => process.stderr.write(JSON.stringify({ msg: "new leader", leader }) + "\n"),
});
await elector.run();
