/**
 * A fault-injecting HTTPS proxy for tests: it sits between one replica and the
 * real kube-apiserver and, on command during a run, delays, drops, resets,
 * trickles, truncates or replaces the answers.
 *
 * It terminates TLS itself (with a serving certificate signed by the test CA,
 * so a replica that trusts the CA trusts the proxy) and speaks HTTP/1.1 over
 * the raw TLS socket, which gives it full control of every connection: it can
 * hold a socket open without answering, destroy it, or stop a body halfway.
 * Each request is forwarded over a fresh or pooled HTTPS connection to the
 * target, trusting the CA; responses are relayed unbuffered, so watch streams
 * work through it.
 *
 * Every forwarded request is reported to `onExchange` with the times it was
 * sent upstream and answered, so a checker can bound when the API server
 * accepted a write.
 *
 * {@linkcode startTcpProxy} is a plain TCP relay (TLS passes through, so a
 * client negotiates HTTP/2 with the server as it would directly) that can
 * freeze established connections: no bytes either way, no FIN, no RST.
 *
 * Only `node:https`, `node:http`, `node:tls`, `node:net` and Web APIs are used,
 * so it runs under Deno, Bun and Node.
 *
 * @module
 */

import * as https from "node:https";
import { STATUS_CODES } from "node:http";
import type { ClientRequest, IncomingMessage } from "node:http";
import * as tls from "node:tls";
import * as net from "node:net";
import type { AddressInfo } from "node:net";

/** What the proxy does to a request. */
export type Fault =
  /** Forward unchanged. */
  | { kind: "none" }
  /** Wait `ms` before forwarding the request, and again before sending the response. */
  | { kind: "latency"; ms: number }
  /** Accept and read, never answer, hold the socket open: a network partition. */
  | { kind: "blackhole" }
  /** Destroy the client socket at once: a connection reset. */
  | { kind: "reset" }
  /** Forward, but send the response body at `bytesPerSecond`. */
  | { kind: "trickle"; bytesPerSecond: number }
  /** Answer with this status and body instead of forwarding (an HTML 502 page, a 429, a 500 Status). */
  | { kind: "status"; status: number; body: string; contentType?: string; headers?: Record<string, string> }
  /** Forward, then send only the first half of the response body and close the socket. */
  | { kind: "truncated" }
  /** Answer 200 with a JSON-looking body of `bytes` bytes, generated in chunks. */
  | { kind: "huge"; bytes: number }
  /** Answer 200 headers, then a body that trickles forever and never ends. */
  | { kind: "never-ending" }
  /** Answer 200 with an empty chunked body that ends at once: a watch the server closes straight away. */
  | { kind: "end-watch" }
  /** Forward the request, let the server answer, then reset the connection without passing the answer on. */
  | { kind: "lose-response" }
  /** Answer 200 with these watch event lines (JSON, one each), then hold the stream open and silent. */
  | { kind: "watch-events"; events: string[] };

/** A fault with a filter and an optional count. */
export interface FaultRule {
  /** The fault to apply. */
  fault: Fault;
  /** Only requests with this method (case-insensitive) and/or this watch-ness are affected. */
  match?: { method?: string; watch?: boolean };
  /** Apply to the next N matching requests only, then revert to no fault. */
  times?: number;
}

/** Counters of a {@linkcode FaultProxy}; live, they change as requests come in. */
export interface FaultProxyStats {
  /** Requests received (parsed), faulted or not. */
  requests: number;
  /** Requests received, by upper-case method. */
  byMethod: Record<string, number>;
  /** Requests a fault other than `none` was applied to. */
  faulted: number;
  /** Watch requests received (`?watch=1`, `?watch=true` or a `/watch/` path). */
  watches: number;
  /** Watch requests a fault other than `none` was applied to. */
  faultedWatches: number;
  /** Faulted requests by fault (`kind`, or `status <code>`), and `<fault> watch` for watches. */
  byFault: Record<string, number>;
  /** Lines written into open watch streams by `injectWatchEvent`. */
  injected: number;
  /** Open watches ended by `dropWatches`. */
  dropped: number;
  /** The last 200 requests received: wall-clock ms, method, watch, the fault applied. */
  recent: { at: number; method: string; watch: boolean; fault: string; ex?: Exchange; doneAt?: number }[];
}

/** One request forwarded to the target, with the times that bound the server's handling of it. */
export interface Exchange {
  /** Upper-case method. */
  method: string;
  /** Path and query. */
  target: string;
  /** A watch request. */
  watch: boolean;
  /** The fault applied (`none` included). */
  fault: Fault["kind"];
  /** `Date.now()` just before the request was handed to the upstream connection. */
  sentAt: number;
  /** `Date.now()` when the upstream answer's head arrived (undefined when none came). */
  answeredAt?: number;
  /** Upstream status (undefined when none came). */
  status?: number;
  /** Upstream body as text, for requests that are not watches (up to 256 KiB). */
  body?: string;
  /** The same body as bytes (protobuf answers are not text). */
  bytes?: Uint8Array;
  /** The request body as sent. */
  requestBytes: Uint8Array;
  /** Why no answer came. */
  error?: string;
}

