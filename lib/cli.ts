#!/usr/bin/env node
/**
 * The pod entrypoint: runs a leader election configured by flags or environment,
 * logs leadership as JSON lines on stderr, serves health and metrics, releases
 * the Lease on SIGTERM/SIGINT, and can run a command only while it leads.
 *
 * The command runs in its own process group; when leadership ends the whole
 * group gets SIGTERM, then SIGKILL before another replica could take the Lease.
 * If leasehold itself is killed with SIGKILL, the command is left to the
 * container runtime, which stops every process of the container with it.
 * leasehold does not reap orphaned processes when it runs as PID 1: give the
 * container an init (tini, `docker run --init`) or the pod
 * `shareProcessNamespace: true`.
 *
 * ```sh
 * deno run -A jsr:@leasehold/leasehold/cli --lease-name my-app -- ./my-worker --flag
 * ```
 *
 * @module
 */

import { realpathSync } from "node:fs";
import { hostname } from "node:os";
import process from "node:process";
import type { Server } from "node:http";
import { type ClusterConfig, createLeaseApi, getEnv, inClusterConfig, kubeconfigConfig } from "./config.ts";
import { LeaderElector } from "./elector.ts";
import { ConfigError } from "./errors.ts";
import { jsonLogger } from "./log.ts";
import { LeaderEventRecorder } from "./events.ts";
import type { LeaseCandidateKeeper } from "./candidate.ts";
import { helpText, parseArgs } from "./cli_flags.ts";
import { childGraceMargin, type CliSettings, resolveSettings } from "./cli_settings.ts";
import { serveHttp } from "./cli_http.ts";
import { CommandSupervisor, exitStatus, killAllGroupsSync } from "./supervisor.ts";
import { certificateBlocks, certificateProblem } from "./pem.ts";

export { type CliOptions, FLAGS, type FlagSpec, helpText, parseArgs } from "./cli_flags.ts";
export { childGraceMargin, type CliSettings, maxChildGrace, resolveSettings } from "./cli_settings.ts";
export { formatDuration, MAX_TIMER_MS, parseDuration } from "./duration.ts";
export { invalidIdentity, MAX_IDENTITY_LENGTH } from "./identity.ts";
export {
  createHandler,
  type ElectorView,
  type EndpointOptions,
  metricsText,
  serveHttp,
  type WorkView,
} from "./cli_http.ts";
export { CommandSupervisor, exitStatus, groupAlive, killAllGroupsSync, type SupervisorOptions } from "./supervisor.ts";

/** Signals that shut leasehold down cleanly; SIGTERM and SIGINT then exit 0, the others 128+n. */
export const SHUTDOWN_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"] as const;

/** Options for {@linkcode main}, for tests and embedding. */
export interface MainOptions {
  /** Environment lookup. @default getEnv */
  env?: (name: string) => string | undefined;
  /** Where log lines go. @default stderr */
  write?: (line: string) => void;
  /** Stops the run, as SIGTERM would. */
  signal?: AbortSignal;
  /** Install handlers for {@linkcode SHUTDOWN_SIGNALS}. @default true */
  handleSignals?: boolean;
  /** The hostname, used as identity when neither --identity nor POD_NAME is set. @default os.hostname */
  hostname?: () => string;
  /** Called with the elector once it exists (tests observe it). */
  onElector?: (elector: LeaderElector) => void;
  /** Called with the HTTP server once it listens. */
  onServer?: (server: Server) => void;
}

/** Checks every certificate of a PEM bundle now, so a broken CA is a configuration error at start. */
function checkCaBundle(pem: string, source: string): void {
  const blocks = certificateBlocks(pem);
  if (!blocks.length) throw new ConfigError(`the cluster CA of ${source} holds no PEM certificate`);
  for (const [i, block] of blocks.entries()) {
    const problem = certificateProblem(block);
    if (problem) {
      throw new ConfigError(
        `certificate ${i + 1} of the cluster CA of ${source} cannot be read (${problem}); ` +
          "fix ca.crt or certificate-authority(-data)",
      );
    }
  }
}

function safeHostname(): string {
  try {
    return hostname();
  } catch {
    return "";
  }
}

