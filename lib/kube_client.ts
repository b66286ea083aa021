/**
 * A minimal Kubernetes REST client over `fetch`: base URL, bearer token,
 * per-request timeout, bounded bodies, and Kubernetes `Status` bodies turned
 * into {@linkcode KubeApiError}s whose messages name the fix.
 *
 * @module
 */

import { StreamResponse } from "./node_response.ts";
import { type Clock, systemClock } from "./clock.ts";
import { linkSignals } from "./signal.ts";
import {
  ConfigError,
  InvalidResponseError,
  KubeApiError,
  NetworkError,
  type StatusReason,
  TimeoutError,
} from "./errors.ts";

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

const REASONS: Record<number, StatusReason> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  409: "Conflict",
  410: "Gone",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

/** Longest wait honoured from `Retry-After` or `details.retryAfterSeconds`, in seconds. */
export const MAX_RETRY_AFTER_SECONDS = 60;

/**
 * The server's requested wait in whole seconds, from a `Retry-After` header
 * (delay-seconds or HTTP-date; a date is measured against the response's `Date`
 * header when there is one, else against `nowMs`) or a Status body's
 * `details.retryAfterSeconds`. Anything that is not a finite, non-negative
 * number is ignored (`undefined`); large values are clamped to
 * {@linkcode MAX_RETRY_AFTER_SECONDS}.
 *
 * @example Usage
 * ```ts
 * import { parseRetryAfter } from "@leasehold/leasehold";
 * console.log(parseRetryAfter(undefined, "3")); // 3
 * console.log(parseRetryAfter(undefined, "soon")); // undefined
 * console.log(parseRetryAfter(1e9, null)); // 60
 * ```
 */
export function parseRetryAfter(
  statusSeconds: unknown,
  header: string | null | undefined,
  dateHeader?: string | null,
  nowMs: number = Date.now(),
): number | undefined {
  const clamp = (n: number) => Math.min(Math.ceil(n), MAX_RETRY_AFTER_SECONDS);
  if (typeof statusSeconds === "number" && Number.isFinite(statusSeconds) && statusSeconds >= 0) {
    return clamp(statusSeconds);
  }
  const h = header?.trim();
  if (!h) return undefined;
  if (/^\d+$/.test(h)) return clamp(Number(h));
  // HTTP-date: IMF-fixdate or the obsolete forms Date.parse understands; must name a weekday or month.
  if (!/[a-z]{3}/i.test(h) || h.length > 64) return undefined;
  const at = Date.parse(h);
  if (!Number.isFinite(at)) return undefined;
  const server = dateHeader ? Date.parse(dateHeader) : NaN;
  const base = Number.isFinite(server) ? server : nowMs;
  return clamp(Math.max(0, (at - base) / 1000));
}

/** One request on the wire, with what is needed to finish or abandon it. */
interface Sent {
  res: Response;
  url: string;
  /** The bearer token sent, for 401 handling and scrubbing; never logged. */
  token?: string;
  /** Token generation at the time of sending. */
  gen: number;
  caller?: AbortSignal;
  timer: AbortSignal;
  /** Stops the timeout. */
  stopTimer(): void;
  /** Stops the timeout and unlinks the caller's signal. */
  done(): void;
}

/**
 * Talks JSON to one API server.
 *
 * Redirects are never followed (a 3xx is an error), a request that times out
 * makes the transport drop its pooled connections, and a 401 re-reads the token
 * once, shared by every request that got the 401 for the same token.
 *
 * @example Usage
 * ```ts
 * import { KubeClient } from "@leasehold/leasehold";
 * const fakeFetch = () => Promise.resolve(Response.json({ kind: "Lease", metadata: {} }));
 * const client = new KubeClient({ server: "https://127.0.0.1:6443", fetch: fakeFetch });
 * const lease = await client.request("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x");
 * console.log((lease as { kind: string }).kind); // "Lease"
 * ```
 */
