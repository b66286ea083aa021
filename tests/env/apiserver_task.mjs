// `deno task apiserver`: builds and starts the test API server in the foreground,
// prints its kubeconfig (admin) and keeps it running until Ctrl-C.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { buildHarness, startHarness } from "./testenv.mjs";

buildHarness();
const dir = process.argv[2] ?? await mkdtemp(join(tmpdir(), "leasehold-apiserver-"));
const h = await startHarness(dir);
console.log(`kube-apiserver ready at ${h.url} after ${h.readyMs} ms`);
console.log(`kubeconfig (admin): ${h.kubeconfig}`);
console.log(`  KUBECONFIG=${h.kubeconfig} kubectl get leases -A`);
console.log("Ctrl-C stops it; state stays in " + dir);
const stop = async () => {
  await h.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
await h.exited;
