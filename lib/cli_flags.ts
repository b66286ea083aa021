/**
 * The entrypoint's flags: the machine-readable table, parsing (flags, then the
 * environment, then defaults), the help text, and validation into settings.
 *
 * @module
 */

import { getEnv, SERVICE_ACCOUNT_DIR } from "./config.ts";
import { formatDuration, MAX_TIMER_MS, parseDuration } from "./duration.ts";
import { validateElectorOptions } from "./elector.ts";
import { ConfigError } from "./errors.ts";
import { invalidIdentity } from "./identity.ts";
import type { LogLevel } from "./log.ts";

/** One flag of the entrypoint. */
export interface FlagSpec {
  /** Flag name without dashes. */
  flag: string;
  /** Environment variable read when the flag is not given. */
  env: string;
  /** One line of help. */
  help: string;
  /** Default value, when it is a fixed string. */
  def?: string;
  /** A boolean flag (`--flag` alone means true). */
  bool?: boolean;
  /** A Go duration (`15s`, `500ms`). */
  duration?: boolean;
}

/**
 * The entrypoint's flags; each has an environment variable so a Deployment needs
 * no args. Read by tooling (e.g. to check that a manifest sets only known variables).
 *
 * @example Usage
 * ```ts
 * import { FLAGS } from "@leasehold/leasehold/cli";
 * console.log(FLAGS.find((f) => f.flag === "child-grace")?.env); // "CHILD_GRACE"
 * ```
 */
export const FLAGS: readonly FlagSpec[] = [
  { flag: "lease-name", env: "LEASE_NAME", help: "name of the Lease (required)" },
  {
    flag: "lease-namespace",
    env: "LEASE_NAMESPACE",
    help: "namespace of the Lease (default: the service account's namespace, else default)",
  },
  {
    flag: "identity",
    env: "POD_NAME",
    help: "this replica's holderIdentity, unique per replica (default: the hostname, with a warning)",
  },
  {
    flag: "lease-duration",
    env: "LEASE_DURATION",
    help: "how long a claim lasts, in whole seconds",
    def: "15s",
    duration: true,
  },
  {
    flag: "renew-deadline",
    env: "RENEW_DEADLINE",
    help: "how long the leader tries to renew before it stops",
    def: "10s",
    duration: true,
  },
  { flag: "retry-period", env: "RETRY_PERIOD", help: "time between attempts", def: "2s", duration: true },
  {
    flag: "release-on-cancel",
    env: "RELEASE_ON_CANCEL",
    help: "release the Lease on shutdown",
    def: "true",
    bool: true,
  },
  {
    flag: "service-account-dir",
    env: "SERVICE_ACCOUNT_DIR",
    help: "token, ca.crt and namespace",
    def: SERVICE_ACCOUNT_DIR,
  },
  { flag: "kubeconfig", env: "KUBECONFIG", help: "kubeconfig file, for runs outside a cluster" },
  {
    flag: "http-addr",
    env: "HTTP_ADDR",
    help: "address for /healthz /readyz /metrics /leader, e.g. :8080 (off when empty)",
  },
  {
    flag: "healthz-grace",
    env: "HEALTHZ_GRACE",
    help: "extra time past leaseDuration before /healthz fails",
    def: "20s",
    duration: true,
  },
  {
    flag: "child-grace",
    env: "CHILD_GRACE",
    help: "time between SIGTERM and SIGKILL for the command's process group; at most " +
      "leaseDuration - renewDeadline minus a margin (default: that maximum, 4s at the default timings)",
    duration: true,
  },
  {
    flag: "events",
    env: "EVENTS",
    help: "record Events on the Lease when this replica becomes leader or stops leading (needs create on events)",
    def: "true",
    bool: true,
  },
  {
    flag: "coordinated",
    env: "COORDINATED",
    help: "coordinated leader election: the API server's election controller picks the leader among " +
      "LeaseCandidates (needs --binary-version)",
    def: "false",
    bool: true,
  },
  { flag: "binary-version", env: "BINARY_VERSION", help: "this binary's version for --coordinated, e.g. 1.4.0" },
  {
    flag: "emulation-version",
    env: "EMULATION_VERSION",
    help: "the version this binary behaves as, for --coordinated (default: --binary-version)",
  },
  { flag: "log-level", env: "LOG_LEVEL", help: "debug, info, warn or error", def: "info" },
  {
    flag: "shards",
    env: "SHARDS",
    help: "sharded work: N Leases <lease-name>-<i> spread over the live replicas, one command per held shard " +
      "(LEASEHOLD_SHARD=<i> in its environment); needs a command",
  },
];

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

