// Measures the gap between watch events (bookmarks) on an idle Lease watch against the real API server.
import { apiServer, freshNamespace, podIdentity } from "./env/testenv.mjs";
import { createLeaseApi, inClusterConfig } from "../mod.ts";
const info = await apiServer();
const ns = await freshNamespace(info, "bm");
const id = await podIdentity(info, ns, "bm");
const config = await inClusterConfig({ serviceAccountDir: id.dir, env: (k: string) => id.env[k] });
const api = await createLeaseApi(config, { name: "bm", timeoutMs: 5000 });
await api.create({ metadata: {}, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } });
const lease = await api.get();
const ctl = new AbortController();
setTimeout(() => ctl.abort(), 200_000);
let last = performance.now();
const t0 = last;
try {
  for await (const ev of api.watch!(lease!.metadata.resourceVersion, ctl.signal)) {
    const now = performance.now();
    console.log(`${((now - t0) / 1000).toFixed(1)}s ${ev.type} gap ${((now - last) / 1000).toFixed(1)}s`);
    last = now;
  }
  console.log("watch ended by server at", ((performance.now() - t0) / 1000).toFixed(1));
} catch (e) {
  console.log("ended:", (e as Error).message);
}
Deno.exit(0);