export class KubeClient {
  /** API server base URL, without a trailing slash. */
  readonly server: string;
  /** Default per-request timeout in ms. */
  readonly timeoutMs: number;
  /** Clock used for timeouts. */
  readonly clock: Clock;
  #fetch: ResettableFetch;
  #tokens?: TokenSource;
  #maxBody: number;
  #tokenGen = 0;
  #rereading?: Promise<boolean>;

  /** Creates a client; no request is made. */
  constructor(options: KubeClientOptions) {
    this.server = options.server.replace(/\/+$/, "");
    this.#fetch = options.fetch ?? ((i, init) => fetch(i, init));
    this.#tokens = options.tokenSource;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.#maxBody = options.maxBodyBytes ?? 1 << 20;
    this.clock = options.clock ?? systemClock;
  }

  /**
   * Drops the transport's pooled connections (if it can), so the next request
   * opens a new one. Called after a timeout; a watch calls it when it went silent.
   */
  resetConnections(): void {
    try {
      this.#fetch.reset?.();
    } catch { /* best effort */ }
  }

  /**
   * Sends one request and returns the parsed JSON body.
   *
   * @throws {KubeApiError} for an error status (a redirect included)
   * @throws {TimeoutError} when no complete answer came in time
   * @throws {NetworkError} when there was no HTTP answer
   * @throws {InvalidResponseError} for a body that is not JSON or too large
   * @throws {ConfigError} when the token cannot be sent in a header
   */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<unknown> {
    let sent = await this.#send(method, path, options);
    if (sent.res.status === 401 && (await this.#newTokenAfter401(sent))) {
      await this.#discard(sent);
      sent = await this.#send(method, path, options);
    }
    return sent.res.status >= 200 && sent.res.status < 300
      ? this.#json(sent, method, path)
      : this.#fail(sent, method, path, options);
  }

  /**
   * Opens a streaming request (a watch) and returns the response once headers
   * arrived. The body is not bounded by the timeout; the caller reads and
   * cancels it. An error answer's body is read under the timeout.
   */
  async stream(path: string, options: RequestOptions = {}): Promise<Response> {
    let sent = await this.#send("GET", path, options);
    if (sent.res.status === 401 && (await this.#newTokenAfter401(sent))) {
      await this.#discard(sent);
      sent = await this.#send("GET", path, options);
    }
    if (sent.res.status < 200 || sent.res.status >= 300) return await this.#fail(sent, "GET", path, options);
    // A watch is chunked; one that declares a length over the cap is no watch, and is not read.
    if (Number(sent.res.headers.get("content-length") ?? NaN) > this.#maxBody) {
      await this.#discard(sent);
      throw new InvalidResponseError(
        `GET ${sent.url}: a watch answered with a ${
          sent.res.headers.get("content-length")
        }-byte body, larger than ${this.#maxBody} bytes; something between us and the API server is answering`,
      );
    }
    sent.stopTimer();
    return releasingBody(sent.res, sent.done);
  }

  #url(path: string): string {
    return this.server + path;
  }

  async #discard(sent: Sent): Promise<void> {
    sent.done();
    await sent.res.body?.cancel().catch(() => {});
  }

