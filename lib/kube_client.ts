/**
 * A minimal Kubernetes REST client over `fetch`: base URL, bearer token,
 * per-request timeout, bounded bodies, and Kubernetes `Status` bodies turned
 * into {@linkcode KubeApiError}s whose messages name the fix.
 *
 * @module
 */

import { type Clock, systemClock } from "./clock.ts";
import { linkSignals } from "./signal.ts";
import { InvalidResponseError, KubeApiError, NetworkError, type StatusReason, TimeoutError } from "./errors.ts";

/** A `fetch`-compatible function. */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** Supplies the bearer token; `invalidate` is called after a 401 so the next call re-reads it. */
export interface TokenSource {
  /** The current token, or `undefined` for no `Authorization` header. */
  token(): Promise<string | undefined>;
  /** Forget any cached token. Returns true if a re-read may give a different one. */
  invalidate?(): Promise<boolean> | boolean;
}

/** Options of {@linkcode KubeClient}. */
export interface KubeClientOptions {
  /** API server base URL, e.g. `https://10.96.0.1:443`. */
  server: string;
  /** `fetch` to use, e.g. one with the cluster CA from `createFetch`. @default globalThis.fetch */
  fetch?: FetchLike;
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

/**
 * Talks JSON to one API server.
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
  #fetch: FetchLike;
  #tokens?: TokenSource;
  #maxBody: number;

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
   * Sends one request and returns the parsed JSON body.
   *
   * @throws {KubeApiError} for an error status
   * @throws {TimeoutError} when no complete answer came in time
   * @throws {NetworkError} when there was no HTTP answer
   * @throws {InvalidResponseError} for a body that is not JSON or too large
   */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<unknown> {
    let res = await this.#send(method, path, options);
    if (res.status === 401 && this.#tokens?.invalidate && (await this.#tokens.invalidate())) {
      await res.body?.cancel().catch(() => {});
      res = await this.#send(method, path, options);
    }
    return res.status >= 200 && res.status < 300
      ? this.#json(res, method, path)
      : this.#fail(res, method, path, options);
  }

  /**
   * Opens a streaming request (a watch) and returns the response once headers
   * arrived. The body is not bounded by the timeout; the caller reads and cancels it.
   */
  async stream(path: string, options: RequestOptions = {}): Promise<Response> {
    const res = await this.#send("GET", path, options, true);
    if (res.status >= 200 && res.status < 300) return res;
    return await this.#fail(res, "GET", path, options);
  }

