#!/usr/bin/env node
/**
 * The pod entrypoint: runs a leader election configured by flags or environment,
 * logs leadership as JSON lines on stderr, serves health and metrics, releases
 * the Lease on SIGTERM/SIGINT, and can run a command only while it leads.
 *
 * ```sh
 * deno run -A jsr:@leasehold/leasehold/cli --lease-name my-app -- ./my-worker --flag
 * ```
 *
 * @module
 */

import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import { realpathSync } from "node:fs";
import { hostname } from "node:os";
import { pathToFileURL } from "node:url";
import process from "node:process";
import {
  type ClusterConfig,
  createLeaseApi,
  getEnv,
  inClusterConfig,
  kubeconfigConfig,
  SERVICE_ACCOUNT_DIR,
} from "./config.ts";
import { type LeaderContext, LeaderElector, validateElectorOptions } from "./elector.ts";
import { ConfigError } from "./errors.ts";
import { jsonLogger, type Logger, type LogLevel } from "./log.ts";

/** One flag of the entrypoint. */
export interface FlagSpec {
  /** Flag name without dashes. */
  flag: string;
  /** Environment variable read when the flag is not given. */
  env?: string;
  /** One line of help. */
  help: string;
  /** Default value. */
  def?: string;
  /** A boolean flag (`--flag` alone means true). */
  bool?: boolean;
}

/** The entrypoint's flags; each has an environment variable so a Deployment needs no args. */
export const FLAGS: readonly FlagSpec[] = [
  { flag: "lease-name", env: "LEASE_NAME", help: "name of the Lease (required)" },
  {
    flag: "lease-namespace",
    env: "LEASE_NAMESPACE",
    help: "namespace of the Lease (default: the service account's namespace, else default)",
  },
  { flag: "identity", env: "POD_NAME", help: "this replica's identity (default: the hostname)" },
  { flag: "lease-duration", env: "LEASE_DURATION", help: "how long a claim lasts", def: "15s" },
  {
    flag: "renew-deadline",
    env: "RENEW_DEADLINE",
    help: "how long the leader tries to renew before it stops",
    def: "10s",
  },
  { flag: "retry-period", env: "RETRY_PERIOD", help: "time between attempts", def: "2s" },
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
  },
  { flag: "child-grace", env: "CHILD_GRACE", help: "time between SIGTERM and SIGKILL for the command", def: "10s" },
  { flag: "log-level", env: "LOG_LEVEL", help: "debug, info, warn or error", def: "info" },
];

/**
 * Parses a Go-style duration (`1m30s`, `500ms`, `15s`, `2h`) into milliseconds.
 *
 * @throws {ConfigError} for anything else
 * @example Usage
 * ```ts
 * import { parseDuration } from "@leasehold/leasehold/cli";
 * console.log(parseDuration("1m30s")); // 90000
 * ```
 */
export function parseDuration(s: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  const t = s.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(t)) {
    throw new ConfigError(`${JSON.stringify(s)} is not a duration; use forms like 15s, 500ms or 1m30s`);
  }
  let total = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * units[m[2]];
  return total;
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
    if (values[f.flag] === undefined && f.env) values[f.flag] = env(f.env) || undefined;
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
    `  --${f.flag.padEnd(20)} ${(f.env ?? "").padEnd(20)} ${f.help}${f.def ? ` (default ${f.def})` : ""}`
  );
  return [
    "leasehold: Kubernetes Lease leader election for a pod.",
    "",
    "usage: leasehold [flags] [-- COMMAND [ARGS...]]",
    "",
    "With a COMMAND, it runs only while this replica leads: on loss of leadership it",
    "gets SIGTERM, then SIGKILL after --child-grace; if it exits by itself the Lease is",
    "released and leasehold exits with its status.",
    "",
    "  flag                   environment          meaning",
    ...rows,
    "",
    'Endpoints with --http-addr: /healthz /readyz /metrics /leader and / ({"name": leader}).',
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
  /** Timings in ms. */
  leaseDuration: number;
  /** Timings in ms. */
  renewDeadline: number;
  /** Timings in ms. */
  retryPeriod: number;
  /** Release on shutdown. */
  releaseOnCancel: boolean;
  /** Service-account directory. */
  serviceAccountDir: string;
  /** Kubeconfig path, if any. */
  kubeconfig?: string;
  /** HTTP address, if any. */
  httpAddr?: { host?: string; port: number };
  /** Healthz grace in ms. */
  healthzGrace: number;
  /** Child grace in ms. */
  childGrace: number;
  /** Log level. */
  logLevel: LogLevel;
  /** Command to supervise. */
  command: string[];
}

