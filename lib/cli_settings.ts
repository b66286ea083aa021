/**
 * The entrypoint's settings: parsed flags validated into what the entrypoint
 * runs with, and the child's grace bounds.
 *
 * @module
 */

import { SERVICE_ACCOUNT_DIR } from "./config.ts";
import { formatDuration, MAX_TIMER_MS, parseDuration } from "./duration.ts";
import { validateElectorOptions } from "./elector.ts";
import { ConfigError } from "./errors.ts";
import { invalidIdentity } from "./identity.ts";
import type { LogLevel } from "./log.ts";
import type { CliOptions } from "./cli_flags.ts";

/**
 * The safety margin kept between the command's SIGKILL and the moment another
 * replica could take the Lease, for a window of `windowMs`: a fifth of it, at
 * most one second (1 s of the default 5 s).
 *
 * @example Usage
 * ```ts
 * import { childGraceMargin } from "@leasehold/leasehold/cli";
 * console.log(childGraceMargin(5000)); // 1000
 * ```
 */
export function childGraceMargin(windowMs: number): number {
  return Math.min(1000, Math.max(0, windowMs) / 5);
}

/**
 * The longest child grace that fits the time between a failed renewal and the
 * earliest takeover by another replica (leaseDuration - renewDeadline), minus
 * {@linkcode childGraceMargin}.
 *
 * @example Usage
 * ```ts
 * import { maxChildGrace } from "@leasehold/leasehold/cli";
 * console.log(maxChildGrace(15000, 10000)); // 4000
 * ```
 */
export function maxChildGrace(leaseDuration: number, renewDeadline: number): number {
  const window = leaseDuration - renewDeadline;
  return Math.max(0, window - childGraceMargin(window));
}