/**
 * Runs the entrypoint with `args`; resolves with the exit code: 0 after a clean
 * shutdown on SIGTERM or SIGINT, 128+n after another handled signal n, 2 for bad
 * flags or configuration (including what is read at start: token, CA, namespace
 * file, and an --http-addr that cannot be listened on), or the supervised
 * command's status when it exited by itself.
 *
 * @example Usage
 * ```ts
 * import { main } from "@leasehold/leasehold/cli";
 * const code = await main(["--bogus"], { write: () => {}, handleSignals: false });
 * console.log(code); // 2
 * ```
 */
export async function main(args: string[], options: MainOptions = {}): Promise<number> {
  // Signal handling comes first, before anything can take time, so a SIGTERM that
  // arrives while the configuration is read is not lost (as PID 1 it would be ignored).
  const stop = new AbortController();
  let signalCode: number | undefined;
  let onSignal = (sig: string) => {
    signalCode ??= sig === "SIGTERM" || sig === "SIGINT" ? 0 : exitStatus(null, sig);
    stop.abort();
  };
  if (options.handleSignals ?? true) {
    for (const sig of SHUTDOWN_SIGNALS) {
      try {
        // Handlers stay installed: on Deno, removing one lets a SIGTERM that is
        // still being delivered end the process with the signal instead of our code.
        process.on(sig, () => onSignal(sig));
      } catch {
        // a signal this runtime cannot trap
      }
    }
  }
  options.signal?.addEventListener("abort", () => stop.abort(), { once: true });
  const write = options.write ?? ((line: string) => process.stderr.write(line + "\n"));
  let settings: CliSettings;
  try {
    const parsed = parseArgs(args, options.env ?? getEnv);
    if (parsed.help) {
      write(helpText());
      return 0;
    }
    settings = resolveSettings(parsed, options.hostname ?? safeHostname);
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
  let shuttingDown = false;
  onSignal = (sig: string) => {
    if (shuttingDown && (options.handleSignals ?? true)) {
      log.warn("second signal; killing the command and exiting now", { signal: sig });
      killAllGroupsSync();
      process.exit(exitStatus(null, sig));
    }
    shuttingDown = true;
    signalCode ??= sig === "SIGTERM" || sig === "SIGINT" ? 0 : exitStatus(null, sig);
    log.info("signal received; shutting down", { signal: sig });
    stop.abort();
  };
  for (const w of settings.warnings) log.warn(w, {});
  if (settings.identitySource === "hostname") {
    log.warn(
      "no identity given (--identity / POD_NAME is empty); using the hostname, which is not unique with " +
        "hostNetwork or spec.hostname: set POD_NAME from the downward API (fieldRef metadata.name)",
      { identity: settings.identity },
    );
  }
  if (settings.command.length && process.pid === 1) {
    log.warn(
      "running as PID 1: orphaned processes of the command are not reaped; run leasehold under an init " +
        "(tini, docker --init) or set shareProcessNamespace: true on the pod",
      {},
    );
  }
  if (settings.shards !== undefined) {
    // Loaded only in sharded mode: a single-Lease replica does not pay for the set's code.
    const { runShards } = await import("./cli_shards.ts");
    return await runShards(settings, {
      log,
      stop,
      env: options.env,
      onServer: options.onServer,
      signalCode: () => signalCode,
    });
  }
  let server: Server | undefined;
  let exitCode: number | undefined;
  let elector: LeaderElector;
  let supervisor: CommandSupervisor | undefined;
  let candidate: LeaseCandidateKeeper | undefined;
  let recorder: LeaderEventRecorder | undefined;
  // Everything up to the start of the election is configuration: a failure exits 2.
  try {
    const config: ClusterConfig = settings.kubeconfig
      ? await kubeconfigConfig(settings.kubeconfig)
      : await inClusterConfig({ serviceAccountDir: settings.serviceAccountDir, env: options.env });
    if (config.caCert) checkCaBundle(config.caCert, config.source);
    const lease = await createLeaseApi(config, {
      name: settings.leaseName,
      namespace: settings.namespace,
      timeoutMs: Math.max(1000, settings.renewDeadline / 2),
      logger: log,
    });
    settings.namespace = lease.namespace;
    log.info("starting", {
      lease: `${lease.namespace}/${lease.name}`,
      identity: settings.identity,
      source: config.source,
      leaseDuration: settings.leaseDuration,
      renewDeadline: settings.renewDeadline,
      retryPeriod: settings.retryPeriod,
      childGrace: settings.command.length ? settings.childGrace : undefined,
      command: settings.command.length ? settings.command.join(" ") : undefined,
    });
    if (settings.command.length) {
      supervisor = new CommandSupervisor({
        command: settings.command,
        childGrace: settings.childGrace,
        margin: childGraceMargin,
        log,
      });
    }
    const sup = supervisor;
    elector = new LeaderElector({
      lease,
      identity: settings.identity,
      leaseDuration: settings.leaseDuration,
      renewDeadline: settings.renewDeadline,
      retryPeriod: settings.retryPeriod,
      releaseOnCancel: settings.releaseOnCancel,
      coordinated: settings.coordinated !== undefined,
      logger: log,
      onStartedLeading: sup
        ? (ctx) =>
          sup.run(ctx, (status) => {
            if (stop.signal.aborted) return;
            exitCode = status;
            log.info("command exited while leading; releasing the lease and exiting with its status", { status });
            stop.abort();
          })
        : undefined,
    });
    if (settings.events) {
      recorder = new LeaderEventRecorder({
        client: lease.client,
        namespace: lease.namespace,
        leaseName: lease.name,
        identity: settings.identity,
        logger: log,
        timeoutMs: eventFlushMs,
      });
      recorder.attach(elector);
    }
    if (settings.coordinated) {
      const { LeaseCandidateKeeper } = await import("./candidate.ts");
      candidate = new LeaseCandidateKeeper({
        client: lease.client,
        namespace: lease.namespace,
        leaseName: lease.name,
        identity: settings.identity,
        binaryVersion: settings.coordinated.binaryVersion,
        emulationVersion: settings.coordinated.emulationVersion,
        logger: log,
      });
    }
    options.onElector?.(elector);
    if (settings.httpAddr) {
      const ns = settings.namespace;
      server = await serveHttp(
        settings.httpAddr,
        elector,
        { lease: () => `${ns}/${settings.leaseName}`, healthzGrace: settings.healthzGrace, work: supervisor },
        log,
      );
      options.onServer?.(server);
    }
  } catch (e) {
    log.error("invalid configuration", { error: (e as Error).message });
    server?.close();
    return 2;
  }
  // The candidate goes first on shutdown: the elector stops (and releases the
  // Lease) only once the LeaseCandidate is deleted (a DELETE bounded at 2 s), or
  // the controller could name this stopping replica again in between and wait out
  // a Lease that nobody renews.
  let electorStop = stop.signal;
  let candidateDone: Promise<void> | undefined;
  if (candidate) {
    const afterCandidate = new AbortController();
    electorStop = afterCandidate.signal;
    candidateDone = candidate.run(stop.signal).finally(() => afterCandidate.abort(stop.signal.reason));
  }
  try {
    await elector.run(electorStop);
    await candidateDone;
    // The last "stopped leading" Event is written before the process exits, within eventFlushMs.
    if (recorder) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([recorder.flush(), new Promise((r) => (timer = setTimeout(r, eventFlushMs)))]);
      clearTimeout(timer);
    }
    const code = exitCode ?? signalCode ?? 0;
    log.info("exiting", { code });
    return code;
  } catch (e) {
    log.error("fatal", { error: (e as Error).message });
    return e instanceof ConfigError ? 2 : 1;
  } finally {
    server?.closeAllConnections?.();
    server?.close();
  }
}

/** How long an Event write may take, and how long the exit waits for the last ones. */
const eventFlushMs = 2000;

function isMainModule(): boolean {
  const meta = import.meta as ImportMeta & { main?: boolean };
  if (typeof meta.main === "boolean") return meta.main;
  // Only Node gets here (Deno and Bun answer above). The module's own path is compared with the
  // script's real path without node:url, and without a top-level await (CommonJS bundles cannot have one).
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    const here = new URL(import.meta.url);
    if (here.protocol !== "file:") return false;
    const path = decodeURIComponent(here.pathname);
    const real = realpathSync(argv1);
    return process.platform === "win32"
      ? path.slice(1).replaceAll("/", "\\").toLowerCase() === real.toLowerCase()
      : path === real;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  main(process.argv.slice(2)).then((code) => {
    // A pending SIGKILL timer dies with process.exit: kill what still runs now.
    killAllGroupsSync();
    process.exit(code);
  }, (e) => {
    killAllGroupsSync();
    process.stderr.write(`${JSON.stringify({ level: "error", msg: "fatal", error: String(e) })}\n`);
    process.exit(1);
  });
}