/**
 * Resolves and validates settings from parsed options; one {@linkcode ConfigError}
 * listing every problem.
 *
 * @example Usage
 * ```ts
 * import { parseArgs, resolveSettings } from "@leasehold/leasehold/cli";
 * const s = resolveSettings(parseArgs(["--lease-name", "x", "--identity", "a"], () => undefined));
 * console.log(s.leaseDuration); // 15000
 * ```
 */
export function resolveSettings(o: CliOptions): CliSettings {
  const v = o.values;
  const problems: string[] = [];
  const dur = (name: string): number => {
    try {
      return parseDuration(v[name] ?? "");
    } catch (e) {
      problems.push(`--${name}: ${(e as Error).message}`);
      return NaN;
    }
  };
  const leaseName = v["lease-name"] ?? "";
  if (!leaseName) problems.push("--lease-name (LEASE_NAME) is required");
  const identity = v["identity"] || safeHostname();
  const s: CliSettings = {
    leaseName,
    namespace: v["lease-namespace"],
    identity,
    leaseDuration: dur("lease-duration"),
    renewDeadline: dur("renew-deadline"),
    retryPeriod: dur("retry-period"),
    releaseOnCancel: true,
    serviceAccountDir: v["service-account-dir"] ?? SERVICE_ACCOUNT_DIR,
    kubeconfig: v["kubeconfig"],
    healthzGrace: dur("healthz-grace"),
    childGrace: dur("child-grace"),
    logLevel: "info",
    command: o.command,
  };
  try {
    s.releaseOnCancel = parseBool("release-on-cancel", v["release-on-cancel"]);
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
  if (!problems.some((p) => p.includes("duration"))) {
    problems.push(
      ...validateElectorOptions({
        identity,
        leaseDuration: s.leaseDuration,
        renewDeadline: s.renewDeadline,
        retryPeriod: s.retryPeriod,
        name: leaseName || undefined,
        namespace: s.namespace,
      }),
    );
  }
  if (problems.length) throw new ConfigError(problems.join("; "));
  return s;
}

function safeHostname(): string {
  try {
    return hostname();
  } catch {
    return "";
  }
}

/** Prometheus text for the elector's state. */
function metricsText(e: LeaderElector, name: string): string {
  const l = `name="${name.replace(/["\\\n]/g, "_")}"`;
  const s = e.stats;
  const out = [
    "# HELP leader_election_master_status Whether this replica leads the lease (1) or not (0).",
    "# TYPE leader_election_master_status gauge",
    `leader_election_master_status{${l}} ${e.isLeader ? 1 : 0}`,
    "# HELP leader_election_slowpath_total Renewals that needed a GET before the PUT.",
    "# TYPE leader_election_slowpath_total counter",
    `leader_election_slowpath_total{${l}} ${s.slowpathTotal}`,
    "# HELP leasehold_leadership_acquired_total Terms this replica started.",
    "# TYPE leasehold_leadership_acquired_total counter",
    `leasehold_leadership_acquired_total{${l}} ${s.startedTotal}`,
    "# HELP leasehold_leader_changes_total Changes of holder this replica observed.",
    "# TYPE leasehold_leader_changes_total counter",
    `leasehold_leader_changes_total{${l}} ${s.leaderChangesTotal}`,
    "# HELP leasehold_renew_duration_seconds Latency of successful renewals.",
    "# TYPE leasehold_renew_duration_seconds summary",
    `leasehold_renew_duration_seconds_sum{${l}} ${(s.renewLatencySumMs / 1000).toFixed(6)}`,
    `leasehold_renew_duration_seconds_count{${l}} ${s.renewCount}`,
    "# HELP leasehold_errors_total Failed requests to the API server, by kind.",
    "# TYPE leasehold_errors_total counter",
    ...Object.entries(s.errorsByKind).map(([k, n]) => `leasehold_errors_total{${l},kind="${k}"} ${n}`),
    "# HELP leasehold_requests_total Requests sent to the API server, by verb.",
    "# TYPE leasehold_requests_total counter",
    ...Object.entries(s.requestsByVerb).map(([k, n]) => `leasehold_requests_total{${l},verb="${k}"} ${n}`),
  ];
  return out.join("\n") + "\n";
}

function serveHttp(
  addr: { host?: string; port: number },
  e: LeaderElector,
  s: CliSettings,
  log: Logger,
): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (code: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(code, { "content-type": type });
      res.end(body);
    };
    if (path === "/healthz") {
      const err = e.check(s.healthzGrace);
      return err ? send(500, `unhealthy: ${err}\n`) : send(200, "ok\n");
    }
    if (path === "/readyz") return e.leader === undefined ? send(503, "lease not read yet\n") : send(200, "ok\n");
    if (path === "/metrics") {
      return send(200, metricsText(e, `${s.namespace ?? ""}/${s.leaseName}`), "text/plain; version=0.0.4");
    }
    if (path === "/leader") {
      const st = e.state();
      return send(
        200,
        JSON.stringify({
          lease: st.lease,
          holderIdentity: st.leader ?? null,
          identity: st.identity,
          isLeader: st.isLeader,
          leaseTransitions: st.leaseTransitions ?? null,
          leadingSince: st.leadingSince ?? null,
          fencingToken: st.fencingToken?.value ?? null,
        }) + "\n",
        "application/json",
      );
    }
    if (path === "/") return send(200, JSON.stringify({ name: e.leader ?? "" }) + "\n", "application/json");
    send(404, "not found\n");
  });
  return new Promise((resolve, reject) => {
    server.once("error", (err) => reject(new ConfigError(`cannot listen on --http-addr: ${(err as Error).message}`)));
    server.listen(addr.port, addr.host, () => {
      const a = server.address();
      log.info("serving http", { addr: typeof a === "object" && a ? `${a.address}:${a.port}` : String(a) });
      resolve(server);
    });
  });
}

