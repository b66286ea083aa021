/**
 * Bun adapter: Bun's `fetch` with its `tls` option (`ca` replaces the default
 * roots, so the cluster CA is the only trust anchor). Redirects are never followed.
 *
 * @module
 */

import type { ResettableFetch } from "./kube_client.ts";
import type { TlsOptions } from "./transport.ts";

/**
 * A `fetch` for Bun that trusts `caCert` alone and presents the client
 * certificate. Bun closes a connection whose request was aborted, so a timed-out
 * request is not followed by others on the same dead connection; `reset()` makes
 * the next request open a new connection.
 *
 * @example Usage
 * ```ts ignore
 * import { bunFetch } from "./transport_bun.ts";
 * const f = bunFetch({ caCert: "-----BEGIN CERTIFICATE-----..." });
 * ```
 */
export function bunFetch(tls: TlsOptions): ResettableFetch {
  const options = {
    ca: tls.caCert,
    cert: tls.clientCert,
    key: tls.clientKey,
    rejectUnauthorized: !tls.insecureSkipTlsVerify,
  };
  let fresh = false;
  const f = (input: string | URL | Request, init?: RequestInit) => {
    const keepalive = !fresh;
    fresh = false;
    return fetch(input, { ...init, redirect: "manual", tls: options, keepalive } as RequestInit);
  };
  return Object.assign(f, {
    reset() {
      fresh = true;
    },
  });
}