/** A running proxy; see {@linkcode startFaultProxy}. */
export interface FaultProxy {
  /** Base URL, e.g. `https://127.0.0.1:40123`, without a trailing slash. */
  url: string;
  /** Port actually bound. */
  port: number;
  /**
   * Replaces the current rule; `{ kind: "none" }` clears it. Each request is
   * judged when it arrives, so every request on a kept-alive connection sees
   * the rule current at that moment. A `blackhole` or `reset` without `times`
   * also hits connections already open: `reset` destroys every open connection
   * (with `match`: those whose request in flight matches), `blackhole` freezes
   * those with a (matching) request in flight, such as an open watch. A frozen
   * connection stays silent in both directions until the client or `close()`
   * ends it, even after the fault is cleared.
   */
  set(fault: Fault | FaultRule): void;
  /** Same as `set({ kind: "none" })`. */
  clear(): void;
  /** Stops listening and destroys every connection, held ones included. Safe to call twice. */
  close(): Promise<void>;
  /** Request counters. */
  stats: FaultProxyStats;
  /** Resets every connection with a watch in flight (the client sees its watch break); returns how many. */
  dropWatches(): number;
  /**
   * Writes `line` (one JSON watch event, newline added) into every open watch
   * stream that sits between two events; returns into how many.
   */
  injectWatchEvent(line: string): number;
}

/** Options of {@linkcode startFaultProxy}. */
export interface FaultProxyOptions {
  /** The real API server, e.g. `https://127.0.0.1:6443`. */
  target: string;
  /** PEM CA that signed the target's certificate. */
  caCert: string;
  /** PEM serving certificate the proxy presents (valid for `host`). */
  cert: string;
  /** PEM key of `cert`. */
  key: string;
  /** Port to listen on; `0` (the default) lets the system pick one. */
  port?: number;
  /** Address to listen on; default `127.0.0.1`. */
  host?: string;
  /** Called once per forwarded request, when its upstream answer is complete or failed. */
  onExchange?: (e: Exchange) => void;
}

const HEAD_LIMIT = 64 * 1024;
const BODY_LIMIT = 16 * 1024 * 1024;
const TEE_LIMIT = 256 * 1024;
const EMPTY: Uint8Array = new Uint8Array(0);
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Headers never copied either way: hop-by-hop ones, and the framing and host the proxy sets itself. */
const NOT_COPIED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "trailers",
  "transfer-encoding",
  "upgrade",
  "expect",
  "content-length",
  "host",
]);

interface ParsedRequest {
  method: string;
  /** Origin-form request target: path and query. */
  target: string;
  headers: [string, string][];
  body: Uint8Array;
  keepAlive: boolean;
  watch: boolean;
}

interface ActiveRule {
  fault: Fault;
  match?: { method?: string; watch?: boolean };
  remaining?: number;
}

type Framing = "length" | "chunked" | "none";

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

/** Index of `\r\n\r\n` in `buf` at or after `from`, or -1. */
function findHeadEnd(buf: Uint8Array, from = 0): number {
  for (let i = from; i + 3 < buf.byteLength; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/** Index of `\r\n` in `buf` at or after `from`, or -1. */
function findLineEnd(buf: Uint8Array, from: number): number {
  for (let i = from; i + 1 < buf.byteLength; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10) return i;
  }
  return -1;
}

/** Decodes a chunked body starting at `at`: the body and the offset after it, `undefined` if incomplete. */
function decodeChunked(buf: Uint8Array, at: number): { body: Uint8Array; end: number } | undefined {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const eol = findLineEnd(buf, at);
    if (eol < 0) return undefined;
    const n = parseInt(dec.decode(buf.subarray(at, eol)).split(";")[0].trim(), 16);
    if (!Number.isFinite(n) || n < 0) throw new Error("bad chunk size");
    at = eol + 2;
    if (n === 0) {
      // Trailers, then an empty line.
      for (;;) {
        const t = findLineEnd(buf, at);
        if (t < 0) return undefined;
        const empty = t === at;
        at = t + 2;
        if (empty) break;
      }
      const body = new Uint8Array(size);
      let off = 0;
      for (const p of parts) {
        body.set(p, off);
        off += p.byteLength;
      }
      return { body, end: at };
    }
    if (buf.byteLength < at + n + 2) return undefined;
    parts.push(buf.subarray(at, at + n));
    size += n;
    if (size > BODY_LIMIT) throw new Error("request body too large");
    at += n + 2;
  }
}

