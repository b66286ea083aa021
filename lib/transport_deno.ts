/**
 * Deno adapter for servers the default roots already trust (no cluster CA, no
 * client certificate): `fetch` bound to a `Deno.HttpClient` that is replaced
 * when asked, so a dead HTTP/2 connection is not reused. With a cluster CA,
 * Deno uses the `node:https` adapter instead (see transport.ts).
 *
 * @module
 */

import type { ResettableFetch } from "./kube_client.ts";

interface DenoHttp {
  createHttpClient?(o: Record<string, unknown>): { close(): void };
}

/**
 * A `fetch` for Deno over a replaceable `Deno.HttpClient`; `reset()` closes the
 * client and its connections, and later requests use a new one.
 *
 * @example Usage
 * ```ts ignore
 * import { denoFetch } from "./transport_deno.ts";
 * const f = denoFetch();
 * ```
 */
export function denoFetch(): ResettableFetch {
  const deno = (globalThis as unknown as { Deno: DenoHttp }).Deno;
  if (typeof deno.createHttpClient !== "function") {
    return (input, init) => fetch(input, { ...init, redirect: "manual" });
  }
  let client = deno.createHttpClient({});
  const f = (input: string | URL | Request, init?: RequestInit) =>
    fetch(input, { ...init, redirect: "manual", client } as RequestInit);
  return Object.assign(f, {
    reset() {
      const old = client;
      client = deno.createHttpClient!({});
      try {
        old.close();
      } catch { /* already closed */ }
    },
  });
}