  /**
   * After a 401: true when a different token is now available. Requests that got
   * their 401 for a token already replaced retry at once; others share one re-read.
   */
  async #newTokenAfter401(sent: Sent): Promise<boolean> {
    const src = this.#tokens;
    if (!src?.invalidate) return false;
    if (sent.gen !== this.#tokenGen) return (await src.token().catch(() => undefined)) !== sent.token;
    if (!this.#rereading) {
      this.#rereading = (async () => {
        try {
          return !!(await src.invalidate!());
        } catch {
          return false;
        } finally {
          this.#tokenGen++;
          this.#rereading = undefined;
        }
      })();
    }
    return await this.#rereading;
  }

  async #send(method: string, path: string, options: RequestOptions): Promise<Sent> {
    const url = this.#url(path);
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const timer = new AbortController();
    const stopTimer = new AbortController();
    const timedOut = new TimeoutError(
      `${method} ${url}: no complete answer within ${timeoutMs} ms; the API server or the network to it is slow or down`,
    );
    this.clock.sleep(timeoutMs, stopTimer.signal).then(() => {
      timer.abort(timedOut);
      this.resetConnections();
    }, () => {});
    const linked = linkSignals([options.signal, timer.signal]);
    const done = () => {
      stopTimer.abort();
      linked.dispose();
    };
    const headers: Record<string, string> = { accept: "application/json" };
    const gen = this.#tokenGen;
    let token: string | undefined;
    try {
      token = await raceSignal(this.#tokens?.token(), linked.signal);
      if (token !== undefined && token !== "") {
        const bad = invalidToken(token);
        if (bad) {
          throw new ConfigError(
            `the bearer token ${bad}, which cannot be sent in an HTTP header; check the token file or kubeconfig token (a token is one line of printable ASCII)`,
          );
        }
        headers.authorization = `Bearer ${token}`;
      }
    } catch (e) {
      done();
      if (e instanceof ConfigError) throw e;
      throw this.#wrap(e, options.signal, timer.signal, method, url, token);
    }
    let body: string | undefined;
    if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    let res: Response;
    try {
      res = await this.#fetch(url, { method, headers, body, signal: linked.signal, redirect: "manual" });
    } catch (e) {
      done();
      throw this.#wrap(e, options.signal, timer.signal, method, url, token);
    }
    return {
      res,
      url,
      token,
      gen,
      caller: options.signal,
      timer: timer.signal,
      stopTimer: () => stopTimer.abort(),
      done,
    };
  }

  #wrap(
    e: unknown,
    caller: AbortSignal | undefined,
    timer: AbortSignal,
    method: string,
    url: string,
    token?: string,
  ): unknown {
    if (caller?.aborted) return caller.reason;
    if (timer.aborted) return timer.reason;
    const scrub = (s: string) => (token && s.includes(token) ? s.split(token).join("[token]") : s);
    const msg = scrub(e instanceof Error ? e.message : String(e));
    const cause = (e as { cause?: { message?: string; code?: string } })?.cause;
    const detail = scrub(cause?.code ?? cause?.message ?? "");
    const text = `${msg} ${detail}`;
    // A connection closed mid-TLS ("close_notify", "unexpected eof") is not a trust problem.
    const tls = /certificate|self.signed|UNABLE_TO|issuer|unknown ca|handshake failure/i.test(text) &&
      !/close_notify|unexpected eof/i.test(text);
    // Deno without network permission for the API server (a scoped --allow-net that names another address).
    const denied = (e as Error)?.name === "NotCapable" || /Requires net access/.test(text);
    const hint = denied
      ? `Deno's --allow-net does not include the API server: grant ${
        new URL(url).host
      } (the Deno image's Deployment passes --allow-net=$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT))`
      : tls
      ? "the server's certificate is not trusted: check the CA file (ca.crt, certificate-authority) matches the API server"
      : "check the server URL (KUBERNETES_SERVICE_HOST/PORT or the kubeconfig) and that the API server is reachable";
    // The runtime's error may quote a header value; keep it as the cause only when it does not.
    const leaks = !!token &&
      (String((e as Error)?.message ?? e).includes(token) || String(cause?.message ?? "").includes(token));
    return new NetworkError(
      `${method} ${url} failed: ${msg}${detail && !msg.includes(detail) ? ` (${detail})` : ""}; ${hint}`,
      leaks ? undefined : { cause: e },
    );
  }

  async #text(sent: Sent, method: string, path: string): Promise<string> {
    const { res, caller, timer } = sent;
    const url = this.#url(path);
    try {
      if (!res.body) return "";
      const tooLarge = () =>
        new InvalidResponseError(
          `${method} ${url}: response body is larger than ${this.#maxBody} bytes; a Lease is a few hundred bytes, so something between us and the API server is answering`,
        );
      // A declared length over the cap is refused unread: a transport may read a
      // connection ahead of its reader (Deno's node:tls does), so every byte
      // pulled can cost more than its size in buffers.
      const declared = Number(res.headers.get("content-length") ?? NaN);
      if (declared > this.#maxBody) {
        await res.body.cancel().catch(() => {});
        throw tooLarge();
      }
      const reader = res.body.getReader();
      const chunks: Uint8Array[] = [];
      let size = 0;
      const onAbort = () => reader.cancel().catch(() => {});
      caller?.addEventListener("abort", onAbort, { once: true });
      timer.addEventListener("abort", onAbort, { once: true });
      try {
        for (;;) {
          let chunk: ReadableStreamReadResult<Uint8Array>;
          try {
            chunk = await reader.read();
          } catch (e) {
            throw this.#wrap(e, caller, timer, method, url, sent.token);
          }
          if (caller?.aborted) throw caller.reason;
          if (timer.aborted) throw timer.reason;
          if (chunk.done) break;
          size += chunk.value.byteLength;
          if (size > this.#maxBody) {
            await reader.cancel().catch(() => {});
            throw tooLarge();
          }
          chunks.push(chunk.value);
        }
      } finally {
        caller?.removeEventListener("abort", onAbort);
        timer.removeEventListener("abort", onAbort);
      }
      const all = new Uint8Array(size);
      let off = 0;
      for (const c of chunks) {
        all.set(c, off);
        off += c.byteLength;
      }
      return new TextDecoder().decode(all);
    } finally {
      sent.done();
    }
  }

  async #json(sent: Sent, method: string, path: string): Promise<unknown> {
    const text = await this.#text(sent, method, path);
    try {
      return JSON.parse(text);
    } catch {
      const type = sent.res.headers.get("content-type") ?? "no content-type";
      throw new InvalidResponseError(
        `${method} ${this.#url(path)}: answered ${sent.res.status} with ${type} that is not valid JSON (${
          describeBody(text)
        }); is the server URL the Kubernetes API server and not a proxy or web page?`,
      );
    }
  }

  async #fail(sent: Sent, method: string, path: string, options: RequestOptions): Promise<never> {
    const { res } = sent;
    const url = this.#url(path);
    const text = await this.#text(sent, method, path);
    let status:
      | { kind?: string; reason?: string; message?: string; details?: { retryAfterSeconds?: unknown } }
      | undefined;
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === "object" && parsed.kind === "Status") status = parsed;
    } catch { /* not JSON: handled below */ }
    const code = res.status;
    const reason = (typeof status?.reason === "string" && status.reason in REASON_SET ? status.reason : undefined) as
      | StatusReason
      | undefined ??
      REASONS[code] ?? (code >= 500 ? "InternalError" : "Unknown");
    const retryAfterSeconds = parseRetryAfter(
      status?.details?.retryAfterSeconds,
      res.headers.get("retry-after"),
      res.headers.get("date"),
      this.clock.wallTime().getTime(),
    );
    const serverMessage = typeof status?.message === "string"
      ? status.message
      : (text
        ? `${res.headers.get("content-type") ?? "no content-type"} body, not a Kubernetes Status: ${describeBody(text)}`
        : undefined);
    const message = explain(code, reason, method, url, options.intent, serverMessage, retryAfterSeconds, !status);
    throw new KubeApiError(message, { code, reason, method, url, retryAfterSeconds, serverMessage });
  }
}