type ParseResult = { request: ParsedRequest; rest: Uint8Array } | { error: number } | undefined;

/** Parses one request off the front of `buf`. */
function parseRequest(buf: Uint8Array): ParseResult {
  const headEnd = findHeadEnd(buf);
  if (headEnd < 0) return buf.byteLength > HEAD_LIMIT ? { error: 431 } : undefined;
  const lines = dec.decode(buf.subarray(0, headEnd)).split("\r\n");
  const m = /^([A-Za-z]+) (\S+) HTTP\/1\.([01])$/.exec(lines[0]);
  if (!m) return { error: 400 };
  const [, method, rawTarget, minor] = m;
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i <= 0) return { error: 400 };
    headers.push([line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()]);
  }
  const get = (name: string) => headers.find(([k]) => k === name)?.[1];
  const connection = (get("connection") ?? "").toLowerCase();
  const keepAlive = minor === "1" ? !connection.includes("close") : connection.includes("keep-alive");
  let target = rawTarget;
  if (/^https?:\/\//i.test(target)) {
    const u = new URL(target);
    target = u.pathname + u.search;
  }
  const at = headEnd + 4;
  let body: Uint8Array = EMPTY;
  let end = at;
  if ((get("transfer-encoding") ?? "").toLowerCase().includes("chunked")) {
    let r: { body: Uint8Array; end: number } | undefined;
    try {
      r = decodeChunked(buf, at);
    } catch {
      return { error: 400 };
    }
    if (!r) return undefined;
    ({ body, end } = r);
  } else {
    const len = Number(get("content-length") ?? "0");
    if (!Number.isInteger(len) || len < 0) return { error: 400 };
    if (len > BODY_LIMIT) return { error: 413 };
    if (buf.byteLength < at + len) return undefined;
    body = buf.slice(at, at + len);
    end = at + len;
  }
  const u = new URL(target, "http://proxy.invalid");
  const w = u.searchParams.get("watch");
  const watch = w === "1" || w === "true" || u.pathname.includes("/watch/");
  return {
    request: { method: method.toUpperCase(), target, headers, body, keepAlive, watch },
    rest: buf.subarray(end),
  };
}

function matches(match: ActiveRule["match"], method: string, watch: boolean): boolean {
  if (!match) return true;
  if (match.method !== undefined && match.method.toUpperCase() !== method) return false;
  if (match.watch !== undefined && match.watch !== watch) return false;
  return true;
}

function validate(f: Fault): void {
  const positive = (n: unknown, what: string, allowZero = true) => {
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
      throw new TypeError(`fault ${f.kind}: ${what} must be a ${allowZero ? "non-negative" : "positive"} number`);
    }
  };
  switch (f.kind) {
    case "none":
    case "blackhole":
    case "reset":
    case "truncated":
    case "never-ending":
    case "end-watch":
    case "lose-response":
      return;
    case "watch-events":
      if (!Array.isArray(f.events) || f.events.some((e) => typeof e !== "string")) {
        throw new TypeError("fault watch-events: events must be an array of strings");
      }
      return;
    case "latency":
      return positive(f.ms, "ms");
    case "trickle":
      return positive(f.bytesPerSecond, "bytesPerSecond", false);
    case "huge":
      return positive(f.bytes, "bytes");
    case "status":
      if (!Number.isInteger(f.status) || f.status < 200 || f.status > 999) {
        throw new TypeError("fault status: status must be an integer from 200 to 999");
      }
      if (typeof f.body !== "string") throw new TypeError("fault status: body must be a string");
      return;
    default:
      throw new TypeError(`unknown fault kind ${JSON.stringify((f as { kind?: unknown }).kind)}`);
  }
}

function statusLine(status: number, text?: string): string {
  return `HTTP/1.1 ${status} ${text || STATUS_CODES[status] || "Unknown"}\r\n`;
}

/** One client connection and the request it is serving. */
class Conn {
  readonly socket: tls.TLSSocket;
  buf: Uint8Array = EMPTY;
  busy = false;
  frozen = false;
  closed = false;
  /** A `100 Continue` was sent for the request being received. */
  continued = false;
  current?: ParsedRequest;
  upstream?: ClientRequest;
  /** The response being relayed is a chunked watch stream that last sent a whole line. */
  atLine = false;
  readonly whenClosed: Promise<void>;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #wakers = new Set<() => void>();

  constructor(socket: tls.TLSSocket) {
    this.socket = socket;
    this.whenClosed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.whenClosed.then(() => {
      this.closed = true;
      for (const t of this.#timers) clearTimeout(t);
      this.#timers.clear();
      for (const w of this.#wakers) w();
      this.#wakers.clear();
      this.upstream?.destroy();
    });
  }

  /** Resolves after `ms`, or early when the connection closes. */
  sleep(ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.#timers.delete(t);
        this.#wakers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.#timers.add(t);
      this.#wakers.add(done);
    });
  }

