/**
 * Node adapter, also used on Deno: a small `fetch` over `node:https`, so the
 * cluster CA is the only trust anchor (Node's `ca` option replaces the default
 * roots; Deno's `Deno.createHttpClient` would only add to them) and client
 * certificates work without a dependency. `node:https` keeps a replica's memory
 * near half of what Node's built-in fetch or the undici package costs. Redirects
 * are never followed.
 *
 * @module
 */

import * as http from "node:http";
import * as https from "node:https";
import type { Readable } from "node:stream";
import type { ResettableFetch } from "./kube_client.ts";
import { headerRecord, ResponseHeaders, StreamResponse } from "./node_response.ts";
import type { TlsOptions } from "./transport.ts";

/**
 * A Node readable (a response body) as a web `ReadableStream`, with back
 * pressure, that ignores whatever the readable emits after it ended, failed or
 * was cancelled. `Readable.toWeb` keeps its `data` listener after the end, and
 * Deno's `node:http` can emit data after a response was destroyed (a busy watch
 * abandoned): `toWeb` then throws "The stream controller cannot close or
 * enqueue" from an event handler, an uncaught error that ends the process.
 *
 * @example Usage
 * ```ts
 * import { PassThrough } from "node:stream";
 * import { webBody } from "./transport_node.ts";
 * const body = new PassThrough();
 * const stream = webBody(body);
 * body.end("hello");
 * console.log(new TextDecoder().decode((await stream.getReader().read()).value)); // "hello"
 * ```
 */
export function webBody(res: Readable): ReadableStream<Uint8Array> {
  let done = false;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const finish = (e?: unknown) => {
    if (done) return;
    done = true;
    res.off("data", onData);
    if (e === undefined) controller.close();
    else controller.error(e);
  };
  const onData = (chunk: Uint8Array | string) => {
    if (done) return;
    controller.enqueue(typeof chunk === "string" ? new TextEncoder().encode(chunk) : new Uint8Array(chunk));
    if ((controller.desiredSize ?? 1) <= 0) res.pause();
  };
  return new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      res.on("data", onData);
      res.once("end", () => finish());
      res.once("error", (e) => finish(e));
      // Closed without its end (the connection went away, or it was destroyed).
      res.once("close", () => finish(new Error("the response body ended before it was complete")));
    },
    pull() {
      res.resume();
    },
    cancel(reason) {
      done = true;
      res.off("data", onData);
      res.destroy(reason instanceof Error ? reason : undefined);
    },
  }, { highWaterMark: 16 });
}

/** Options of {@linkcode nodeFetch}. */
export interface NodeFetchOptions {
  /** Reuse connections. @default true */
  keepAlive?: boolean;
  /**
   * With keep-alive, at most this many connections for requests other than
   * watches; more requests wait for one. Each watch has a connection of its own.
   * Eight keep up with about a thousand Leases renewing every 2 s at
   * 3-10 ms a request; a queued request waits within its own timeout.
   * @default 8
   */
  maxSockets?: number;
}

/**
 * A `fetch` for Node (and Deno) that trusts `caCert` alone and presents the
 * client certificate. Supports what leasehold needs: method, headers, string
 * body, `signal`, and a streamed response body. `reset()` destroys every pooled
 * connection, so requests made afterwards connect again. An aborted request
 * rejects at once. With keep-alive, requests share at most `maxSockets`
 * connections and each watch has one. `keepAlive: false` opens a connection per request: Deno's
 * `node:http` re-sends a request (a PUT too) on a new connection when a reused
 * one fails, even after the request was aborted, so Deno does not pool.
 *
 * @example Usage
 * ```ts ignore
 * import { nodeFetch } from "./transport_node.ts";
 * const f = nodeFetch({ caCert: "-----BEGIN CERTIFICATE-----..." });
 * ```
 */
export function nodeFetch(tls: TlsOptions, options: NodeFetchOptions = {}): ResettableFetch {
  const keepAlive = options.keepAlive ?? true;
  const maxSockets = keepAlive ? options.maxSockets ?? 8 : Infinity;
  const tlsAgent = (limit: number) =>
    new https.Agent({
      ca: tls.caCert,
      cert: tls.clientCert,
      key: tls.clientKey,
      rejectUnauthorized: !tls.insecureSkipTlsVerify,
      keepAlive,
      maxSockets: limit,
    });
  const newAgents = () => ({
    https: tlsAgent(maxSockets),
    http: new http.Agent({ keepAlive, maxSockets }),
    // A watch holds its connection for minutes: watches get connections of their own,
    // so that a few of them never queue the requests behind them.
    httpsWatch: tlsAgent(Infinity),
    httpWatch: new http.Agent({ keepAlive }),
  });
  let agents = newAgents();
  const encoder = new TextEncoder();
  const f = (input: string | URL | Request, init: RequestInit = {}) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
      const method = init.method ?? "GET";
      const headers = headerRecord(init.headers);
      const body = typeof init.body === "string" ? init.body : undefined;
      if (body !== undefined) headers["content-length"] = String(encoder.encode(body).byteLength);
      const signal = init.signal ?? undefined;
      if (signal?.aborted) return reject(signal.reason);
      const plain = url.protocol === "http:";
      const mod = plain ? http : https;
      const watch = /^(true|1)$/.test(url.searchParams.get("watch") ?? "");
      const agent = watch ? (plain ? agents.httpWatch : agents.httpsWatch) : plain ? agents.http : agents.https;
      const req = mod.request(url, { method, headers, agent }, (res) => {
        signal?.removeEventListener("abort", onAbort);
        const status = res.statusCode ?? 502;
        const noBody = status === 204 || status === 304 || method === "HEAD";
        if (noBody) res.resume();
        const stream = noBody ? null : webBody(res);
        if (signal && !noBody) {
          // One listener per response, removed when the response closes, so a
          // long-lived caller signal holds neither listeners nor responses.
          const onBodyAbort = () => res.destroy(signal.reason);
          signal.addEventListener("abort", onBodyAbort, { once: true });
          res.once("close", () => signal.removeEventListener("abort", onBodyAbort));
        }
        // Not the global Response: on Node 20 that loads undici (see node_response.ts).
        const out = new StreamResponse(stream, status, res.statusMessage ?? "", new ResponseHeaders(res.rawHeaders));
        resolve(out as unknown as Response);
      });
      const onAbort = () => {
        reject(signal?.reason);
        req.destroy(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      req.on("error", (e) => {
        signal?.removeEventListener("abort", onAbort);
        reject(signal?.aborted ? signal.reason : e);
      });
      req.end(body);
    });
  return Object.assign(f, {
    reset() {
      const old = agents;
      agents = newAgents();
      for (const a of Object.values(old)) a.destroy();
    },
  });
}
