/**
 * The response of the `node:https` adapter: status, headers and a streamed
 * body, with the readers of a `Response` (`text`, `json`, `arrayBuffer`,
 * `bytes`, `blob`, `clone`). On Node 20 the first use of the global `Headers`,
 * `Response` or `Request` loads the bundled fetch implementation (undici),
 * about 5 MiB of resident memory and tens of milliseconds at start, which a
 * replica that talks `node:https` never needs; these classes stand in for them.
 *
 * @module
 */

/**
 * Copies request headers (a record, pairs, or a `Headers`) into a record with
 * lower-case names, without touching the global `Headers`.
 *
 * @example Usage
 * ```ts
 * import { headerRecord } from "./node_response.ts";
 * console.log(headerRecord({ Accept: "application/json" })); // { accept: "application/json" }
 * ```
 */
export function headerRecord(init: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (k: string, v: string) => {
    const name = k.toLowerCase();
    out[name] = name in out ? `${out[name]}, ${v}` : String(v);
  };
  if (!init) return out;
  if (Array.isArray(init)) {
    for (const [k, v] of init as [string, string][]) add(k, v);
  } else if (typeof (init as { forEach?: unknown }).forEach === "function") {
    (init as { forEach(cb: (v: string, k: string) => void): void }).forEach((v, k) => add(k, v));
  } else {
    for (const [k, v] of Object.entries(init as Record<string, string>)) add(k, v);
  }
  return out;
}

/**
 * Read-only response headers from Node's `rawHeaders` (name, value, name,
 * value, …), with the reading half of the `Headers` interface.
 *
 * @example Usage
 * ```ts
 * import { ResponseHeaders } from "./node_response.ts";
 * const h = new ResponseHeaders(["Content-Type", "application/json"]);
 * console.log(h.get("content-type")); // "application/json"
 * ```
 */
export class ResponseHeaders {
  #map = new Map<string, string>();

  /** Headers from alternating names and values. */
  constructor(raw: readonly string[] = []) {
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      const had = this.#map.get(name);
      this.#map.set(name, had === undefined ? raw[i + 1] : `${had}, ${raw[i + 1]}`);
    }
  }

  /** The value of `name`, or null. */
  get(name: string): string | null {
    return this.#map.get(name.toLowerCase()) ?? null;
  }

  /** Whether `name` is present. */
  has(name: string): boolean {
    return this.#map.has(name.toLowerCase());
  }

  /** Calls `cb(value, name)` for each header, names sorted as `Headers` does. */
  forEach(cb: (value: string, name: string, parent: ResponseHeaders) => void): void {
    for (const [k, v] of this) cb(v, k, this);
  }

  /** The [name, value] pairs, names sorted. */
  entries(): IterableIterator<[string, string]> {
    return [...this.#map].sort((a, b) => (a[0] < b[0] ? -1 : 1))[Symbol.iterator]();
  }

  /** The names, sorted. */
  keys(): IterableIterator<string> {
    return [...this.entries()].map((e) => e[0])[Symbol.iterator]();
  }

  /** The values, in name order. */
  values(): IterableIterator<string> {
    return [...this.entries()].map((e) => e[1])[Symbol.iterator]();
  }

  /** The [name, value] pairs, names sorted. */
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }
}

/**
 * A response with a streamed body, read once (or cloned before).
 *
 * @example Usage
 * ```ts
 * import { ResponseHeaders, StreamResponse } from "./node_response.ts";
 * const body = new Blob(['{"kind":"Lease"}']).stream();
 * const res = new StreamResponse(body, 200, "OK", new ResponseHeaders());
 * console.log(res.ok, ((await res.json()) as { kind: string }).kind); // true "Lease"
 * ```
 */
export class StreamResponse {
  /** HTTP status. */
  readonly status: number;
  /** HTTP reason phrase. */
  readonly statusText: string;
  /** Response headers. */
  readonly headers: ResponseHeaders;
  /** The body, or null (204, 304, HEAD). */
  readonly body: ReadableStream<Uint8Array> | null;
  /** As for a same-origin fetch. */
  readonly type = "basic";
  /** Redirects are never followed. */
  readonly redirected = false;
  /** The request URL. */
  readonly url: string;

  /** Wraps a body stream (or null) with its status and headers. */
  constructor(
    body: ReadableStream<Uint8Array> | null,
    status: number,
    statusText: string,
    headers: ResponseHeaders,
    url = "",
  ) {
    this.body = body;
    this.status = status;
    this.statusText = statusText;
    this.headers = headers;
    this.url = url;
  }

  /** Status 200–299. */
  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /** Whether the body was read or is being read. */
  get bodyUsed(): boolean {
    return !!this.body && (this.body.locked || this.#used);
  }

  #used = false;

  /** The whole body as bytes. */
  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    if (this.bodyUsed) throw new TypeError("the response body was already read");
    if (!this.body) return new Uint8Array(0);
    this.#used = true;
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = this.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.byteLength;
    }
    return all;
  }

  /** The whole body. */
  async arrayBuffer(): Promise<ArrayBuffer> {
    return (await this.bytes()).buffer;
  }

  /** The whole body, decoded as UTF-8. */
  async text(): Promise<string> {
    return new TextDecoder().decode(await this.bytes());
  }

  /** The whole body, parsed as JSON. */
  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  /** The whole body as a Blob with the response's content type. */
  async blob(): Promise<Blob> {
    return new Blob([await this.bytes()], { type: this.headers.get("content-type") ?? "" });
  }

  /** A copy whose body can be read independently of this one's. */
  clone(): StreamResponse {
    if (this.bodyUsed) throw new TypeError("the response body was already read");
    if (!this.body) return new StreamResponse(null, this.status, this.statusText, this.headers, this.url);
    const [a, b] = this.body.tee();
    (this as { body: ReadableStream<Uint8Array> | null }).body = a;
    return new StreamResponse(b, this.status, this.statusText, this.headers, this.url);
  }
}