  /** Writes with back-pressure; resolves once the socket can take more, or closed. */
  write(data: Uint8Array | string): Promise<void> {
    if (this.closed || this.socket.destroyed) return Promise.resolve();
    if (this.socket.write(data)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off("drain", done);
        this.#wakers.delete(done);
        resolve();
      };
      this.socket.on("drain", done);
      this.#wakers.add(done);
    });
  }

  /** True when nothing more should be written: the socket is gone or blackholed. */
  get stopped(): boolean {
    return this.closed || this.frozen;
  }

  /** Stops all traffic on this connection and holds it open. */
  freeze(): void {
    this.frozen = true;
    this.upstream?.destroy();
  }

  /** Destroys the connection, with a TCP RST where the runtime supports it. */
  reset(): void {
    if (this.closed) return;
    const s = this.socket as tls.TLSSocket & { resetAndDestroy?: () => void };
    try {
      if (typeof s.resetAndDestroy === "function") s.resetAndDestroy();
      else s.destroy();
    } catch {
      s.destroy();
    }
    if (!s.destroyed) s.destroy();
  }
}

/**
 * Starts a fault-injecting proxy in front of `target`.
 *
 * @example Usage
 * ```ts ignore
 * const proxy = await startFaultProxy({ target: info.url, caCert, cert, key });
 * proxy.set({ kind: "status", status: 502, body: "<html>Bad Gateway</html>", contentType: "text/html" });
 * // ... point a replica at proxy.url ...
 * proxy.set({ fault: { kind: "reset" }, match: { method: "PUT" }, times: 1 });
 * await proxy.close();
 * ```
 */
