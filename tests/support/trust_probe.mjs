// Runs in a child process so the runtime's own trust settings (DENO_CERT,
// NODE_EXTRA_CA_CERTS) can be set for it: imports leasehold from <module>,
// builds its fetch with the given settings and prints one JSON line with the
// outcome of a GET to <url>.
//   <runtime> trust_probe.mjs <module> <url> '<json TlsOptions with file names>'
import { readFileSync } from "node:fs";
import process from "node:process";

const [mod, url, json] = process.argv.slice(2);
const opts = JSON.parse(json);
const tls = {};
for (const [k, v] of Object.entries(opts)) tls[k] = typeof v === "string" ? readFileSync(v, "utf8") : v;
const { createFetch } = await import(mod);
try {
  const f = await createFetch(tls);
  const res = await f(url, { signal: AbortSignal.timeout(10000) });
  const body = await res.json();
  console.log(JSON.stringify({ ok: true, status: res.status, clientCn: body?.metadata?.annotations?.clientCn ?? "" }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e) }));
}
process.exit(0);
