// Shared pieces of the benchmarks: child processes that log JSON lines, small
// statistics, /proc readers, and the context every benchmark receives.

/** One parsed log line of a child process; `at` is the bench's performance.now() when it arrived. */
export interface LogLine {
  at: number;
  msg?: string;
  event?: string;
  leader?: string;
  [key: string]: unknown;
}

/** Every process the bench started, so that a failure never leaves one behind. */
const live = new Set<Proc>();

/** Kills every child still running (SIGKILL) and waits for them. */
export async function killAll(): Promise<void> {
  const all = [...live];
  for (const p of all) p.kill("SIGKILL");
  await Promise.all(all.map((p) => p.exited));
}

/**
 * The environment every child starts from, as in a container: PATH, HOME and
 * LANG, nothing else. The bench's own environment may hold variables that
 * change what a runtime does at start (NODE_EXTRA_CA_CERTS, for one, makes Node
 * and Bun read and parse a whole CA bundle: tens of milliseconds more per start here).
 */
export function baseEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "LANG"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * A child process whose JSON log lines (on `logStream`) are parsed as they
 * arrive. The other stream is kept as a short tail for error messages. Its
 * environment is {@linkcode baseEnv} plus `env`.
 */
export class Proc {
  readonly name: string;
  readonly pid: number;
  /** performance.now() just before the spawn. */
  readonly startedAt: number;
  readonly lines: LogLine[] = [];
  readonly exited: Promise<Deno.CommandStatus>;
  exitedAt?: number;
  #tail: string[] = [];
  #child: Deno.ChildProcess;
  #waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  constructor(
    cmd: string[],
    options: { env?: Record<string, string>; logStream: "stdout" | "stderr"; name: string; cwd?: string },
  ) {
    this.name = options.name;
    this.startedAt = performance.now();
    this.#child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      clearEnv: true,
      env: { ...baseEnv(), ...options.env },
      cwd: options.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.pid = this.#child.pid;
    live.add(this);
    const logs = options.logStream === "stdout" ? this.#child.stdout : this.#child.stderr;
    const other = options.logStream === "stdout" ? this.#child.stderr : this.#child.stdout;
    const readLogs = this.#readLines(logs, (text) => this.#onLine(text));
    const readOther = this.#readLines(other, (text) => {
      this.#tail.push(text);
      if (this.#tail.length > 30) this.#tail.shift();
    });
    this.exited = this.#child.status.then(async (s) => {
      this.exitedAt = performance.now();
      await Promise.allSettled([readLogs, readOther]);
      live.delete(this);
      return s;
    });
  }

  async #readLines(stream: ReadableStream<Uint8Array>, onLine: (text: string) => void): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of stream) {
        buf += dec.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          onLine(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      }
    } catch { /* the process went away */ }
    if (buf) onLine(buf);
  }

  #onLine(text: string): void {
    const at = performance.now();
    let line: LogLine;
    try {
      const parsed = JSON.parse(text);
      line = parsed && typeof parsed === "object" ? { ...parsed, at } : { msg: text, at };
    } catch {
      line = { msg: text, at, raw: true };
    }
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((w) => (w.pred(line) ? (w.resolve(line), false) : true));
  }

  /** The first line (already seen or still to come) matching `pred`. */
  waitFor(pred: (l: LogLine) => boolean, ms: number, what = "a matching log line"): Promise<LogLine> {
    const hit = this.lines.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(
          new Error(
            `${this.name}: no ${what} within ${ms} ms; log: ${
              this.lines.map((l) => l.msg ?? l.event).join(" | ")
            }; other output: ${this.#tail.slice(-5).join(" / ")}`,
          ),
        );
      }, ms);
      const done = (l: LogLine) => {
        clearTimeout(timer);
        resolve(l);
      };
      this.#waiters.push({ pred, resolve: done });
    });
  }

  kill(sig: Deno.Signal = "SIGTERM"): void {
    try {
      this.#child.kill(sig);
    } catch { /* already gone */ }
  }

  /** Sends `sig`, then SIGKILL if it has not exited within `graceMs`. */
  async stop(sig: Deno.Signal = "SIGTERM", graceMs = 15000): Promise<Deno.CommandStatus> {
    this.kill(sig);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killer = new Promise<void>((r) => {
      timer = setTimeout(() => {
        this.kill("SIGKILL");
        r();
      }, graceMs);
    });
    const status = await Promise.race([this.exited, killer.then(() => this.exited)]);
    clearTimeout(timer);
    return status;
  }

  /** Resident set size in KiB (VmRSS), or undefined once the process is gone. */
  rssKb(): number | undefined {
    return procStatusKb(this.pid, "VmRSS");
  }
}

/** A field of /proc/<pid>/status in KiB. */
function procStatusKb(pid: number | "self", field: string): number | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Nearest-rank quantile of a non-empty sample (q in [0, 1]). */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(q * s.length));
  return s[Math.min(rank, s.length) - 1];
}

/** Summary of a sample. */
export interface Summary {
  n: number;
  min: number;
  median: number;
  mean: number;
  p99: number;
  max: number;
}

export function summarize(xs: number[]): Summary | undefined {
  if (!xs.length) return undefined;
  const r = (v: number) => Math.round(v * 100) / 100;
  return {
    n: xs.length,
    min: r(Math.min(...xs)),
    median: r(quantile(xs, 0.5)),
    mean: r(xs.reduce((a, b) => a + b, 0) / xs.length),
    p99: r(quantile(xs, 0.99)),
    max: r(Math.max(...xs)),
  };
}

export const round = (v: number, digits = 1) => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

/** Timings of one election, in ms and as Go durations for flags. */
export interface Timings {
  leaseDuration: number;
  renewDeadline: number;
  retryPeriod: number;
}

export const DEFAULT_TIMINGS: Timings = { leaseDuration: 15000, renewDeadline: 10000, retryPeriod: 2000 };
export const FAST_TIMINGS: Timings = { leaseDuration: 4000, renewDeadline: 3000, retryPeriod: 500 };

const goDuration = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);

export function timingFlags(t: Timings): string[] {
  return [
    "--lease-duration",
    goDuration(t.leaseDuration),
    "--renew-deadline",
    goDuration(t.renewDeadline),
    "--retry-period",
    goDuration(t.retryPeriod),
  ];
}

/** What the API server harness reports (tests/env/testenv.mjs). */
export interface ServerInfo {
  url: string;
  host: string;
  port: number;
  caFile: string;
  adminToken: string;
}

/** An in-cluster style identity from podIdentity(). */
export interface PodIdentity {
  dir: string;
  env: Record<string, string>;
  token: string;
}

/** Everything a benchmark needs. */
export interface BenchContext {
  root: string;
  smoke: boolean;
  info: ServerInfo;
  /** fetch that trusts the cluster CA. */
  adminFetch: (input: string, init?: RequestInit) => Promise<Response>;
  denoPath: string;
  bunPath: string;
  nodePath: string;
  /** Directory of the Node build (lib/cli.js), or undefined when it could not be built. */
  nodeDist?: string;
  clientgoBin: string;
  /** More forms of the entrypoint for the memory and cold-start benchmarks (bundles, an older tree). */
  variants?: import("./replicas.ts").Impl[];
  /** A fresh namespace. */
  namespace(prefix: string): Promise<string>;
  /** A pod identity (ServiceAccount + Role for one lease) in a namespace. */
  identity(namespace: string, leaseName: string): Promise<PodIdentity>;
  /** Progress line on stderr. */
  log(msg: string): void;
}
