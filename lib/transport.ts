/**
 * HTTPS with the cluster's CA (and client certificates) on each runtime:
 * Deno (`Deno.createHttpClient`), Bun (`fetch`'s `tls` option) and Node
 * (`node:https`). The runtime is picked by feature test; each adapter is
 * imported only on its own runtime.
 *
 * @module
 */

import type { FetchLike } from "./kube_client.ts";

/** TLS settings for talking to the API server. */
export interface TlsOptions {
  /** PEM of the CA(s) that signed the API server's certificate. */
  caCert?: string;
  /** PEM client certificate (kubeconfig `client-certificate(-data)`). */
  clientCert?: string;
  /** PEM client key. */
  clientKey?: string;
  /** Skip server certificate checks (kubeconfig `insecure-skip-tls-verify`). Never in production. */
  insecureSkipTlsVerify?: boolean;
}

/** The runtime leasehold is running on. */
export type RuntimeKey = "deno" | "bun" | "node" | "other";

/**
 * Detects the runtime by its globals.
 *
 * @example Usage
 * ```ts
 * import { runtimeKey } from "@leasehold/leasehold";
 * console.log(["deno", "bun", "node", "other"].includes(runtimeKey())); // true
 * ```
 */
export function runtimeKey(): RuntimeKey {
  const g = globalThis as {
    Deno?: { version?: { deno?: string } };
    Bun?: unknown;
    process?: { versions?: { node?: string } };
  };
  if (g.Deno?.version?.deno) return "deno";
  if (g.Bun !== undefined) return "bun";
  if (g.process?.versions?.node) return "node";
  return "other";
}

/**
 * A `fetch` that trusts `caCert` and presents the client certificate, on the
 * current runtime. With no TLS settings it is the global `fetch`. On runtimes
 * without a way to set a CA (edge workers) a custom CA is an error.
 *
 * @example Usage
 * ```ts
 * import { createFetch } from "@leasehold/leasehold";
 * const f = await createFetch({});
 * console.log(typeof f); // "function"
 * ```
 */
export async function createFetch(tls: TlsOptions): Promise<FetchLike> {
  const custom = !!(tls.caCert || tls.clientCert || tls.insecureSkipTlsVerify);
  if (!custom) return (input, init) => fetch(input, init);
  switch (runtimeKey()) {
    case "deno":
      return (await import("./transport_deno.ts")).denoFetch(tls);
    case "bun":
      return (await import("./transport_bun.ts")).bunFetch(tls);
    case "node":
      return (await import("./transport_node.ts")).nodeFetch(tls);
    default: {
      const { ConfigError } = await import("./errors.ts");
      throw new ConfigError(
        "this runtime cannot trust a custom CA or send client certificates: pass a `fetch` that can, or use a server certificate the runtime already trusts",
      );
    }
  }
}