/** Resolves like `p`, or rejects with the signal's reason when it aborts first. */
function raceSignal<T>(p: Promise<T> | undefined, signal: AbortSignal): Promise<T | undefined> {
  if (p === undefined) return Promise.resolve(undefined);
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * The same response with a body that calls `release` once it ended, failed or
 * was cancelled, so nothing stays attached to the caller's signal afterwards.
 */
function releasingBody(res: Response, release: () => void): Response {
  if (!res.body) {
    release();
    return res;
  }
  const reader = res.body.getReader();
  let released = false;
  const once = () => {
    if (!released) {
      released = true;
      release();
    }
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          once();
          ctl.close();
        } else ctl.enqueue(value);
      } catch (e) {
        once();
        ctl.error(e);
      }
    },
    async cancel(reason) {
      once();
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
  // The Node adapter's small response stays one: the global Response loads undici on Node 20.
  if (res instanceof StreamResponse) {
    return new StreamResponse(body, res.status, res.statusText, res.headers) as unknown as Response;
  }
  return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
}

const REASON_SET: Record<string, true> = Object.fromEntries(
  [
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "TooManyRequests",
    "InternalError",
    "ServiceUnavailable",
    "Timeout",
  ]
    .map((r) => [r, true]),
);

function describeBody(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  if (!flat) return "empty body";
  return JSON.stringify(flat.length > 120 ? flat.slice(0, 120) + "…" : flat);
}

