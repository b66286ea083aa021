/**
 * Runs the entrypoint's command only while this replica leads, in a process
 * group of its own, and stops the whole group (SIGTERM, then SIGKILL) within
 * the time left before another replica could take the Lease.
 *
 * @module
 */

import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { constants } from "node:os";
import process from "node:process";
import type { LeaderContext } from "./elector.ts";
import type { Logger } from "./log.ts";

/**
 * The exit status a shell reports for a process that ended with `code` or by
 * `signal`: the code itself, or 128 + the signal's number.
 *
 * @example Usage
 * ```ts
 * import { exitStatus } from "@leasehold/leasehold/cli";
 * console.log(exitStatus(null, "SIGSEGV")); // 139
 * ```
 */
export function exitStatus(code: number | null, signal: string | null): number {
  if (code !== null) return code;
  const n = signal ? (constants.signals as Record<string, number>)[signal] : undefined;
  return typeof n === "number" ? 128 + n : 1;
}

/** Process groups started here and not yet seen gone, for {@linkcode killAllGroupsSync}. */
const liveGroups = new Set<number>();
let exitHookInstalled = false;

function signalGroup(pgid: number, sig: string | number): boolean {
  // Never signal 0 or 1: kill(-0) would hit leasehold's own group, kill(-1) every process.
  if (!Number.isInteger(pgid) || pgid <= 1) return false;
  try {
    process.kill(-pgid, sig);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

/**
 * Whether any process of group `pgid` still lives. Zombies (dead, not yet reaped,
 * e.g. orphans of a PID 1 that does not reap) do not count.
 */
export function groupAlive(pgid: number): boolean {
  if (!signalGroup(pgid, 0)) return false;
  let entries: string[];
  try {
    // Only a procfs of our own PID namespace numbers processes as kill(2) does.
    if (Number(readFileSync("/proc/self/stat", "utf8").split(" ")[0]) !== process.pid) return true;
    entries = readdirSync("/proc");
  } catch {
    return true; // no procfs: trust kill(2)
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(f[2]) === pgid && f[0] !== "Z" && f[0] !== "X") return true;
  }
  return false;
}

/**
 * Sends SIGKILL to every process group this module started that may still
 * live; synchronous, so it is safe right before `process.exit` (which would
 * cancel a pending timer) and in an `exit` handler.
 *
 * @example Usage
 * ```ts
 * import { killAllGroupsSync } from "@leasehold/leasehold/cli";
 * killAllGroupsSync(); // nothing started: does nothing
 * ```
 */
export function killAllGroupsSync(): void {
  for (const pgid of liveGroups) signalGroup(pgid, "SIGKILL");
}

/** Options of {@linkcode CommandSupervisor}. */
export interface SupervisorOptions {
  /** The command and its arguments. */
  command: string[];
  /** Longest time between SIGTERM and SIGKILL, in ms. */
  childGrace: number;
  /** Share of a term-end `graceMs` kept as a margin before another replica may take over. */
  margin: (windowMs: number) => number;
  /** Logger. */
  log: Logger;
  /** Environment of the command, before the fencing-token variables. @default process.env */
  env?: Record<string, string | undefined>;
  /** How often a stopping group is checked for survivors, in ms. @default 50 */
  pollMs?: number;
}

/**
 * One command per term: started when leadership starts, in its own session and
 * process group (so a `sh -c` wrapper's children are reached too), and stopped
 * as a group when the term ends: SIGTERM, then SIGKILL after
 * min(childGrace, graceMs - margin), where `graceMs` comes from the abort reason
 * of the term's signal when it carries one. A new term starts no command while
 * the last one's group still runs.
 *
 * @example Usage
 * ```ts ignore
 * import { LeaderElector } from "@leasehold/leasehold";
 * import { CommandSupervisor } from "@leasehold/leasehold/cli";
 * const sup = new CommandSupervisor({ command: ["./worker"], childGrace: 4000, margin: () => 1000, log: console });
 * new LeaderElector({ lease, identity, onStartedLeading: (ctx) => sup.run(ctx, (status) => exitWith(status)) });
 * ```
 */
export class CommandSupervisor {
  #o: SupervisorOptions;
  #last: Promise<void> = Promise.resolve();
  #stopping = false;
  #killedAt?: number;
  #pgid?: number;
  /** node:child_process, loaded only by a supervisor, so a replica without a command never loads it. */
  #childProcess: Promise<typeof import("node:child_process")>;

  /** Creates a supervisor; nothing starts until {@linkcode CommandSupervisor.run}. */
  constructor(options: SupervisorOptions) {
    this.#o = options;
    this.#childProcess = import("node:child_process");
    this.#childProcess.catch(() => {}); // reported when a term tries to start the command
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on("exit", killAllGroupsSync);
    }
  }

  /** A process group of an ended term (or of a command that exited) is still being stopped. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** An error when the group survived SIGKILL for more than a second. */
  check(): string | undefined {
    if (this.#killedAt !== undefined && performance.now() - this.#killedAt > 1000) {
      return `the command's process group ${this.#pgid} is still alive after SIGKILL`;
    }
    return undefined;
  }

  /**
   * Runs the command for one term; resolves when its whole process group is
   * gone. `onExit(status)` is called when the command ended while the term was
   * still running (exit code, 128+n for signal n, 127 when it could not start).
   */
  run(ctx: LeaderContext, onExit: (status: number) => void): Promise<void> {
    const previous = this.#last;
    const term = (async () => {
      if (this.#stopping) {
        this.#o.log.warn("waiting for the last term's command to stop before starting it again", {
          pgid: this.#pgid,
        });
      }
      await previous;
      let spawn: typeof import("node:child_process").spawn;
      try {
        spawn = (await this.#childProcess).spawn;
      } catch (e) {
        this.#o.log.error("cannot start command", { command: this.#o.command[0], error: (e as Error).message });
        if (!ctx.signal.aborted) onExit(127);
        return;
      }
      if (ctx.signal.aborted) return;
      await this.#term(ctx, onExit, spawn);
    })();
    this.#last = term.catch(() => {});
    return term;
  }

  #term(
    ctx: LeaderContext,
    onExit: (status: number) => void,
    spawn: typeof import("node:child_process").spawn,
  ): Promise<void> {
    const { command, log } = this.#o;
    const pollMs = this.#o.pollMs ?? 50;
    return new Promise<void>((resolve) => {
      let child: ChildProcess;
      try {
        child = spawn(command[0], command.slice(1), {
          stdio: "inherit",
          detached: true, // setsid(): its own session and process group
          env: {
            ...(this.#o.env ?? process.env),
            LEASEHOLD_FENCING_TOKEN: ctx.fencingToken.value,
            LEASEHOLD_LEASE_TRANSITIONS: String(ctx.fencingToken.leaseTransitions),
            LEASEHOLD_HOLDER_IDENTITY: ctx.fencingToken.holderIdentity,
          },
        });
      } catch (e) {
        log.error("cannot start command", { command: command[0], error: (e as Error).message });
        if (!ctx.signal.aborted) onExit(127);
        return resolve();
      }
      const pgid = child.pid;
      if (pgid) {
        liveGroups.add(pgid);
        this.#pgid = pgid;
      }
      log.info("started command", { command: command.join(" "), pid: pgid });
      let termSent = false;
      let killTimer: ReturnType<typeof setTimeout> | undefined;
      let poll: ReturnType<typeof setInterval> | undefined;
      let exited = false;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        if (killTimer) clearTimeout(killTimer);
        if (poll) clearInterval(poll);
        ctx.signal.removeEventListener("abort", onAbort);
        if (pgid) liveGroups.delete(pgid);
        this.#stopping = false;
        this.#killedAt = undefined;
        resolve();
      };
      const kill = () => {
        if (pgid === undefined) return;
        if (!groupAlive(pgid)) return;
        log.warn("command did not stop in time; killing its process group", { pgid, signal: "SIGKILL" });
        signalGroup(pgid, "SIGKILL");
        this.#killedAt = performance.now();
      };
      // Stop the group: SIGTERM now, SIGKILL when the grace is over.
      const stop = (why: string, graceMs: number) => {
        if (termSent || pgid === undefined) return;
        termSent = true;
        this.#stopping = true;
        const grace = Math.max(0, Math.min(this.#o.childGrace, graceMs));
        log.info("stopping command", { pgid, signal: "SIGTERM", graceMs: Math.round(grace), why });
        signalGroup(pgid, "SIGTERM");
        killTimer = setTimeout(kill, grace);
        // The group ends when its last process does; nothing reports that, so look.
        poll = setInterval(() => {
          if (exited && !groupAlive(pgid)) finish();
        }, pollMs);
      };
      const onAbort = () => {
        const g = (ctx.signal.reason as { graceMs?: unknown } | undefined)?.graceMs;
        const graceMs = typeof g === "number" && Number.isFinite(g) ? g - this.#o.margin(g) : this.#o.childGrace;
        stop("leadership ended", graceMs);
      };
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      child.on("error", (err) => {
        if (pgid !== undefined) return; // errors after a successful start (e.g. kill) are not spawn failures
        const status = (err as { code?: string }).code === "EACCES" ? 126 : 127;
        log.error("cannot start command", { command: command[0], error: err.message, status });
        if (!ctx.signal.aborted) onExit(status);
        finish();
      });
      child.on("exit", (code, signal) => {
        exited = true;
        const status = exitStatus(code, signal);
        log.info("command exited", { code, signal, status, pid: pgid });
        if (!ctx.signal.aborted) onExit(status);
        if (pgid === undefined || !groupAlive(pgid)) return finish();
        // The command is gone but processes it started in its group are not.
        if (!termSent) stop("the command exited; its process group still runs", this.#o.childGrace);
      });
      if (ctx.signal.aborted) onAbort();
    });
  }
}