export async function startFaultProxy(o: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(o.target);
  if (target.protocol !== "https:") throw new TypeError(`target must be an https URL, got ${o.target}`);
  const prefix = target.pathname.replace(/\/+$/, "");
  const targetHost = target.host;
  const agent = new https.Agent({ ca: o.caCert, keepAlive: true });
  const conns = new Set<Conn>();
  const stats: FaultProxyStats = {
    requests: 0,
    byMethod: {},
    faulted: 0,
    watches: 0,
    faultedWatches: 0,
    byFault: {},
    injected: 0,
    dropped: 0,
    recent: [],
  };
  const report = (e: Exchange) => {
    try {
      o.onExchange?.(e);
    } catch { /* a recorder's bug must not break the proxy */ }
  };
  let rule: ActiveRule | undefined;
  let closing = false;

  /** Picks the fault for a new request and counts it. */
  function decide(req: ParsedRequest): Fault {
    stats.requests++;
    stats.byMethod[req.method] = (stats.byMethod[req.method] ?? 0) + 1;
    if (req.watch) stats.watches++;
    const entry = { at: Date.now(), method: req.method, watch: req.watch, fault: "none" };
    stats.recent.push(entry);
    if (stats.recent.length > 200) stats.recent.shift();
    const r = rule;
    if (!r || !matches(r.match, req.method, req.watch)) return { kind: "none" };
    if (r.remaining !== undefined) {
      r.remaining--;
      if (r.remaining <= 0 && rule === r) rule = undefined;
    }
    stats.faulted++;
    const name = r.fault.kind === "status" ? `status ${r.fault.status}` : r.fault.kind;
    entry.fault = name;
    stats.byFault[name] = (stats.byFault[name] ?? 0) + 1;
    if (req.watch) {
      stats.faultedWatches++;
      stats.byFault[`${name} watch`] = (stats.byFault[`${name} watch`] ?? 0) + 1;
    }
    return r.fault;
  }

  function forward(conn: Conn, req: ParsedRequest, ex: Exchange): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of req.headers) {
        if (NOT_COPIED.has(k)) continue;
        headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
      }
      headers.host = targetHost;
      if (req.body.byteLength > 0 || !["GET", "HEAD", "DELETE", "OPTIONS"].includes(req.method)) {
        headers["content-length"] = String(req.body.byteLength);
      }
      const up = https.request({
        protocol: "https:",
        hostname: target.hostname.replace(/^\[|\]$/g, ""),
        port: target.port || 443,
        method: req.method,
        path: prefix + req.target,
        headers,
        agent,
      }, (res) => {
        ex.answeredAt = Date.now();
        ex.status = res.statusCode;
        // Errors surface through iteration; this keeps one that comes before it from going unhandled.
        res.on("error", () => {});
        resolve(res);
      });
      conn.upstream = up;
      up.on("error", reject);
      ex.sentAt = Date.now();
      up.end(req.body.byteLength > 0 ? req.body : undefined);
    });
  }

  /** The response head for an upstream answer, and how its body is framed. */
  function responseHead(req: ParsedRequest, res: IncomingMessage, forceLength?: number): [string, Framing] {
    const status = res.statusCode ?? 502;
    const noBody = req.method === "HEAD" || status === 204 || status === 304 || status < 200;
    const hasLength = res.headers["content-length"] !== undefined && res.headers["transfer-encoding"] === undefined;
    const framing: Framing = noBody ? "none" : forceLength !== undefined || hasLength ? "length" : "chunked";
    let head = statusLine(status, res.statusMessage);
    const raw = res.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const k = raw[i].toLowerCase();
      if (NOT_COPIED.has(k) && !(k === "content-length" && noBody)) continue;
      head += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    if (framing === "length") head += `Content-Length: ${forceLength ?? res.headers["content-length"]}\r\n`;
    if (framing === "chunked") head += "Transfer-Encoding: chunked\r\n";
    head += req.keepAlive ? "\r\n" : "Connection: close\r\n\r\n";
    return [head, framing];
  }

  /** Writes one piece of a body, framed; `trickle` spreads it over time. */
  async function sendBody(conn: Conn, data: Uint8Array, framing: Framing, bytesPerSecond?: number): Promise<void> {
    if (data.byteLength === 0 || framing === "none") return;
    const slice = bytesPerSecond ? Math.max(1, Math.floor(bytesPerSecond / 10)) : data.byteLength;
    for (let off = 0; off < data.byteLength; off += slice) {
      if (conn.stopped) return;
      const part = data.subarray(off, off + slice);
      if (framing === "chunked") {
        await conn.write(`${part.byteLength.toString(16)}\r\n`);
        await conn.write(part);
        await conn.write("\r\n");
      } else {
        await conn.write(part);
      }
      if (bytesPerSecond) await conn.sleep((part.byteLength / bytesPerSecond) * 1000);
    }
  }

  /** Relays an upstream answer: head, then the body as it arrives. Resolves when done. */
  /** Reads the whole upstream body (for the exchange record), up to the tee limit. */
  function tee(ex: Exchange, parts: Uint8Array[], chunk: Uint8Array, size: number): number {
    if (ex.watch || size > TEE_LIMIT) return size;
    parts.push(chunk);
    return size + chunk.byteLength;
  }

  function finish(ex: Exchange, parts: Uint8Array[], error?: string) {
    if (!ex.watch) {
      const all = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
      let off = 0;
      for (const p of parts) {
        all.set(p, off);
        off += p.byteLength;
      }
      ex.bytes = all;
      ex.body = dec.decode(all);
    }
    if (error) ex.error = error;
    const entry = stats.recent.find((q) => q.ex === ex);
    if (entry) entry.doneAt = Date.now();
    report(ex);
  }

  async function relay(
    conn: Conn,
    req: ParsedRequest,
    res: IncomingMessage,
    fault: Fault,
    ex: Exchange,
  ): Promise<void> {
    const parts: Uint8Array[] = [];
    let size = 0;
    if (fault.kind === "latency") await conn.sleep(fault.ms);
    if (conn.stopped) {
      finish(ex, parts, "client connection stopped");
      return void res.destroy();
    }
    const [head, framing] = responseHead(req, res);
    await conn.write(head);
    conn.atLine = req.watch && framing === "chunked";
    const bps = fault.kind === "trickle" ? fault.bytesPerSecond : undefined;
    try {
      for await (const chunk of res as AsyncIterable<Uint8Array>) {
        size = tee(ex, parts, chunk, size);
        if (conn.stopped) break;
        conn.atLine = false;
        await sendBody(conn, chunk, framing, bps);
        conn.atLine = req.watch && framing === "chunked" && chunk[chunk.byteLength - 1] === 10;
      }
    } catch (e) {
      conn.atLine = false;
      finish(ex, parts, `upstream body failed: ${e instanceof Error ? e.message : e}`);
      // The upstream body failed halfway: pass the failure on as a broken connection.
      if (!conn.stopped) conn.reset();
      return;
    }
    conn.atLine = false;
    finish(ex, parts);
    if (conn.stopped) return void res.destroy();
    if (framing === "chunked") await conn.write("0\r\n\r\n");
  }

  /** Lets the server answer in full, records it, and resets the client connection without a byte of it. */
  async function loseResponse(conn: Conn, res: IncomingMessage, ex: Exchange): Promise<void> {
    const parts: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of res as AsyncIterable<Uint8Array>) {
        size = tee(ex, parts, chunk, size);
        if (ex.watch) break;
      }
    } catch { /* recorded as far as it came */ }
    res.destroy();
    finish(ex, parts);
    conn.reset();
  }

  /** Forwards, then sends half of the body and closes the socket. */
  async function truncate(conn: Conn, req: ParsedRequest, res: IncomingMessage, ex: Exchange): Promise<void> {
    const parts: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of res as AsyncIterable<Uint8Array>) {
        if (conn.stopped) break;
        parts.push(chunk);
        size += chunk.byteLength;
        // A watch never ends: its first event is enough to cut in half.
        if (req.watch || size > BODY_LIMIT) break;
      }
    } catch { /* cut what we have */ }
    res.destroy();
    finish(ex, parts);
    if (conn.stopped) return;
    const all = new Uint8Array(size);
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.byteLength;
    }
    const half = all.subarray(0, Math.floor(size / 2));
    const [head, framing] = responseHead(req, res, req.watch ? undefined : Math.max(size, 2));
    await conn.write(head);
    await sendBody(conn, half, framing);
    // Let the bytes leave before the socket is torn down.
    await conn.sleep(20);
    conn.socket.destroy();
  }

  async function answer(
    conn: Conn,
    req: ParsedRequest,
    status: number,
    body: string,
    contentType: string,
    headers: Record<string, string> = {},
  ): Promise<void> {
    const bytes = enc.encode(body);
    let head = statusLine(status);
    const names = new Set(Object.keys(headers).map((k) => k.toLowerCase()));
    if (!names.has("content-type")) head += `Content-Type: ${contentType}\r\n`;
    for (const [k, v] of Object.entries(headers)) {
      if (NOT_COPIED.has(k.toLowerCase())) continue;
      head += `${k}: ${v}\r\n`;
    }
    head += `Content-Length: ${req.method === "HEAD" ? 0 : bytes.byteLength}\r\n`;
    head += req.keepAlive ? "\r\n" : "Connection: close\r\n\r\n";
    await conn.write(head);
    if (req.method !== "HEAD") await conn.write(bytes);
  }

  async function huge(conn: Conn, req: ParsedRequest, total: number): Promise<void> {
    const prefix = enc.encode(
      '{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"huge","annotations":{"padding":"',
    );
    const suffix = enc.encode('"}}}');
    let head = statusLine(200) + "Content-Type: application/json\r\n" + `Content-Length: ${total}\r\n`;
    head += req.keepAlive ? "\r\n" : "Connection: close\r\n\r\n";
    await conn.write(head);
    if (req.method === "HEAD") return;
    const filler = new Uint8Array(64 * 1024).fill(0x78); // "x"
    let sent = 0;
    const put = async (b: Uint8Array) => {
      const n = Math.min(b.byteLength, total - sent);
      if (n <= 0 || conn.stopped) return;
      await conn.write(b.subarray(0, n));
      sent += n;
    };
    await put(prefix);
    while (!conn.stopped && total - sent > suffix.byteLength) {
      await put(filler.subarray(0, Math.min(filler.byteLength, total - sent - suffix.byteLength)));
    }
    await put(suffix);
  }

  async function neverEnding(conn: Conn): Promise<void> {
    await conn.write(statusLine(200) + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    await sendBody(conn, enc.encode('{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{'), "chunked");
    while (!conn.stopped) {
      await conn.sleep(200);
      await sendBody(conn, enc.encode(" "), "chunked");
    }
    // Hold the socket until the client or close() ends it.
    await conn.whenClosed;
  }

  /** Serves one request; resolves once the response is complete and the connection may be reused. */
  async function handle(conn: Conn, req: ParsedRequest): Promise<boolean> {
    const fault = decide(req);
    switch (fault.kind) {
      case "blackhole":
        conn.freeze();
        return false;
      case "reset":
        conn.reset();
        return false;
      case "status":
        await answer(
          conn,
          req,
          fault.status,
          fault.body,
          fault.contentType ?? "text/plain; charset=utf-8",
          fault.headers,
        );
        return true;
      case "huge":
        await huge(conn, req, fault.bytes);
        return true;
      case "never-ending":
        await neverEnding(conn);
        return false;
      case "watch-events":
        await conn.write(statusLine(200) + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (const e of fault.events) await sendBody(conn, enc.encode(e.endsWith("\n") ? e : `${e}\n`), "chunked");
        await conn.whenClosed;
        return false;
      case "end-watch":
        await conn.write(
          statusLine(200) + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n" +
            (req.keepAlive ? "\r\n" : "Connection: close\r\n\r\n") + "0\r\n\r\n",
        );
        return true;
      default:
        break;
    }
    if (fault.kind === "latency") await conn.sleep(fault.ms);
    if (conn.stopped) return false;
    let res: IncomingMessage;
    const ex: Exchange = {
      method: req.method,
      target: req.target,
      watch: req.watch,
      fault: fault.kind,
      sentAt: 0,
      requestBytes: req.body,
    };
    const last = stats.recent[stats.recent.length - 1];
    if (last && !last.ex) last.ex = ex;
    try {
      res = await forward(conn, req, ex);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      finish(ex, [], msg);
      if (conn.stopped) return false;
      await answer(conn, req, 502, `fault proxy: cannot reach ${o.target}: ${msg}\n`, "text/plain; charset=utf-8");
      return true;
    }
    if (fault.kind === "truncated") {
      await truncate(conn, req, res, ex);
      return false;
    }
    if (fault.kind === "lose-response") {
      await loseResponse(conn, res, ex);
      return false;
    }
    await relay(conn, req, res, fault, ex);
    return !conn.stopped;
  }

  /** Serves the requests buffered on `conn`, one at a time. */
  function pump(conn: Conn): void {
    if (conn.busy || conn.stopped) return;
    let parsed: ParseResult;
    try {
      parsed = parseRequest(conn.buf);
    } catch {
      parsed = { error: 400 };
    }
    if (!parsed) return;
    if ("error" in parsed) {
      conn.socket.end(statusLine(parsed.error) + "Content-Length: 0\r\nConnection: close\r\n\r\n");
      conn.frozen = true; // ignore anything else on this connection
      return;
    }
    const { request, rest } = parsed;
    conn.buf = rest.byteLength ? rest.slice() : EMPTY;
    conn.busy = true;
    conn.continued = false;
    conn.current = request;
    handle(conn, request).then(
      (reusable) => {
        conn.busy = false;
        conn.current = undefined;
        conn.upstream = undefined;
        if (conn.stopped) return;
        if (!reusable || !request.keepAlive) {
          conn.socket.end();
          return;
        }
        pump(conn);
      },
      () => conn.reset(),
    );
  }

  const server = tls.createServer({ cert: o.cert, key: o.key }, (socket) => {
    if (closing) return void socket.destroy();
    const conn = new Conn(socket);
    conns.add(conn);
    conn.whenClosed.then(() => conns.delete(conn));
    socket.on("error", () => {});
    socket.on("data", (d: Uint8Array) => {
      if (conn.stopped) return; // blackholed: read and drop
      conn.buf = concat(conn.buf, d);
      if (conn.buf.byteLength > HEAD_LIMIT + BODY_LIMIT) {
        conn.reset();
        return;
      }
      // Ask for the body when the client waits for it.
      if (!conn.busy) {
        const headEnd = findHeadEnd(conn.buf);
        if (headEnd >= 0) {
          const head = dec.decode(conn.buf.subarray(0, headEnd)).toLowerCase();
          if (/\r\nexpect:\s*100-continue/.test(head) && !conn.continued) {
            conn.continued = true;
            socket.write("HTTP/1.1 100 Continue\r\n\r\n");
          }
        }
      }
      pump(conn);
    });
  });
  server.on("tlsClientError", () => {});

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 0, o.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", () => {});
  const addr = server.address() as AddressInfo;
  const host = o.host ?? "127.0.0.1";
  const url = `https://${host.includes(":") ? `[${host}]` : host}:${addr.port}`;

  function set(f: Fault | FaultRule): void {
    const r: FaultRule = "fault" in f ? f : { fault: f };
    validate(r.fault);
    if (r.times !== undefined && (!Number.isInteger(r.times) || r.times < 1)) {
      throw new TypeError("times must be a positive integer");
    }
    if (r.fault.kind === "none") {
      rule = undefined;
      return;
    }
    rule = { fault: r.fault, match: r.match, remaining: r.times };
    if (r.times !== undefined) return;
    if (r.fault.kind !== "blackhole" && r.fault.kind !== "reset") return;
    for (const conn of conns) {
      const c = conn.current;
      // An idle kept-alive connection is left alone by a blackhole: like a TCP
      // connection across a partition that heals, it works again once cleared.
      if (!c && (r.match || r.fault.kind === "blackhole")) continue;
      if (c && !matches(r.match, c.method, c.watch)) continue;
      if (r.fault.kind === "reset") conn.reset();
      else conn.freeze();
    }
  }

  let closed: Promise<void> | undefined;
  return {
    url,
    port: addr.port,
    stats,
    set,
    clear: () => set({ kind: "none" }),
    dropWatches() {
      let n = 0;
      for (const conn of conns) {
        if (conn.current?.watch && !conn.stopped) {
          conn.reset();
          n++;
        }
      }
      stats.dropped += n;
      return n;
    },
    injectWatchEvent(line: string) {
      let n = 0;
      const bytes = enc.encode(line.endsWith("\n") ? line : `${line}\n`);
      for (const conn of conns) {
        if (!conn.current?.watch || !conn.atLine || conn.stopped) continue;
        n++;
        void sendBody(conn, bytes, "chunked");
      }
      stats.injected += n;
      return n;
    },
    close() {
      closed ??= (async () => {
        closing = true;
        rule = undefined;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const conn of conns) {
          conn.upstream?.destroy();
          conn.socket.destroy();
        }
        agent.destroy();
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          Promise.all([stopped, ...[...conns].map((c) => c.whenClosed)]),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000))),
        ]);
        clearTimeout(timer);
      })();
      return closed;
    },
  };
}

