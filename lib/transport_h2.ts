/**
 * HTTP/2 adapter for Deno with a cluster CA: one `node:http2` session per API
 * server carries every request and watch of the process, over a TLS connection
 * that trusts the cluster CA alone (`node:tls`'s `ca` replaces the default
 * roots on Deno, unlike `Deno.createHttpClient`). A server that does not offer
 * HTTP/2 in ALPN, and plain `http:`, go to the fallback (`node:https`).
 *
 * A request is never sent twice: a stream that fails, fails its request.
 *
 * @module
 */

import * as http2 from "node:http2";
import { isIP } from "node:net";
import * as tls from "node:tls";
import type { ResettableFetch } from "./kube_request.ts";
import { headerRecord, ResponseHeaders, StreamResponse } from "./node_response.ts";
import type { TlsOptions } from "./transport.ts";
import { webBody } from "./transport_node.ts";

/** Request headers HTTP/2 forbids (RFC 9113 §8.2.2); `host` becomes `:authority`. */
const DROPPED = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"]);

/** What an origin speaks: an HTTP/2 session, or HTTP/1.1 through the fallback. */
type Conn = { session: http2.ClientHttp2Session } | { session?: undefined };

/**
 * A `fetch` over one HTTP/2 session per origin that trusts `caCert` alone and
 * presents the client certificate. `reset()` destroys the sessions (a
 * connection that went silent is not used again; requests on it fail) and
 * resets the fallback; the next request connects anew. The session holds the
 * process open only while a request or a watch is in flight.
 *
 * @example Usage
 * ```ts ignore
 * import { h2Fetch } from "./transport_h2.ts";
 * import { nodeFetch } from "./transport_node.ts";
 * const tls = { caCert: "-----BEGIN CERTIFICATE-----..." };
 * const f = h2Fetch(tls, nodeFetch(tls, { keepAlive: false }));
 * ```
 */
export function h2Fetch(options: TlsOptions, fallback: ResettableFetch): ResettableFetch {
  const conns = new Map<string, Promise<Conn>>();
  const sockets = new Set<tls.TLSSocket>();
  const sessions = new Set<http2.ClientHttp2Session>();
  const active = new Map<http2.ClientHttp2Session, number>();

  const track = (session: http2.ClientHttp2Session, delta: number) => {
    const n = (active.get(session) ?? 0) + delta;
    active.set(session, n);
    if (n > 0) session.ref();
    else session.unref();
  };

  const open = (url: URL): Promise<Conn> => {
    const key = url.origin;
    const had = conns.get(key);
    if (had) return had;
    const p = new Promise<Conn>((resolve, reject) => {
      const host = url.hostname.replace(/^\[|\]$/g, "");
      const sock = tls.connect({
        host,
        port: Number(url.port) || 443,
        servername: isIP(host) ? undefined : host,
        ca: options.caCert,
        cert: options.clientCert,
        key: options.clientKey,
        rejectUnauthorized: !options.insecureSkipTlsVerify,
        ALPNProtocols: ["h2", "http/1.1"],
      });
      sockets.add(sock);
      const forget = () => {
        if (conns.get(key) === p) conns.delete(key);
      };
      sock.once("error", (e) => {
        sockets.delete(sock);
        forget();
        reject(e);
      });
      sock.once("secureConnect", () => {
        sockets.delete(sock);
        if (sock.alpnProtocol !== "h2") {
          sock.destroy();
          return resolve({});
        }
        const session = http2.connect(url.origin, { createConnection: () => sock });
        sessions.add(session);
        const drop = () => {
          forget();
          sessions.delete(session);
          active.delete(session);
        };
        session.on("error", drop);
        session.once("close", drop);
        session.once("goaway", drop);
        session.unref();
        resolve({ session });
      });
    });
    // A failed connect is reported to the request that waits for it.
    p.catch(() => {});
    conns.set(key, p);
    return p;
  };

  const f = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    if (url.protocol !== "https:") return fallback(input, init);
    const signal = init.signal ?? undefined;
    signal?.throwIfAborted();
    const conn = await abortable(open(url), signal);
    if (!conn.session) return fallback(input, init);
    return send(conn.session, url, init, signal);
  };

  const send = (session: http2.ClientHttp2Session, url: URL, init: RequestInit, signal?: AbortSignal) =>
    new Promise<Response>((resolve, reject) => {
      const method = init.method ?? "GET";
      const headers: http2.OutgoingHttpHeaders = { ":method": method, ":path": url.pathname + url.search };
      for (const [k, v] of Object.entries(headerRecord(init.headers))) if (!DROPPED.has(k)) headers[k] = v;
      const body = typeof init.body === "string" ? init.body : undefined;
      let stream: http2.ClientHttp2Stream;
      try {
        stream = session.request(headers, { endStream: body === undefined });
      } catch (e) {
        return reject(e);
      }
      track(session, 1);
      let settled = false;
      stream.once("close", () => {
        track(session, -1);
        signal?.removeEventListener("abort", onAbort);
        if (!settled) {
          settled = true;
          reject(
            signal?.aborted
              ? signal.reason
              : new Error(`the HTTP/2 stream closed before a response (code ${stream.rstCode})`),
          );
        }
      });
      const onAbort = () => {
        if (!settled) {
          settled = true;
          reject(signal?.reason);
        }
        stream.close(http2.constants.NGHTTP2_CANCEL);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      stream.once("error", (e) => {
        if (settled) return;
        settled = true;
        reject(signal?.aborted ? signal.reason : e);
      });
      stream.once("response", (h) => {
        if (settled) return;
        settled = true;
        const status = Number(h[":status"]) || 502;
        const raw: string[] = [];
        for (const [k, v] of Object.entries(h)) {
          if (k.startsWith(":") || v === undefined) continue;
          for (const one of Array.isArray(v) ? v : [v]) raw.push(k, String(one));
        }
        const noBody = status === 204 || status === 304 || method === "HEAD";
        if (noBody) stream.resume();
        // The abort listener stays until the stream closes: it cancels the body too.
        resolve(
          new StreamResponse(
            noBody ? null : webBody(stream),
            status,
            "",
            new ResponseHeaders(raw),
          ) as unknown as Response,
        );
      });
      if (body !== undefined) stream.end(body);
    });

  return Object.assign(f, {
    reset() {
      conns.clear();
      for (const s of sockets) s.destroy();
      sockets.clear();
      for (const s of sessions) s.destroy();
      sessions.clear();
      active.clear();
      fallback.reset?.();
    },
  });
}

/** `p`, or the signal's reason as soon as it aborts. */
function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
