/**
 * Where the API server is and who we are to it: the in-cluster service account,
 * a kubeconfig, or explicit settings. Files are read with `node:fs`, which Deno,
 * Bun and Node all provide, imported only when a file is read, so the module
 * loads without Node compatibility; edge runtimes pass explicit settings instead.
 *
 * @module
 */

import type { Clock } from "./clock.ts";
import { ConfigError } from "./errors.ts";
import { KubeClient } from "./kube_client.ts";
import { KubeLeaseApi } from "./lease_api.ts";
import type { Logger } from "./log.ts";
import { createFetch } from "./transport.ts";
import { invalidLeaseName, invalidNamespace } from "./lease.ts";
import { type ClusterConfig, FileTokenSource, readFile, readPem } from "./cluster_config.ts";

export { type ClusterConfig, FileTokenSource, staticToken } from "./cluster_config.ts";
export { kubeconfigConfig, MAX_KUBECONFIG_BYTES, splitKubeconfigPaths } from "./kubeconfig.ts";
export { parseKubeconfigText } from "./kubeconfig_parse.ts";

/** The default service-account directory of a pod. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** Environment lookup, injectable for tests. */
export type EnvLookup = (name: string) => string | undefined;

/**
 * Reads an environment variable on Deno, Bun and Node; `undefined` where there is none.
 *
 * @example Usage
 * ```ts
 * import { getEnv } from "@leasehold/leasehold";
 * console.log(typeof getEnv("HOME"));
 * ```
 */
export function getEnv(name: string): string | undefined {
  const g = globalThis as {
    Deno?: { env: { get(n: string): string | undefined } };
    process?: { env: Record<string, string | undefined> };
  };
  try {
    if (g.Deno) return g.Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
  return g.process?.env?.[name];
}

/**
 * The pod's own configuration: `KUBERNETES_SERVICE_HOST`/`PORT` and the
 * service-account directory (`token`, `ca.crt`, `namespace`).
 *
 * @throws {ConfigError} naming what is missing and how to fix it
 * @example Usage
 * ```ts ignore
 * import { inClusterConfig } from "@leasehold/leasehold";
 * const config = await inClusterConfig();
 * console.log(config.server, config.namespace);
 * ```
 */
export async function inClusterConfig(
  options: { serviceAccountDir?: string; env?: EnvLookup; clock?: Clock } = {},
): Promise<ClusterConfig> {
  const env = options.env ?? getEnv;
  const dir = (options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR).replace(/\/+$/, "");
  const host = env("KUBERNETES_SERVICE_HOST");
  const port = env("KUBERNETES_SERVICE_PORT");
  if (!host || !port) {
    throw new ConfigError(
      "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, so this is not running in a pod; outside a cluster use --kubeconfig or KUBECONFIG",
    );
  }
  if (!/^\d+$/.test(port)) {
    throw new ConfigError(`KUBERNETES_SERVICE_PORT is ${JSON.stringify(port)}, not a port number`);
  }
  const caCert = await readPem(
    `${dir}/ca.crt`,
    "the cluster CA",
    "the service-account volume must contain ca.crt (or set --service-account-dir)",
  );
  const tokenSource = new FileTokenSource(`${dir}/token`, { clock: options.clock });
  await tokenSource.token(); // fail now, with a clear message, if it is missing
  let namespace: string | undefined;
  try {
    namespace = (await readFile(`${dir}/namespace`, "utf8")).trim() || undefined;
  } catch {
    namespace = undefined;
  }
  const h = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return { server: `https://${h}:${port}`, namespace, caCert, tokenSource, source: `in-cluster (${dir})` };
}

/** What to elect on: the Lease name and namespace. */
export interface LeaseTarget {
  /** Lease name. */
  name: string;
  /** Namespace; defaults to the config's namespace, else `default`. */
  namespace?: string;
  /** Per-request timeout in ms (client-go: max(1s, renewDeadline/2)). @default 5000 */
  timeoutMs?: number;
  /** Clock for timeouts and token refresh. */
  clock?: Clock;
  /** Receives the warning logged when TLS verification is off. */
  logger?: Logger;
  /** A watch silent for this long is ended and reopened. @default 90000 (see DEFAULT_WATCH_IDLE_TIMEOUT_MS) */
  watchIdleTimeoutMs?: number;
}

/**
 * Builds the {@linkcode KubeLeaseApi} for a Lease from a {@linkcode ClusterConfig},
 * with the runtime's TLS adapter.
 *
 * @throws {ConfigError} for an invalid name or namespace
 * @example Usage
 * ```ts
 * import { createLeaseApi } from "@leasehold/leasehold";
 * const api = await createLeaseApi({ server: "https://127.0.0.1:6443", source: "explicit" }, { name: "my-lease" });
 * console.log(api.namespace); // "default"
 * ```
 */
export async function createLeaseApi(config: ClusterConfig, target: LeaseTarget): Promise<KubeLeaseApi> {
  const namespace = target.namespace || config.namespace || "default";
  const badName = invalidLeaseName(target.name);
  if (badName) throw new ConfigError(`lease name ${JSON.stringify(target.name)} ${badName}`);
  const badNs = invalidNamespace(namespace);
  if (badNs) throw new ConfigError(`namespace ${JSON.stringify(namespace)} ${badNs}`);
  let url: URL;
  try {
    url = new URL(config.server);
  } catch {
    throw new ConfigError(`server ${JSON.stringify(config.server)} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ConfigError(`server ${config.server} must be an https:// URL`);
  }
  const client = new KubeClient({
    server: config.server,
    fetch: await createFetch(config, { logger: target.logger }),
    tokenSource: config.tokenSource,
    timeoutMs: target.timeoutMs,
    clock: target.clock,
  });
  return new KubeLeaseApi(client, namespace, target.name, { watchIdleTimeoutMs: target.watchIdleTimeoutMs });
}