function explain(
  code: number,
  reason: StatusReason,
  method: string,
  url: string,
  intent: RequestIntent | undefined,
  serverMessage: string | undefined,
  retryAfter: number | undefined,
  notStatus: boolean,
): string {
  const what = intent
    ? `${intent.verb} ${intent.resource}${intent.name ? ` "${intent.name}"` : ""}${
      intent.namespace ? ` in namespace "${intent.namespace}"` : ""
    }`
    : `${method} ${url}`;
  const server = serverMessage ? ` (server said: ${serverMessage})` : "";
  const [resource, group] = intent ? splitResource(intent.resource) : ["", ""];
  if ((code >= 300 && code < 400) || code === 0) {
    return `${
      code || "opaque"
    } redirect: the server answered ${what} with a redirect, which leasehold never follows (a write could be replayed as a read, or sent to another host): set the server URL (KUBERNETES_SERVICE_HOST/PORT or the kubeconfig cluster's server) to the API server itself, not to a proxy or load balancer that redirects`;
  }
  switch (reason) {
    case "Forbidden":
      return intent
        ? `Forbidden: not allowed to ${what}. Grant it with a Role in namespace "${
          intent.namespace ?? "?"
        }" with apiGroups ["${group}"], resources ["${resource}"], verbs ["${intent.verb}"]${
          intent.name && intent.verb !== "create" ? `, resourceNames ["${intent.name}"]` : ""
        }, and a RoleBinding to this service account (see deploy/rbac.yaml)${server}`
        : `Forbidden: ${what}${server}; the Role bound to this service account must grant it`;
    case "Unauthorized":
      return `Unauthorized: the API server rejected our credentials for ${what}; check the service-account token file (it is re-read after each 401) or the kubeconfig user${server}`;
    case "NotFound":
      return `NotFound: ${what}${intent?.namespace ? `; does namespace "${intent.namespace}" exist?` : ""}${server}`;
    case "Conflict":
    case "AlreadyExists":
      return `${reason}: ${what} lost a race with another writer; re-read and try again${server}`;
    case "TooManyRequests":
      return `TooManyRequests: the API server is throttling ${what}${
        retryAfter !== undefined ? `; retry after ${retryAfter}s` : ""
      }${server}`;
    default:
      if (code >= 500) {
        return `${code} ${reason}: the API server${
          notStatus ? " (or a proxy in front of it)" : ""
        } failed ${what}; will retry${server}`;
      }
      return `${code} ${reason}: ${what}${server}`;
  }
}

function splitResource(r: string): [string, string] {
  const i = r.indexOf(".");
  return i < 0 ? [r, ""] : [r.slice(0, i), r.slice(i + 1)];
}
