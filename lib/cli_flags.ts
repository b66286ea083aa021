/**
 * The entrypoint's flags: the machine-readable table, parsing (flags, then the
 * environment, then defaults) and the help text. Validation into settings is
 * cli_settings.ts's.
 *
 * @module
 */

import { getEnv, SERVICE_ACCOUNT_DIR } from "./config.ts";
import { ConfigError } from "./errors.ts";

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
  {
    flag: "pod-uid",
    env: "POD_UID",
    help: "with --shards: this Pod's metadata.uid (downward API); the member Lease is owned by the Pod, so it is " +
      "deleted with it",
  },
];

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
    if (!a.startsWith("--")) {
      // `bun script.js -- cmd` reaches us without the "--": Bun takes it for its own.
      const bun = i === 0 && "Bun" in globalThis
        ? " (Bun drops a -- that directly follows the script: put a flag before it, e.g. --shards 6 -- CMD)"
        : "";
      throw new ConfigError(`unexpected argument ${JSON.stringify(a)}; put a command after --${bun}`);
    }
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
