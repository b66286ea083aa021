/**
 * An in-memory stand-in for the Lease endpoints of a kube-apiserver
 * (`coordination.k8s.io/v1`), for the local demo and fault-injection tests.
 *
 * It runs unchanged under Deno, Bun and Node: only `node:http` and Web APIs are
 * used. Status bodies, optimistic concurrency, MicroTime checks, watch streams
 * (with bookmarks, timeouts and 410 Expired) follow the real server's behaviour;
 * the deliberate differences are listed in the notes of {@linkcode startLeaseServer}.
 *
 * @module
 */

import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** Options of {@linkcode startLeaseServer}. */
export interface LeaseServerOptions {
  /** Port to listen on; `0` (the default) lets the system pick one. */
  port?: number;
  /** Address to listen on; default `127.0.0.1`. */
  host?: string;
  /** When set, every request must carry `Authorization: Bearer <token>`, else 401. */
  token?: string;
  /** Milliseconds between BOOKMARK events on watches that allow them; default 30000. */
  bookmarkIntervalMs?: number;
}

/** One request as the server answered it. */
export interface LeaseServerRequest {
  /** HTTP method, upper case. */
  method: string;
  /** Request target: path and query string. */
  path: string;
  /** Status code sent (200 for a watch stream, whatever it carried). */
  status: number;
}

/** A running server; see {@linkcode startLeaseServer}. */
export interface LeaseServer {
  /** Base URL, e.g. `http://127.0.0.1:40123`, without a trailing slash. */
  url: string;
  /** Port actually bound. */
  port: number;
  /** Ends open watch streams, drops every connection and stops listening. Safe to call twice. */
  close(): Promise<void>;
  /** Every answered request, oldest first. */
  requests: LeaseServerRequest[];
  /** How many requests used `method` (case-insensitive); watches count as `GET`. */
  countBy(method: string): number;
  /** A snapshot (deep copies) of the stored Leases, keyed `namespace/name`. */
  leases(): Map<string, unknown>;
  /**
   * Stores `lease` as `namespace/name` without validation (broken objects are
   * allowed), assigning a new resourceVersion and notifying watchers.
   */
  put(ns: string, name: string, lease: object): void;
  /** Removes a Lease, if present, and notifies watchers. */
  delete(ns: string, name: string): void;
}

type Json = Record<string, unknown>;
type EventType = "ADDED" | "MODIFIED" | "DELETED";

interface Change {
  rv: number;
  type: EventType;
  ns: string;
  name: string;
  object: Json;
}

interface Watcher {
  offer(change: Change): void;
  end(): void;
}

interface FieldError {
  field: string;
  reason: string;
  message: string;
}

const GROUP = "coordination.k8s.io";
const API_VERSION = "coordination.k8s.io/v1";
const RESOURCE = "leases.coordination.k8s.io";
const BODY_LIMIT = 1 << 20;
const HISTORY_LIMIT = 100;
const DEFAULT_WATCH_TIMEOUT_S = 300;
const MICROTIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const ROUTE = /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/]+))?$/;

const SPEC_FIELDS = new Set([
  "holderIdentity",
  "leaseDurationSeconds",
  "acquireTime",
  "renewTime",
  "leaseTransitions",
  "strategy",
  "preferredHolder",
]);
const META_STRING_FIELDS = new Set([
  "name",
  "generateName",
  "namespace",
  "selfLink",
  "uid",
  "resourceVersion",
  "creationTimestamp",
  "deletionTimestamp",
]);
const META_OTHER_FIELDS = new Set([
  "labels",
  "annotations",
  "generation",
  "deletionGracePeriodSeconds",
  "ownerReferences",
  "finalizers",
  "managedFields",
]);

/** A Kubernetes `Status` to answer with. */
class StatusError extends Error {
  body: Json;
  headers: Record<string, string>;
  constructor(body: Json, headers: Record<string, string> = {}) {
    super(String(body.message));
    this.body = body;
    this.headers = headers;
  }
}

function status(code: number, reason: string, message: string, details?: Json): Json {
  const s: Json = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason };
  if (details) s.details = details;
  s.code = code;
  return s;
}

const leaseDetails = (name: string): Json => ({ name, group: GROUP, kind: "leases" });

const fail = (code: number, reason: string, message: string, details?: Json): StatusError =>
  new StatusError(status(code, reason, message, details));

const notFound = (name: string) => fail(404, "NotFound", `${RESOURCE} "${name}" not found`, leaseDetails(name));