/** Runs the supervised command for one term; resolves with its exit code when it ends. */
function superviseChild(
  cmd: string[],
  ctx: LeaderContext,
  grace: number,
  log: Logger,
  onExitWhileLeading: (code: number) => void,
): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(cmd[0], cmd.slice(1), {
      stdio: "inherit",
      env: {
        ...process.env,
        LEASEHOLD_FENCING_TOKEN: ctx.fencingToken.value,
        LEASEHOLD_LEASE_TRANSITIONS: String(ctx.fencingToken.leaseTransitions),
        LEASEHOLD_HOLDER_IDENTITY: ctx.fencingToken.holderIdentity,
      },
    });
    log.info("started command", { command: cmd.join(" "), pid: child.pid });
    let killer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      log.info("stopping command", { pid: child.pid, signal: "SIGTERM" });
      child.kill("SIGTERM");
      killer = setTimeout(() => {
        log.warn("command ignored SIGTERM; killing it", { pid: child.pid, graceMs: grace });
        child.kill("SIGKILL");
      }, grace);
    };
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    child.on("error", (err) => {
      log.error("cannot start command", { command: cmd[0], error: err.message });
      ctx.signal.removeEventListener("abort", onAbort);
      if (!ctx.signal.aborted) onExitWhileLeading(127);
      resolve();
    });
    child.on("exit", (code, signal) => {
      if (killer) clearTimeout(killer);
      ctx.signal.removeEventListener("abort", onAbort);
      const status = code ?? (signal ? 128 + (SIGNALS[signal] ?? 1) : 1);
      log.info("command exited", { code, signal, status });
      if (!ctx.signal.aborted) onExitWhileLeading(status);
      resolve();
    });
  });
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** Options for {@linkcode main}, for tests and embedding. */
export interface MainOptions {
  /** Environment lookup. @default getEnv */
  env?: (name: string) => string | undefined;
  /** Where log lines go. @default stderr */
  write?: (line: string) => void;
  /** Stops the run, as SIGTERM would. */
  signal?: AbortSignal;
  /** Install SIGTERM/SIGINT handlers. @default true */
  handleSignals?: boolean;
}