/** One connection through a {@linkcode TcpProxy}; times are `Date.now()`. */
export interface TcpConnection {
  /** When the client connected. */
  openedAt: number;
  /** First byte from the server passed to the client. */
  firstReplyAt?: number;
  /** When `freeze()` froze it. */
  frozenAt?: number;
  /** First byte the client sent while frozen: a request that got stuck. */
  stalledAt?: number;
  /** When either side closed it. */
  closedAt?: number;
  /** Bytes passed server -> client after the connection was opened. */
  bytesToClient: number;
}

/** A running TCP relay; see {@linkcode startTcpProxy}. */
export interface TcpProxy {
  /** Port bound on 127.0.0.1 (or the host asked for). */
  port: number;
  /**
   * Freezes every established connection: nothing is passed either way and
   * nothing is closed (no FIN, no RST), as when a NAT loses its state or a
   * node dies without a word. Connections opened later pass. Returns how many.
   */
  freeze(): number;
  /** Lets frozen connections flow again, delivering what was held back. */
  heal(): void;
  /** Every connection so far, in order of opening. */
  connections: TcpConnection[];
  /** Stops listening and destroys every connection. */
  close(): Promise<void>;
}

/**
 * Starts a TCP relay to `target` (`host:port`). TLS and HTTP/2 pass through
 * untouched, so this is the way to fault a runtime's own connection reuse.
 *
 * @example Usage
 * ```ts ignore
 * const relay = await startTcpProxy({ target: "127.0.0.1:6443" });
 * relay.freeze(); // established connections go silent
 * relay.heal();
 * await relay.close();
 * ```
 */
