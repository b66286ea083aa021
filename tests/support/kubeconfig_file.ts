// A kubeconfig file for a test server: one cluster, a static token, namespace "default".
import { writeFile } from "node:fs/promises";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Writes a kubeconfig naming `server` (token "t", namespace "default") into a new temporary directory; returns its path. */
export async function kubeconfigFor(server: string, prefix = "leasehold-kubeconfig-"): Promise<string> {
  const path = join(await mkdtemp(join(tmpdir(), prefix)), "kubeconfig");
  await writeFile(
    path,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "c", cluster: { server } }],
      users: [{ name: "u", user: { token: "t" } }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u", namespace: "default" } }],
      "current-context": "x",
    }),
  );
  return path;
}
