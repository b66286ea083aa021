// The empty program that the memory benchmark compares leasehold against: the
// runtime, one HTTPS GET to the API server with its CA (so TLS is loaded, as in
// a replica), then an idle timer. Plain JavaScript so Deno, Bun and Node run the
// same file. Env: BENCH_URL (a URL on the API server), BENCH_CA (the CA file).
import { readFileSync } from "node:fs";
import process from "node:process";

const url = process.env.BENCH_URL;
const ca = readFileSync(process.env.BENCH_CA, "utf8");
const Deno = globalThis.Deno;
let status;
if (Deno) {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  const res = await fetch(url, { client });
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
setInterval(() => {}, 1000);
process.stderr.write(JSON.stringify({ msg: "ready", status }) + "\n");