function parseBool(name: string, v: string | undefined): boolean {
  if (v === undefined || v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw new ConfigError(`--${name} must be true or false, not ${JSON.stringify(v)}`);
}

function parseAddr(addr: string): { host?: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(addr);
  if (!m) throw new ConfigError(`--http-addr ${JSON.stringify(addr)} must look like :8080 or 127.0.0.1:8080`);
  const port = Number(m[2]);
  if (port > 65535) throw new ConfigError(`--http-addr port ${port} is out of range`);
  return { host: m[1] ? m[1].replace(/^\[|\]$/g, "") : undefined, port };
}

/** Everything the entrypoint needs, resolved and validated. */
export interface CliSettings {
  /** Lease name. */
  leaseName: string;
  /** Explicit namespace, if given. */
  namespace?: string;
  /** Replica identity. */
  identity: string;
  /** Where the identity came from: the flag or POD_NAME, or the hostname fallback. */
  identitySource: "flag" | "hostname";
  /** Timings in ms. */
  leaseDuration: number;
  /** Timings in ms. */
  renewDeadline: number;
  /** Timings in ms. */
  retryPeriod: number;
  /** Release on shutdown. */
  releaseOnCancel: boolean;
  /** Record leadership Events on the Lease. */
  events: boolean;
  /** Coordinated leader election, with this replica's LeaseCandidate versions. */
  coordinated?: { binaryVersion: string; emulationVersion: string };
  /** Service-account directory. */
  serviceAccountDir: string;
  /** Kubeconfig path, if any. */
  kubeconfig?: string;
  /** HTTP address, if any. */
  httpAddr?: { host?: string; port: number };
  /** Healthz grace in ms. */
  healthzGrace: number;
  /** Child grace in ms (at most {@linkcode maxChildGrace}: a longer one is clamped, with a warning). */
  childGrace: number;
  /** Settings that were adjusted, to be logged as warnings. */
  warnings: string[];
  /** Log level. */
  logLevel: LogLevel;
  /** Command to supervise. */
  command: string[];
  /** Sharded work: the number of shards (`--shards`), if given. */
  shards?: number;
  /** With shards: this Pod's uid (`--pod-uid`, POD_UID), owner of the member Lease. */
  podUid?: string;
}

/**
 * Resolves and validates settings from parsed options; one {@linkcode ConfigError}
 * listing every problem. `hostname` supplies the identity when neither
 * `--identity` nor POD_NAME is set.
 *
 * @example Usage
 * ```ts
 * import { parseArgs, resolveSettings } from "@leasehold/leasehold/cli";
 * const s = resolveSettings(parseArgs(["--lease-name", "x", "--identity", "a"], () => undefined));
 * console.log(s.leaseDuration, s.childGrace); // 15000 4000
 * ```
 */
export function resolveSettings(o: CliOptions, hostname: () => string = () => ""): CliSettings {
  const v = o.values;
  const problems: string[] = [];
  const dur = (name: string, min: "positive" | "non-negative"): number => {
    const text = v[name] ?? "";
    let ms: number;
    try {
      ms = parseDuration(text);
    } catch (e) {
      problems.push(`--${name}: ${(e as Error).message}`);
      return NaN;
    }
    if (ms < 0 || (min === "positive" && ms === 0)) {
      problems.push(`--${name} ${text} must be ${min === "positive" ? "greater than zero" : "zero or more"}`);
      return NaN;
    }
    if (ms > MAX_TIMER_MS) {
      problems.push(`--${name} ${text} is too long: durations must stay below 2^31-1 ms (about 24.8 days)`);
      return NaN;
    }
    return ms;
  };
  const leaseName = v["lease-name"] ?? "";
  if (!leaseName) problems.push("--lease-name (LEASE_NAME) is required");
  const given = v["identity"];
  const identity = given || hostname();
  const identitySource = given ? "flag" : "hostname";
  if (!given && !identity) {
    problems.push("--identity (POD_NAME) is empty and the hostname is unknown: set POD_NAME from metadata.name");
  } else {
    const bad = invalidIdentity(identity);
    if (bad) {
      problems.push(
        `identity ${JSON.stringify(identity.slice(0, 80))}${identity.length > 80 ? "..." : ""} ${bad}` +
          (given ? "" : " (taken from the hostname because --identity and POD_NAME are empty)"),
      );
    }
  }
  const s: CliSettings = {
    leaseName,
    namespace: v["lease-namespace"],
    identity,
    identitySource,
    leaseDuration: dur("lease-duration", "positive"),
    renewDeadline: dur("renew-deadline", "positive"),
    retryPeriod: dur("retry-period", "positive"),
    releaseOnCancel: true,
    events: true,
    serviceAccountDir: v["service-account-dir"] ?? SERVICE_ACCOUNT_DIR,
    kubeconfig: v["kubeconfig"],
    healthzGrace: dur("healthz-grace", "non-negative"),
    childGrace: NaN,
    warnings: [],
    logLevel: "info",
    command: o.command,
  };
  if (Number.isFinite(s.leaseDuration) && s.leaseDuration % 1000 !== 0) {
    const lo = Math.max(1, Math.floor(s.leaseDuration / 1000)), hi = Math.ceil(s.leaseDuration / 1000);
    problems.push(
      `--lease-duration ${v["lease-duration"]} is not a whole number of seconds: the Lease stores ` +
        `leaseDurationSeconds as an integer; use ${lo}s or ${hi}s`,
    );
    s.leaseDuration = NaN;
  }
  try {
    s.releaseOnCancel = parseBool("release-on-cancel", v["release-on-cancel"]);
  } catch (e) {
    problems.push((e as Error).message);
  }
  try {
    s.events = parseBool("events", v["events"]);
  } catch (e) {
    problems.push((e as Error).message);
  }
  try {
    if (parseBool("coordinated", v["coordinated"])) {
      const binaryVersion = v["binary-version"] ?? "";
      const emulationVersion = v["emulation-version"] || binaryVersion;
      const semver = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/;
      if (!semver.test(binaryVersion)) {
        problems.push(
          `--coordinated needs --binary-version (BINARY_VERSION) as MAJOR.MINOR.PATCH without "v", got ${
            JSON.stringify(binaryVersion)
          }`,
        );
      } else if (!semver.test(emulationVersion)) {
        problems.push(`--emulation-version ${JSON.stringify(emulationVersion)} is not MAJOR.MINOR.PATCH without "v"`);
      } else s.coordinated = { binaryVersion, emulationVersion };
    }
  } catch (e) {
    problems.push((e as Error).message);
  }
  const lvl = v["log-level"] ?? "info";
  if (!["debug", "info", "warn", "error"].includes(lvl)) {
    problems.push(`--log-level must be debug, info, warn or error`);
  } else s.logLevel = lvl as LogLevel;
  if (v["http-addr"]) {
    try {
      s.httpAddr = parseAddr(v["http-addr"]);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  const timings = [s.leaseDuration, s.renewDeadline, s.retryPeriod];
  if (timings.every(Number.isFinite)) {
    problems.push(
      ...validateElectorOptions({
        identity: identity || "-",
        leaseDuration: s.leaseDuration,
        renewDeadline: s.renewDeadline,
        retryPeriod: s.retryPeriod,
        name: leaseName || undefined,
        namespace: s.namespace,
      }),
    );
    const max = maxChildGrace(s.leaseDuration, s.renewDeadline);
    if (v["child-grace"] === undefined) {
      s.childGrace = max;
    } else {
      const g = dur("child-grace", "non-negative");
      s.childGrace = Math.min(g, max);
      if (g > max) {
        s.warnings.push(
          `--child-grace ${v["child-grace"]} is longer than the command may run after leadership ends (another ` +
            `replica may take the Lease leaseDuration - renewDeadline = ${
              formatDuration(s.leaseDuration - s.renewDeadline)
            } after a failed renewal); using ${formatDuration(max)}: lower --child-grace or raise --lease-duration`,
        );
      }
    }
  }
  if (v["shards"] !== undefined) {
    const n = Number(v["shards"]);
    if (!/^\d+$/.test(v["shards"]) || n < 1 || n > 4096) {
      problems.push(`--shards (SHARDS) must be a whole number from 1 to 4096, not ${JSON.stringify(v["shards"])}`);
    } else if (!o.command.length) {
      problems.push("--shards needs a command after -- (one runs per held shard)");
    } else if (s.coordinated) {
      problems.push("--shards cannot be combined with --coordinated");
    } else if (!/^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$/.test(leaseName)) {
      problems.push(
        `--lease-name ${JSON.stringify(leaseName)} is the shard Lease prefix with --shards: use 1 to 50 lower case ` +
          "letters, digits and '-', starting and ending with a letter or digit",
      );
    } else s.shards = n;
  }
  // Read only with --shards: POD_UID is a common name for other uses of the downward API.
  const podUid = v["shards"] !== undefined ? v["pod-uid"] : undefined;
  if (podUid) {
    // A uid is a UUID; anything else would be refused by the API server on every member write.
    if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(podUid)) {
      problems.push(
        `--pod-uid (POD_UID) must be the Pod's metadata.uid (a UUID, from the downward API fieldRef metadata.uid), not ${
          JSON.stringify(podUid.slice(0, 80))
        }`,
      );
    } else s.podUid = podUid;
  } else if (s.shards !== undefined) {
    s.warnings.push(
      "--pod-uid (POD_UID) is not set: this replica's member Lease has no owner and stays behind when the Pod is " +
        "gone; set POD_UID from the downward API (fieldRef metadata.uid), as deploy/deployment.shards.yaml does",
    );
  }
  if (problems.length) throw new ConfigError(problems.join("; "));
  return s;
}