  #url(path: string): string {
    return this.server + path;
  }

  async #send(
    method: string,
    path: string,
    options: RequestOptions,
    streaming = false,
  ): Promise<Response & { _done?: () => void }> {
    const url = this.#url(path);
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const timer = new AbortController();
    const stopTimer = new AbortController();
    const timedOut = new TimeoutError(
      `${method} ${url}: no complete answer within ${timeoutMs} ms; the API server or the network to it is slow or down`,
    );
    this.clock.sleep(timeoutMs, stopTimer.signal).then(() => timer.abort(timedOut), () => {});
    const linked = linkSignals([options.signal, timer.signal]);
    const signal = linked.signal;
    const headers: Record<string, string> = { accept: "application/json" };
    const token = await this.#tokens?.token();
    if (token) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    let res: Response;
    try {
      res = await this.#fetch(url, { method, headers, body, signal });
    } catch (e) {
      stopTimer.abort();
      linked.dispose();
      throw this.#wrap(e, options.signal, timer.signal, method, url);
    }
    if (streaming) {
      stopTimer.abort(); // the caller's signal stays linked for as long as the stream is read
      return res;
    }
    // Keep the timer running while the body is read; #json/#fail stop it.
    const r = res as Response & { _done?: () => void; _signals?: [AbortSignal | undefined, AbortSignal] };
    r._done = () => {
      stopTimer.abort();
      linked.dispose();
    };
    r._signals = [options.signal, timer.signal];
    return r;
  }

  #wrap(e: unknown, caller: AbortSignal | undefined, timer: AbortSignal, method: string, url: string): unknown {
    if (caller?.aborted) return caller.reason;
    if (timer.aborted) return timer.reason;
    const msg = e instanceof Error ? e.message : String(e);
    const cause = (e as { cause?: { message?: string; code?: string } })?.cause;
    const detail = cause?.code ?? cause?.message ?? "";
    const text = `${msg} ${detail}`;
    // A connection closed mid-TLS ("close_notify", "unexpected eof") is not a trust problem.
    const tls = /certificate|self.signed|UNABLE_TO|issuer|unknown ca|handshake failure/i.test(text) &&
      !/close_notify|unexpected eof/i.test(text);
    const hint = tls
      ? "the server's certificate is not trusted: check the CA file (ca.crt, certificate-authority) matches the API server"
      : "check the server URL (KUBERNETES_SERVICE_HOST/PORT or the kubeconfig) and that the API server is reachable";
    return new NetworkError(
      `${method} ${url} failed: ${msg}${detail && !msg.includes(detail) ? ` (${detail})` : ""}; ${hint}`,
      {
        cause: e,
      },
    );
  }

  async #text(res: Response, method: string, path: string): Promise<string> {
    const r = res as Response & { _done?: () => void; _signals?: [AbortSignal | undefined, AbortSignal] };
    const url = this.#url(path);
    try {
      if (!res.body) return "";
      const reader = res.body.getReader();
      const chunks: Uint8Array[] = [];
      let size = 0;
      const [caller, timer] = r._signals ?? [undefined, undefined];
      const onAbort = () => reader.cancel().catch(() => {});
      caller?.addEventListener("abort", onAbort, { once: true });
      timer?.addEventListener("abort", onAbort, { once: true });
      try {
        for (;;) {
          let chunk: ReadableStreamReadResult<Uint8Array>;
          try {
            chunk = await reader.read();
          } catch (e) {
            throw this.#wrap(e, caller, timer ?? new AbortController().signal, method, url);
          }
          if (caller?.aborted) throw caller.reason;
          if (timer?.aborted) throw timer.reason;
          if (chunk.done) break;
          size += chunk.value.byteLength;
          if (size > this.#maxBody) {
            await reader.cancel().catch(() => {});
            throw new InvalidResponseError(
              `${method} ${url}: response body is larger than ${this.#maxBody} bytes; a Lease is a few hundred bytes, so something between us and the API server is answering`,
            );
          }
          chunks.push(chunk.value);
        }
      } finally {
        caller?.removeEventListener("abort", onAbort);
        timer?.removeEventListener("abort", onAbort);
      }
      const all = new Uint8Array(size);
      let off = 0;
      for (const c of chunks) {
        all.set(c, off);
        off += c.byteLength;
      }
      return new TextDecoder().decode(all);
    } finally {
      r._done?.();
    }
  }

  async #json(res: Response, method: string, path: string): Promise<unknown> {
    const text = await this.#text(res, method, path);
    try {
      return JSON.parse(text);
    } catch {
      const type = res.headers.get("content-type") ?? "no content-type";
      throw new InvalidResponseError(
        `${method} ${this.#url(path)}: answered ${res.status} with ${type} that is not valid JSON (${
          describeBody(text)
        }); is the server URL the Kubernetes API server and not a proxy or web page?`,
      );
    }
  }

  async #fail(res: Response, method: string, path: string, options: RequestOptions): Promise<never> {
    const url = this.#url(path);
    const text = await this.#text(res, method, path);
    let status:
      | { kind?: string; reason?: string; message?: string; details?: { retryAfterSeconds?: number } }
      | undefined;
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === "object" && parsed.kind === "Status") status = parsed;
    } catch { /* not JSON: handled below */ }
    const code = res.status;
    const reason =
      (status?.reason && status.reason in REASON_SET ? status.reason : undefined) as StatusReason | undefined ??
        REASONS[code] ?? (code >= 500 ? "InternalError" : "Unknown");
    const header = res.headers.get("retry-after");
    const fromHeader = header && /^\d+$/.test(header.trim()) ? Number(header.trim()) : undefined;
    const retryAfterSeconds = status?.details?.retryAfterSeconds ?? fromHeader;
    const serverMessage = status?.message ??
      (text
        ? `${res.headers.get("content-type") ?? "no content-type"} body, not a Kubernetes Status: ${describeBody(text)}`
        : undefined);
    const message = explain(code, reason, method, url, options.intent, serverMessage, retryAfterSeconds, !status);
    throw new KubeApiError(message, { code, reason, method, url, retryAfterSeconds, serverMessage });
  }
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
