/**
 * The shapes a {@linkcode KubeClient} works with: the `fetch` it sends through,
 * the token source, its options and one request's options.
 *
 * @module
 */

import type { Clock } from "./clock.ts";

/** A `fetch`-compatible function. */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * A `fetch` whose pooled connections can be dropped. {@linkcode KubeClient}
 * calls `reset` after a request timed out or a watch went silent, so the next
 * request opens a fresh connection instead of queueing on a dead one.
 *
 * @example Usage
 * ```ts
 * import type { ResettableFetch } from "@leasehold/leasehold";
 * const f: ResettableFetch = Object.assign((i: string | URL | Request, init?: RequestInit) => fetch(i, init), {
 *   reset() {},
 * });
 * console.log(typeof f.reset); // "function"
 * ```
 */
export interface ResettableFetch extends FetchLike {
  /** Drops pooled connections; requests made afterwards use new ones. */
  reset?(): void;
}

/** Supplies the bearer token; `invalidate` is called after a 401 so the next call re-reads it. */
export interface TokenSource {
  /** The current token, or `undefined` for no `Authorization` header. */
  token(): Promise<string | undefined>;
  /** Forget any cached token. Returns true if a re-read may give a different one. */
  invalidate?(): Promise<boolean> | boolean;
}

/**
 * Why `token` cannot be sent as a bearer token, or `undefined` when it can. The
 * answer never contains the token itself, so it is safe to log.
 *
 * @example Usage
 * ```ts
 * import { invalidToken } from "@leasehold/leasehold";
 * console.log(invalidToken("abc.def")); // undefined
 * console.log(invalidToken("abc\ndef")); // "has a line break at character 4"
 * ```
 */
export function invalidToken(token: string): string | undefined {
  if (token === "") return "is empty";
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    if (c >= 0x21 && c <= 0x7e) continue;
    const what = c === 0x0a || c === 0x0d
      ? "a line break"
      : c === 0x20 || c === 0x09
      ? "white space"
      : c < 0x20 || c === 0x7f
      ? "a control character"
      : "a non-ASCII character";
    return `has ${what} at character ${i + 1}`;
  }
  return undefined;
}

/** Options of {@linkcode KubeClient}. */
export interface KubeClientOptions {
  /** API server base URL, e.g. `https://10.96.0.1:443`. */
  server: string;
  /** `fetch` to use, e.g. one with the cluster CA from `createFetch`. @default globalThis.fetch */
  fetch?: ResettableFetch;
  /** Bearer token source. */
  tokenSource?: TokenSource;
  /** Per-request timeout in ms, covering headers and body. @default 5000 */
  timeoutMs?: number;
  /** Largest response body accepted, in bytes. @default 1048576 */
  maxBodyBytes?: number;
  /** Clock for timeouts. @default systemClock */
  clock?: Clock;
}

/** What a request is for, used to explain a 403 or a 404. */
export interface RequestIntent {
  /** RBAC verb: get, create, update, watch, list. */
  verb: string;
  /** Resource with group, e.g. `leases.coordination.k8s.io`. */
  resource: string;
  /** Namespace of the object. */
  namespace?: string;
  /** Object name. */
  name?: string;
  /** The shipped manifest whose Role grants this, named in a 403. @default "deploy/rbac.yaml" */
  roleFile?: string;
  /** False when the Role cannot list the object in `resourceNames` (it covers many names). @default true */
  byName?: boolean;
}

/** Options of one request. */
export interface RequestOptions {
  /** JSON body. */
  body?: unknown;
  /** Cancels the request; its reason is rethrown as is. */
  signal?: AbortSignal;
  /** Overrides the client's timeout (ms). */
  timeoutMs?: number;
  /** For error messages. */
  intent?: RequestIntent;
}
