/**
 * HTTPS with the cluster's CA (and client certificates) on each runtime:
 * Deno (`Deno.createHttpClient`), Bun (`fetch`'s `tls` option) and Node
 * (`node:https`). The runtime is picked by feature test; each adapter is
 * imported only on its own runtime.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";
import type { ResettableFetch } from "./kube_client.ts";
import type { Logger } from "./log.ts";

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

/** Options of {@linkcode createFetch}. */
export interface CreateFetchOptions {
  /** Receives the one warning logged when server certificate checks are off. */
  logger?: Logger;
}

/**
 * A `fetch` for talking to the API server on the current runtime: the cluster
 * CA (`caCert`) is the only trust anchor, the client certificate is presented,
 * redirects are never followed, and `reset()` drops pooled connections (called
 * by `KubeClient` after a timeout, so a connection that went silent
 * without closing is not used again).
 *
 * - Deno: `node:https` (`ca` replaces the default roots; `Deno.createHttpClient`
 *   would only add to them, and to `DENO_CERT`), a connection per request: its
 *   `node:http` re-sends a failed request on a new connection, even an aborted
 *   PUT, and its `node:http2` (native nghttp2 behind a libuv layer in Deno 2.9)
 *   crashed a long-running process with `free(): invalid pointer`. Without any
 *   TLS setting, Deno uses a replaceable `Deno.HttpClient`.
 * - Node: `node:https` with a keep-alive agent (`ca` replaces the default roots).
 * - Bun: `fetch` with its `tls` option.
 * - Other runtimes (edge workers): the platform `fetch`; a CA, client
 *   certificate or `insecureSkipTlsVerify` is a {@linkcode ConfigError} there.
 *
 * `insecureSkipTlsVerify` together with a CA is refused, as kubectl does; on its
 * own it keeps the client certificate and logs one warning.
 *
 * @throws {ConfigError} for settings that cannot be honoured
 * @example Usage
 * ```ts
 * import { createFetch } from "@leasehold/leasehold";
 * const f = await createFetch({});
 * console.log(typeof f); // "function"
 * ```
 */
export async function createFetch(tls: TlsOptions, options: CreateFetchOptions = {}): Promise<ResettableFetch> {
  if (tls.insecureSkipTlsVerify && tls.caCert) {
    throw new ConfigError(
      "insecure-skip-tls-verify is set together with a certificate authority; kubectl refuses this too: remove insecure-skip-tls-verify (the CA is the safe choice) or the certificate-authority setting",
    );
  }
  if (tls.insecureSkipTlsVerify) {
    options.logger?.warn(
      "TLS verification of the API server is off (insecure-skip-tls-verify): anyone on the network path can impersonate it and grant or steal leadership; set certificate-authority instead",
      {},
    );
  }
  const custom = !!(tls.caCert || tls.clientCert || tls.insecureSkipTlsVerify);
  switch (runtimeKey()) {
    case "deno":
      // No pooling: Deno's node:http silently re-sends a request whose reused connection failed.
      return custom
        ? (await import("./transport_node.ts")).nodeFetch(tls, { keepAlive: false })
        : (await import("./transport_deno.ts")).denoFetch();
    case "bun":
      return (await import("./transport_bun.ts")).bunFetch(tls);
    case "node":
      return (await import("./transport_node.ts")).nodeFetch(tls);
    default: {
      if (custom) {
        throw new ConfigError(
          "this runtime cannot trust a custom CA or send client certificates: pass a `fetch` that can, or use a server certificate the runtime already trusts",
        );
      }
      return (input, init) => fetch(input, { ...init, redirect: "manual" });
    }
  }
}