const badRequest = (message: string) => fail(400, "BadRequest", message);

const cannotDecode = (why: string) => badRequest(`Lease in version "v1" cannot be handled as a Lease: ${why}`);

function invalid(name: string, errors: FieldError[]): StatusError {
  const parts = errors.map((e) => `${e.field}: ${e.message}`);
  const list = parts.length === 1 ? parts[0] : `[${parts.join(", ")}]`;
  return fail(422, "Invalid", `Lease.${GROUP} "${name}" is invalid: ${list}`, {
    name,
    group: GROUP,
    kind: "Lease",
    causes: errors.map((e) => ({ reason: e.reason, message: e.message, field: e.field })),
  });
}

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

const isInt32 = (v: unknown): v is number =>
  typeof v === "number" && Number.isInteger(v) && v >= -2147483648 && v <= 2147483647;

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

/** JSON with sorted keys, to tell whether an update changes anything. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isObject(v)) {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

const typed = (obj: Json): Json => ({ kind: "Lease", apiVersion: API_VERSION, ...clone(obj) });

const nowSeconds = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");

const goType = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "object" ? "object" : typeof v;

/**
 * Turns a request body into a stored Lease the way the API server decodes it:
 * wrong JSON types are a 400, unknown fields are dropped with a warning, null
 * optional fields are dropped. Badly formatted MicroTimes are a 422 here.
 */
function decodeLease(body: unknown, warnings: string[]): Json {
  if (!isObject(body)) throw cannotDecode(`cannot unmarshal ${goType(body)} into Go value of type v1.Lease`);
  if (body.apiVersion !== undefined && body.apiVersion !== API_VERSION) {
    throw badRequest(
      `the API version in the data (${
        String(body.apiVersion)
      }) does not match the expected API version (${API_VERSION})`,
    );
  }
  if (body.kind !== undefined && body.kind !== "Lease") {
    throw badRequest(`the kind in the data (${String(body.kind)}) does not match the expected kind (Lease)`);
  }
  for (const k of Object.keys(body)) {
    if (k !== "apiVersion" && k !== "kind" && k !== "metadata" && k !== "spec") warnings.push(`unknown field "${k}"`);
  }

  const metaIn = body.metadata ?? {};
  if (!isObject(metaIn)) throw cannotDecode(`cannot unmarshal ${goType(metaIn)} into Go struct field Lease.metadata`);
  const metadata: Json = {};
  for (const [k, v] of Object.entries(metaIn)) {
    if (v === null) continue;
    if (META_STRING_FIELDS.has(k)) {
      if (typeof v !== "string") {
        throw cannotDecode(
          `cannot unmarshal ${goType(v)} into Go struct field ObjectMeta.metadata.${k} of type string`,
        );
      }
      if (v !== "") metadata[k] = v;
    } else if (k === "labels" || k === "annotations") {
      if (!isObject(v) || Object.values(v).some((x) => typeof x !== "string")) {
        throw cannotDecode(`cannot unmarshal into Go struct field ObjectMeta.metadata.${k} of type map[string]string`);
      }
      metadata[k] = clone(v);
    } else if (META_OTHER_FIELDS.has(k)) {
      metadata[k] = clone(v);
    } else {
      warnings.push(`unknown field "metadata.${k}"`);
    }
  }

  const specIn = body.spec ?? {};
  if (!isObject(specIn)) throw cannotDecode(`cannot unmarshal ${goType(specIn)} into Go struct field Lease.spec`);
  const spec: Json = {};
  const timeErrors: FieldError[] = [];
  for (const [k, v] of Object.entries(specIn)) {
    if (!SPEC_FIELDS.has(k)) {
      warnings.push(`unknown field "spec.${k}"`);
      continue;
    }
    if (v === null) continue;
    if (k === "leaseDurationSeconds" || k === "leaseTransitions") {
      if (!isInt32(v)) {
        throw cannotDecode(
          `cannot unmarshal ${JSON.stringify(v)} into Go struct field LeaseSpec.spec.${k} of type int32`,
        );
      }
    } else if (typeof v !== "string") {
      throw cannotDecode(`cannot unmarshal ${goType(v)} into Go struct field LeaseSpec.spec.${k} of type string`);
    } else if ((k === "acquireTime" || k === "renewTime") && !MICROTIME.test(v)) {
      timeErrors.push({
        field: `spec.${k}`,
        reason: "FieldValueInvalid",
        message: `Invalid value: ${
          JSON.stringify(v)
        }: must be a MicroTime in UTC with exactly six fractional digits (2006-01-02T15:04:05.000000Z)`,
      });
    }
    spec[k] = v;
  }
  if (timeErrors.length) {
    const name = typeof metadata.name === "string" ? metadata.name : "";
    throw invalid(name, timeErrors);
  }
  return { metadata, spec };
}

