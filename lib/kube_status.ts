/**
 * Turning an API server's error answer into words: the Status reasons, the
 * server's retry hint, and a message that names the fix (a 403 names verb,
 * resource and namespace).
 *
 * @module
 */

import type { StatusReason } from "./errors.ts";
import type { RequestIntent } from "./kube_request.ts";

/** The reason of each status code, when the body does not give one. */
export const REASONS: Record<number, StatusReason> = {
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

/** The Status reasons taken from a body as they are. */
export const REASON_SET: Record<string, true> = Object.fromEntries(
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

/** A short, quoted excerpt of a body for an error message. */
export function describeBody(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  if (!flat) return "empty body";
  return JSON.stringify(flat.length > 120 ? flat.slice(0, 120) + "…" : flat);
}

/** The message of an error answer: what was asked, why it failed and how to fix it. */
export function explain(
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
          intent.name && intent.verb !== "create" && intent.byName !== false ? `, resourceNames ["${intent.name}"]` : ""
        }, and a RoleBinding to this service account (see ${intent.roleFile ?? "deploy/rbac.yaml"})${server}`
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