/** The parsed command line. */
export interface CliOptions {
  /** Values by flag name, after environment fallbacks and defaults. */
  values: Record<string, string | undefined>;
  /** The command to supervise (after `--`), if any. */
  command: string[];
  /** `--help` was given. */
  help: boolean;
}

/**
 * Parses flags (`--flag value` or `--flag=value`), then the environment, then defaults.
 *
 * @throws {ConfigError} for an unknown flag or a flag without a value
 * @example Usage
 * ```ts
 * import { parseArgs } from "@leasehold/leasehold/cli";
 * const o = parseArgs(["--lease-name", "x", "--", "sleep", "60"], () => undefined);
 * console.log(o.values["lease-name"], o.command); // "x" [ "sleep", "60" ]
 * ```
 */
export function parseArgs(args: string[], env: (name: string) => string | undefined = getEnv): CliOptions {
  const values: Record<string, string | undefined> = {};
  let command: string[] = [];
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      command = args.slice(i + 1);
      break;
    }
    if (a === "-h" || a === "--help") {
      help = true;
      continue;
    }
    if (!a.startsWith("--")) throw new ConfigError(`unexpected argument ${JSON.stringify(a)}; put a command after --`);
    const eq = a.indexOf("=");
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    const spec = FLAGS.find((f) => f.flag === name);
    if (!spec) throw new ConfigError(`unknown flag --${name}; see --help`);
    if (eq >= 0) values[name] = a.slice(eq + 1);
    else if (spec.bool && (i + 1 >= args.length || args[i + 1].startsWith("--"))) values[name] = "true";
    else if (i + 1 < args.length) values[name] = args[++i];
    else throw new ConfigError(`flag --${name} needs a value`);
  }
  for (const f of FLAGS) {
    if (values[f.flag] === undefined) values[f.flag] = env(f.env) || undefined;
    if (values[f.flag] === undefined) values[f.flag] = f.def;
  }
  return { values, command, help };
}

/**
 * The `--help` text.
 *
 * @example Usage
 * ```ts
 * import { helpText } from "@leasehold/leasehold/cli";
 * console.log(helpText().includes("--lease-name")); // true
 * ```
 */
export function helpText(): string {
  const rows = FLAGS.map((f) =>
    `  --${f.flag.padEnd(20)} ${f.env.padEnd(20)} ${f.help}${f.def ? ` (default ${f.def})` : ""}`
  );
  return [
    "leasehold: Kubernetes Lease leader election for a pod.",
    "",
    "usage: leasehold [flags] [-- COMMAND [ARGS...]]",
    "",
    "With a COMMAND, it runs only while this replica leads, in its own process group:",
    "when leadership ends the whole group gets SIGTERM, then SIGKILL after the child",
    "grace, before another replica could take the Lease; a new term starts no new",
    "command while the old one runs. If the command exits by itself the Lease is",
    "released and leasehold exits with its status (128+n when killed by signal n;",
    "127 when it cannot be started).",
    "",
    "Exit status: 0 after SIGTERM or SIGINT and a clean shutdown; 128+n after another",
    "handled signal n (SIGHUP, SIGQUIT); 2 for bad flags or configuration, including",
    "configuration read at start (token, CA, namespace file) and an --http-addr that",
    "cannot be listened on; 1 for an unexpected failure. A second signal during the",
    "shutdown kills the command's process group at once and exits with 128+n.",
    "",
    "As PID 1, leasehold does not reap orphaned processes of the command: run it under",
    "an init (tini, `docker run --init`) or give the pod shareProcessNamespace: true.",
    "",
    "  flag                   environment          meaning",
    ...rows,
    "",
    "Durations use Go's syntax (15s, 500ms, 1m30s, .5s) and must stay below 2^31-1 ms.",
    'Endpoints with --http-addr (GET or HEAD): /healthz /readyz /metrics /leader and / ({"name": leader}).',
  ].join("\n");
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
  if (problems.length) throw new ConfigError(problems.join("; "));
  return s;
}