export async function startTcpProxy(o: { target: string; host?: string; port?: number }): Promise<TcpProxy> {
  const i = o.target.lastIndexOf(":");
  const targetHost = o.target.slice(0, i).replace(/^\[|\]$/g, "");
  const targetPort = Number(o.target.slice(i + 1));
  type Link = {
    info: TcpConnection;
    client: net.Socket;
    server: net.Socket;
    frozen: boolean;
    held: { to: "client" | "server"; data: Uint8Array }[];
  };
  const links = new Set<Link>();
  const connections: TcpConnection[] = [];
  const server = net.createServer((client) => {
    const info: TcpConnection = { openedAt: Date.now(), bytesToClient: 0 };
    connections.push(info);
    const upstream = net.connect({ host: targetHost, port: targetPort });
    const link: Link = { info, client, server: upstream, frozen: false, held: [] };
    links.add(link);
    const pass = (to: "client" | "server", data: Uint8Array) => {
      if (link.frozen) {
        if (to === "server" && info.stalledAt === undefined) info.stalledAt = Date.now();
        link.held.push({ to, data });
        return;
      }
      if (to === "client") {
        info.firstReplyAt ??= Date.now();
        info.bytesToClient += data.byteLength;
        client.write(data);
      } else {
        upstream.write(data);
      }
    };
    client.on("data", (d: Uint8Array) => pass("server", d));
    upstream.on("data", (d: Uint8Array) => pass("client", d));
    const end = () => {
      info.closedAt ??= Date.now();
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    // A frozen link does not pass a close on either: the other side hears nothing.
    const onClose = () => {
      if (link.frozen) {
        info.closedAt ??= Date.now();
        return;
      }
      end();
    };
    client.on("close", onClose);
    upstream.on("close", onClose);
    client.on("error", () => {});
    upstream.on("error", () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 0, o.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    connections,
    freeze() {
      let n = 0;
      const now = Date.now();
      for (const l of links) {
        if (l.frozen) continue;
        l.frozen = true;
        l.info.frozenAt = now;
        n++;
      }
      return n;
    },
    heal() {
      for (const l of [...links]) {
        if (!l.frozen) continue;
        l.frozen = false;
        for (const h of l.held.splice(0)) {
          if (h.to === "client") {
            l.info.firstReplyAt ??= Date.now();
            l.info.bytesToClient += h.data.byteLength;
            l.client.write(h.data);
          } else {
            l.server.write(h.data);
          }
        }
        if (l.client.destroyed || l.server.destroyed) {
          l.client.destroy();
          l.server.destroy();
          links.delete(l);
        }
      }
    },
    async close() {
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const l of links) {
        l.client.destroy();
        l.server.destroy();
      }
      links.clear();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([stopped, new Promise<void>((r) => (timer = setTimeout(r, 1000)))]);
      clearTimeout(timer);
    },
  };
}
