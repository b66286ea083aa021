/**
 * Deno adapter: a `fetch` bound to a `Deno.HttpClient` with the cluster CA.
 *
 * @module
 */

import type { FetchLike } from "./kube_client.ts";
import type { TlsOptions } from "./transport.ts";

interface DenoHttp {
  createHttpClient(o: { caCerts?: string[]; cert?: string; key?: string }): unknown;
}

/**
 * A `fetch` for Deno that trusts `caCert` and presents the client certificate.
 *
 * @example Usage
 * ```ts ignore
 * import { denoFetch } from "./transport_deno.ts";
 * const f = denoFetch({ caCert: await Deno.readTextFile("ca.crt") });
 * ```
 */
export function denoFetch(tls: TlsOptions): FetchLike {
  const deno = (globalThis as unknown as { Deno: DenoHttp }).Deno;
  if (tls.insecureSkipTlsVerify && !tls.caCert) {
    // Deno has no per-client switch for this; --unsafely-ignore-certificate-errors is global.
    return (input, init) => fetch(input, init);
  }
  const client = deno.createHttpClient({
    caCerts: tls.caCert ? [tls.caCert] : undefined,
    cert: tls.clientCert,
    key: tls.clientKey,
  });
  return (input, init) => fetch(input, { ...init, client } as RequestInit);
}
