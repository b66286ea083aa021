/**
 * Bun adapter: Bun's `fetch` with its `tls` option.
 *
 * @module
 */

import type { FetchLike } from "./kube_client.ts";
import type { TlsOptions } from "./transport.ts";

/**
 * A `fetch` for Bun that trusts `caCert` and presents the client certificate.
 *
 * @example Usage
 * ```ts ignore
 * import { bunFetch } from "./transport_bun.ts";
 * const f = bunFetch({ caCert: "-----BEGIN CERTIFICATE-----..." });
 * ```
 */
export function bunFetch(tls: TlsOptions): FetchLike {
  const options = {
    ca: tls.caCert,
    cert: tls.clientCert,
    key: tls.clientKey,
    rejectUnauthorized: !tls.insecureSkipTlsVerify,
  };
  return (input, init) => fetch(input, { ...init, tls: options } as RequestInit);
}