/** Field validation of a decoded Lease (the 422s). */
function validate(lease: Json): FieldError[] {
  const errors: FieldError[] = [];
  const meta = lease.metadata as Json;
  const spec = lease.spec as Json;
  const name = meta.name;
  if (typeof name !== "string" || name === "") {
    errors.push({
      field: "metadata.name",
      reason: "FieldValueRequired",
      message: "Required value: name or generateName is required",
    });
  } else if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
    errors.push({
      field: "metadata.name",
      reason: "FieldValueInvalid",
      message: `Invalid value: ${
        JSON.stringify(name)
      }: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
    });
  }
  const d = spec.leaseDurationSeconds;
  if (typeof d === "number" && d <= 0) {
    errors.push({
      field: "spec.leaseDurationSeconds",
      reason: "FieldValueInvalid",
      message: `Invalid value: ${d}: must be greater than 0`,
    });
  }
  const t = spec.leaseTransitions;
  if (typeof t === "number" && t < 0) {
    errors.push({
      field: "spec.leaseTransitions",
      reason: "FieldValueInvalid",
      message: `Invalid value: ${t}: must be greater than or equal to 0`,
    });
  }
  return errors;
}

/** Parses a `fieldSelector` on `metadata.name` / `metadata.namespace`. */
function parseFieldSelector(raw: string | null): (ns: string, name: string) => boolean {
  const terms: { key: string; equal: boolean; value: string }[] = [];
  for (const term of (raw ?? "").split(",")) {
    if (term.trim() === "") continue;
    const m = /^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(term);
    if (!m) throw badRequest(`invalid field selector: ${JSON.stringify(term)}`);
    if (m[1] !== "metadata.name" && m[1] !== "metadata.namespace") {
      throw badRequest(`field label not supported: ${m[1]}`);
    }
    terms.push({ key: m[1], equal: m[2] !== "!=", value: m[3] });
  }
  return (ns, name) => terms.every((t) => ((t.key === "metadata.name" ? name : ns) === t.value) === t.equal);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = () =>
      new StatusError(
        status(413, "RequestEntityTooLarge", `Request entity too large: limit is ${BODY_LIMIT}`),
        { Connection: "close" },
      );
    const declared = Number(req.headers["content-length"]);
    if (declared > BODY_LIMIT) {
      reject(tooLarge());
      return;
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    let settled = false;
    req.on("data", (chunk: Uint8Array | string) => {
      if (settled) return;
      const bytes = typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk;
      size += bytes.length;
      if (size > BODY_LIMIT) {
        settled = true;
        reject(tooLarge());
        return;
      }
      chunks.push(bytes);
    });
    req.on("end", () => {
      if (settled) return;
      settled = true;
      const all = new Uint8Array(size);
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.length;
      }
      resolve(new TextDecoder().decode(all));
    });
    req.on("error", (e: unknown) => {
      if (settled) return;
      settled = true;
      reject(e);
    });
  });
}

async function readJson(req: IncomingMessage, required: boolean): Promise<unknown> {
  const text = await readBody(req);
  if (text.trim() === "") {
    if (required) throw cannotDecode("empty request body");
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw cannotDecode(`invalid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * Starts the server and resolves once it listens.
 *
 * Notes on where it knowingly differs from a real kube-apiserver:
 * - a PUT on a missing Lease is a 404 (the real server creates it, since Leases allow create-on-update);
 * - a MicroTime that is not `YYYY-MM-DDTHH:MM:SS.ffffffZ` is a 422 Invalid (the real server fails to
 *   decode it with a 400 BadRequest);
 * - PATCH, deletecollection and cluster-wide paths are not served (405 / 404);
 * - `labelSelector`, `limit` and `continue` are ignored.
 */
export async function startLeaseServer(opts: LeaseServerOptions = {}): Promise<LeaseServer> {
  const host = opts.host ?? "127.0.0.1";
  const token = opts.token;
  const bookmarkMs = opts.bookmarkIntervalMs ?? 30_000;

  const store = new Map<string, Json>();
  const history: Change[] = [];
  const watchers = new Set<Watcher>();
  const requests: LeaseServerRequest[] = [];
  let revision = 0;
  /** resourceVersion of the newest change that fell out of `history`. */
  let compacted = 0;
  let closing: Promise<void> | undefined;

  const keyOf = (ns: string, name: string) => `${ns}/${name}`;

  function commit(type: EventType, ns: string, name: string, object: Json): void {
    const change: Change = { rv: revision, type, ns, name, object: clone(object) };
    history.push(change);
    while (history.length > HISTORY_LIMIT) compacted = history.shift()!.rv;
    for (const w of [...watchers]) w.offer(change);
  }

  function storePut(ns: string, name: string, obj: Json): Json {
    const key = keyOf(ns, name);
    const existed = store.has(key);
    revision += 1;
    (obj.metadata as Json).resourceVersion = String(revision);
    store.set(key, obj);
    commit(existed ? "MODIFIED" : "ADDED", ns, name, obj);
    return obj;
  }

  function storeDelete(ns: string, name: string): Json | undefined {
    const key = keyOf(ns, name);
    const old = store.get(key);
    if (!old) return undefined;
    store.delete(key);
    revision += 1;
    const gone = clone(old);
    (gone.metadata as Json).resourceVersion = String(revision);
    commit("DELETED", ns, name, gone);
    return old;
  }

  function authorized(req: IncomingMessage): boolean {
    if (token === undefined) return true;
    const m = /^\s*bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    return m !== null && m[1] === token;
  }

  function sendJson(
    res: ServerResponse,
    code: number,
    body: unknown,
    headers: Record<string, string | string[]> = {},
  ): void {
    const bytes = new TextEncoder().encode(JSON.stringify(body));
    res.writeHead(code, {
      "Content-Type": "application/json",
      "Cache-Control": "no-cache, private",
      "Content-Length": String(bytes.length),
      ...headers,
    });
    res.end(bytes);
  }

  async function create(req: IncomingMessage, ns: string): Promise<[number, Json, string[]]> {
    const warnings: string[] = [];
    const lease = decodeLease(await readJson(req, true), warnings);
    const meta = lease.metadata as Json;
    if (meta.namespace !== undefined && meta.namespace !== ns) {
      throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
    }
    if (meta.name === undefined && typeof meta.generateName === "string") {
      meta.name = meta.generateName + crypto.randomUUID().replace(/-/g, "").slice(0, 5);
    }
    const errors = validate(lease);
    if (errors.length) throw invalid(typeof meta.name === "string" ? meta.name : "", errors);
    const name = meta.name as string;
    if (meta.resourceVersion !== undefined) {
      throw fail(500, "InternalError", "resourceVersion should not be set on objects to be created");
    }
    if (store.has(keyOf(ns, name))) {
      throw fail(409, "AlreadyExists", `${RESOURCE} "${name}" already exists`, leaseDetails(name));
    }
    meta.namespace = ns;
    meta.uid = crypto.randomUUID();
    meta.creationTimestamp = nowSeconds();
    delete meta.deletionTimestamp;
    delete meta.selfLink;
    return [201, typed(storePut(ns, name, lease)), warnings];
  }

  async function update(req: IncomingMessage, ns: string, name: string): Promise<[number, Json, string[]]> {
    const warnings: string[] = [];
    const lease = decodeLease(await readJson(req, true), warnings);
    const meta = lease.metadata as Json;
    if (meta.namespace !== undefined && meta.namespace !== ns) {
      throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
    }
    if (meta.name !== name) {
      throw badRequest(
        `the name of the object (${String(meta.name ?? "")}) does not match the name on the URL (${name})`,
      );
    }
    const old = store.get(keyOf(ns, name));
    if (!old) throw notFound(name);
    const oldMeta = old.metadata as Json;
    if (meta.uid !== undefined && meta.uid !== oldMeta.uid) {
      throw fail(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${RESOURCE} "${name}": Precondition failed: UID in precondition: ${
          String(meta.uid)
        }, UID in object meta: ${String(oldMeta.uid)}`,
        leaseDetails(name),
      );
    }
    if (meta.resourceVersion === undefined) {
      throw invalid(name, [{
        field: "metadata.resourceVersion",
        reason: "FieldValueInvalid",
        message: "Invalid value: 0x0: must be specified for an update",
      }]);
    }
    if (meta.resourceVersion !== oldMeta.resourceVersion) {
      throw fail(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${RESOURCE} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        leaseDetails(name),
      );
    }
    const errors = validate(lease);
    if (errors.length) throw invalid(name, errors);
    meta.namespace = ns;
    meta.uid = oldMeta.uid;
    meta.creationTimestamp = oldMeta.creationTimestamp;
    delete meta.selfLink;
    if (oldMeta.deletionTimestamp !== undefined) meta.deletionTimestamp = oldMeta.deletionTimestamp;
    else delete meta.deletionTimestamp;
    // Like etcd: a write that changes nothing keeps the resourceVersion and makes no event.
    if (canonical(lease) === canonical(old)) return [200, typed(old), warnings];
    return [200, typed(storePut(ns, name, lease)), warnings];
  }

  async function remove(req: IncomingMessage, ns: string, name: string): Promise<Json> {
    const opts = await readJson(req, false);
    const old = store.get(keyOf(ns, name));
    if (!old) throw notFound(name);
    const oldMeta = old.metadata as Json;
    const pre = isObject(opts) && isObject(opts.preconditions) ? opts.preconditions : {};
    for (const [field, label] of [["resourceVersion", "ResourceVersion"], ["uid", "UID"]] as const) {
      const want = pre[field];
      if (typeof want === "string" && want !== "" && want !== oldMeta[field]) {
        throw fail(
          409,
          "Conflict",
          `Operation cannot be fulfilled on ${RESOURCE} "${name}": Precondition failed: ${label} in precondition: ${want}, ${label} in object meta: ${
            String(oldMeta[field])
          }`,
          leaseDetails(name),
        );
      }
    }
    storeDelete(ns, name);
    return {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Success",
      details: { ...leaseDetails(name), uid: oldMeta.uid },
    };
  }

  function list(ns: string, url: URL): Json {
    const match = parseFieldSelector(url.searchParams.get("fieldSelector"));
    const items = [...store.entries()]
      .filter(([key]) => key.startsWith(`${ns}/`))
      .map(([, obj]) => obj)
      .filter((obj) => match(ns, String((obj.metadata as Json).name)))
      .sort((a, b) => String((a.metadata as Json).name).localeCompare(String((b.metadata as Json).name)))
      .map(clone);
    return {
      kind: "LeaseList",
      apiVersion: API_VERSION,
      metadata: { resourceVersion: String(revision) },
      items,
    };
  }

  function watch(res: ServerResponse, ns: string, url: URL, onStatus: (code: number) => void): void {
    const q = url.searchParams;
    const match = parseFieldSelector(q.get("fieldSelector"));
    const rvParam = q.get("resourceVersion") ?? "";
    let from: number | undefined;
    if (rvParam !== "" && rvParam !== "0") {
      if (!/^\d+$/.test(rvParam)) throw badRequest(`resourceVersion: Invalid value: ${JSON.stringify(rvParam)}`);
      from = Number(rvParam);
    }
    const timeoutParam = q.get("timeoutSeconds");
    let timeoutS = DEFAULT_WATCH_TIMEOUT_S;
    if (timeoutParam !== null && timeoutParam !== "") {
      if (!/^\d+$/.test(timeoutParam)) {
        throw badRequest(`timeoutSeconds: Invalid value: ${JSON.stringify(timeoutParam)}`);
      }
      if (Number(timeoutParam) > 0) timeoutS = Number(timeoutParam);
    }
    const bookmarks = ["true", "1"].includes(q.get("allowWatchBookmarks") ?? "");

    res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-cache, private" });
    onStatus(200);
    res.flushHeaders();

    let ended = false;
    const emit = (type: string, object: Json) => {
      if (!ended) res.write(JSON.stringify({ type, object }) + "\n");
    };

    if (from !== undefined && from < compacted) {
      emit("ERROR", status(410, "Expired", `too old resource version: ${from} (${compacted})`));
      ended = true;
      res.end();
      return;
    }

    if (from === undefined) {
      const initial = [...store.values()]
        .filter((obj) => (obj.metadata as Json).namespace === ns && match(ns, String((obj.metadata as Json).name)))
        .sort((a, b) => Number((a.metadata as Json).resourceVersion) - Number((b.metadata as Json).resourceVersion));
      for (const obj of initial) emit("ADDED", typed(obj));
    } else {
      for (const c of history) if (c.rv > from && c.ns === ns && match(c.ns, c.name)) emit(c.type, typed(c.object));
    }

    let bookmarkTimer: ReturnType<typeof setInterval> | undefined;
    const watcher: Watcher = {
      offer(c) {
        if (c.ns === ns && match(c.ns, c.name)) emit(c.type, typed(c.object));
      },
      end() {
        if (ended) return;
        ended = true;
        cleanup();
        res.end();
      },
    };
    const timeoutTimer = setTimeout(() => watcher.end(), timeoutS * 1000);
    if (bookmarks) {
      bookmarkTimer = setInterval(() => {
        emit("BOOKMARK", { kind: "Lease", apiVersion: API_VERSION, metadata: { resourceVersion: String(revision) } });
      }, bookmarkMs);
    }
    function cleanup() {
      watchers.delete(watcher);
      clearTimeout(timeoutTimer);
      if (bookmarkTimer !== undefined) clearInterval(bookmarkTimer);
    }
    watchers.add(watcher);
    res.on("close", () => {
      ended = true;
      cleanup();
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? "GET").toUpperCase();
    const target = req.url ?? "/";
    let recorded = false;
    const onStatus = (code: number) => {
      if (recorded) return;
      recorded = true;
      requests.push({ method, path: target, status: code });
    };
    const reply = (code: number, body: unknown, headers?: Record<string, string | string[]>) => {
      onStatus(code);
      sendJson(res, code, body, headers);
    };
    const warn = (warnings: string[]) =>
      warnings.length ? { Warning: warnings.map((w) => `299 - ${JSON.stringify(w)}`) } : undefined;
    try {
      if (!authorized(req)) throw fail(401, "Unauthorized", "Unauthorized");
      const url = new URL(target, "http://lease-server.invalid");
      const m = ROUTE.exec(url.pathname);
      let ns = "";
      let name: string | undefined;
      try {
        if (m) {
          ns = decodeURIComponent(m[1]);
          name = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
        }
      } catch {
        /* a malformed escape is simply an unknown path */
      }
      if (!m || ns === "" || name === "") {
        throw fail(404, "NotFound", "the server could not find the requested resource", {});
      }
      const isWatch = ["1", "true"].includes(url.searchParams.get("watch") ?? "");
      if (name === undefined) {
        if (method === "GET" && isWatch) return watch(res, ns, url, onStatus);
        if (method === "GET") return reply(200, list(ns, url));
        if (method === "POST") {
          const [code, body, warnings] = await create(req, ns);
          return reply(code, body, warn(warnings));
        }
      } else {
        if (method === "GET" && isWatch) {
          const sel = url.searchParams.get("fieldSelector");
          url.searchParams.set("fieldSelector", `metadata.name=${name}${sel ? `,${sel}` : ""}`);
          return watch(res, ns, url, onStatus);
        }
        if (method === "GET") {
          const obj = store.get(keyOf(ns, name));
          if (!obj) throw notFound(name);
          return reply(200, typed(obj));
        }
        if (method === "PUT") {
          const [code, body, warnings] = await update(req, ns, name);
          return reply(code, body, warn(warnings));
        }
        if (method === "DELETE") return reply(200, await remove(req, ns, name));
      }
      throw fail(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {});
    } catch (e) {
      if (res.headersSent) {
        res.end();
        return;
      }
      if (e instanceof StatusError) return reply(e.body.code as number, e.body, e.headers);
      reply(
        500,
        status(500, "InternalError", `Internal error occurred: ${e instanceof Error ? e.message : String(e)}`),
      );
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: unknown) => reject(e);
    server.once("error", onError);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}`,
    port,
    requests,
    countBy(method: string): number {
      const want = method.toUpperCase();
      return requests.filter((r) => r.method === want).length;
    },
    leases(): Map<string, unknown> {
      return new Map([...store.entries()].map(([k, v]) => [k, typed(v)]));
    },
    put(ns: string, name: string, lease: object): void {
      const obj = clone(lease) as Json;
      const old = store.get(keyOf(ns, name));
      const oldMeta = (old?.metadata ?? {}) as Json;
      const meta: Json = isObject(obj.metadata) ? obj.metadata : {};
      meta.name = name;
      meta.namespace = ns;
      if (meta.uid === undefined) meta.uid = oldMeta.uid ?? crypto.randomUUID();
      if (meta.creationTimestamp === undefined) meta.creationTimestamp = oldMeta.creationTimestamp ?? nowSeconds();
      obj.metadata = meta;
      delete obj.kind;
      delete obj.apiVersion;
      storePut(ns, name, obj);
    },
    delete(ns: string, name: string): void {
      storeDelete(ns, name);
    },
    close(): Promise<void> {
      if (closing) return closing;
      closing = new Promise<void>((resolve) => {
        for (const w of [...watchers]) w.end();
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
      return closing;
    },
  };
}