/**
 * Runs the entrypoint with `args`; resolves with the exit code: 0 after a clean
 * shutdown, 2 for bad flags or configuration, or the supervised command's status.
 *
 * @example Usage
 * ```ts
 * import { main } from "@leasehold/leasehold/cli";
 * const code = await main(["--bogus"], { write: () => {}, handleSignals: false });
 * console.log(code); // 2
 * ```
 */
export async function main(args: string[], options: MainOptions = {}): Promise<number> {
  const write = options.write ?? ((line: string) => process.stderr.write(line + "\n"));
  let settings: CliSettings;
  try {
    const parsed = parseArgs(args, options.env ?? getEnv);
    if (parsed.help) {
      write(helpText());
      return 0;
    }
    settings = resolveSettings(parsed);
  } catch (e) {
    write(
      JSON.stringify({
        ts: new Date().toISOString(),
        level: "error",
        msg: `invalid configuration: ${(e as Error).message}`,
      }),
    );
    return 2;
  }
  const log = jsonLogger(write, settings.logLevel);
  const stop = new AbortController();
  options.signal?.addEventListener("abort", () => stop.abort(), { once: true });
  const onSignal = (sig: string) => {
    log.info("signal received; shutting down", { signal: sig });
    stop.abort();
  };
  const handlers: [string, () => void][] = [];
  if (options.handleSignals ?? true) {
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      const h = () => onSignal(sig);
      process.on(sig, h);
      handlers.push([sig, h]);
    }
  }
  let server: Server | undefined;
  let exitCode = 0;
  try {
    let config: ClusterConfig;
    try {
      config = settings.kubeconfig
        ? await kubeconfigConfig(settings.kubeconfig)
        : await inClusterConfig({ serviceAccountDir: settings.serviceAccountDir, env: options.env });
    } catch (e) {
      log.error("cannot load cluster configuration", { error: (e as Error).message });
      return 2;
    }
    const lease = await createLeaseApi(config, {
      name: settings.leaseName,
      namespace: settings.namespace,
      timeoutMs: Math.max(1000, settings.renewDeadline / 2),
    });
    settings.namespace = lease.namespace;
    log.info("starting", {
      lease: `${lease.namespace}/${lease.name}`,
      identity: settings.identity,
      source: config.source,
      leaseDuration: settings.leaseDuration,
      renewDeadline: settings.renewDeadline,
      retryPeriod: settings.retryPeriod,
      command: settings.command.length ? settings.command.join(" ") : undefined,
    });
    const elector = new LeaderElector({
      lease,
      identity: settings.identity,
      leaseDuration: settings.leaseDuration,
      renewDeadline: settings.renewDeadline,
      retryPeriod: settings.retryPeriod,
      releaseOnCancel: settings.releaseOnCancel,
      logger: log,
      onStartedLeading: settings.command.length
        ? (ctx) =>
          superviseChild(settings.command, ctx, settings.childGrace, log, (status) => {
            exitCode = status;
            log.info("command exited while leading; releasing the lease and exiting with its status", { status });
            stop.abort();
          })
        : undefined,
    });
    if (settings.httpAddr) server = await serveHttp(settings.httpAddr, elector, settings, log);
    await elector.run(stop.signal);
    log.info("exiting", { code: exitCode });
    return exitCode;
  } catch (e) {
    log.error("fatal", { error: (e as Error).message });
    return 1;
  } finally {
    // Signal handlers stay installed: on Deno, removing one lets a SIGTERM that
    // is still being delivered end the process with the signal instead of our code.
    void handlers;
    server?.closeAllConnections?.();
    server?.close();
  }
}

function isMainModule(): boolean {
  const meta = import.meta as ImportMeta & { main?: boolean };
  if (typeof meta.main === "boolean") return meta.main;
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return pathToFileURL(realpathSync(argv1)).href === import.meta.url;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
