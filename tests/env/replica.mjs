// Runs the entrypoint as a child process on the current runtime and follows its
// JSON log lines. Plain JavaScript so Deno, Bun and Node share it.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { ROOT } from "./testenv.mjs";

/** The command that runs the entrypoint on this runtime (Node runs the built JS). */
export function entrypointCommand() {
  if (globalThis.Deno) return [globalThis.Deno.execPath(), "run", "-A", join(ROOT, "lib", "cli.ts")];
  if (globalThis.Bun) return [process.execPath, join(ROOT, "lib", "cli.ts")];
  return [process.execPath, join(ROOT, "dist", "lib", "cli.js")];
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts one replica. `lines` collects its parsed log lines (stderr); `waitFor`
 * resolves with the first line (already seen or future) matching `pred`.
 * @param {string[]} args
 * @param {Record<string, string>} env
 * @param {{ name?: string, cmd?: string[] }} [options]
 */
export function startReplica(args, env, { name = "replica", cmd = entrypointCommand() } = {}) {
  const child = spawnChild(cmd[0], [...cmd.slice(1), ...args], env);
  /** @type {any[]} */
  const lines = [];
  /** @type {{ pred: (l: any) => boolean, resolve: (l: any) => void }[]} */
  let waiters = [];
  let buf = "";
  let stdout = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const text = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let line;
      try {
        line = JSON.parse(text);
      } catch {
        line = { msg: text, raw: true };
      }
      line.at = performance.now();
      lines.push(line);
      waiters = waiters.filter((w) => (w.pred(line) ? (w.resolve(line), false) : true));
    }
  });
  const exited = child.exited;
  return {
    name,
    child,
    lines,
    exited,
    get stdout() {
      return stdout;
    },
    /**
     * @param {(l: any) => boolean} pred
     * @param {number} [ms]
     * @returns {Promise<any>}
     */
    waitFor(pred, ms = 20000) {
      const hit = lines.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          reject(
            new Error(`${name}: no matching log line within ${ms} ms; saw: ${lines.map((l) => l.msg).join(" | ")}`),
          );
        }, ms);
        waiters.push({
          pred,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
        });
      });
    },
    /** @param {string} [sig] */
    kill(sig = "SIGTERM") {
      child.kill(sig);
    },
  };
}

/**
 * Spawns a process with piped stdout/stderr. On Deno it uses Deno.Command,
 * because Deno's node:child_process reports the signal we sent instead of the
 * exit code the process chose after handling it.
 * @param {string} bin
 * @param {string[]} args
 * @param {Record<string, string>} env
 */
function spawnChild(bin, args, env) {
  const Deno = globalThis.Deno;
  if (!Deno) {
    const c = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    return {
      stdout: c.stdout,
      stderr: c.stderr,
      pid: c.pid,
      kill: (/** @type {any} */ sig) => c.kill(sig),
      exited: new Promise((resolve) => c.on("exit", (code, signal) => resolve({ code, signal }))),
    };
  }
  const p = new Deno.Command(bin, { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  const emitter = (/** @type {ReadableStream<Uint8Array>} */ stream) => {
    /** @type {((d: string) => void)[]} */
    const fns = [];
    (async () => {
      const dec = new TextDecoder();
      for await (const chunk of stream) for (const f of fns) f(dec.decode(chunk, { stream: true }));
    })().catch(() => {});
    return { on: (/** @type {string} */ _ev, /** @type {(d: string) => void} */ f) => fns.push(f) };
  };
  return {
    stdout: emitter(p.stdout),
    stderr: emitter(p.stderr),
    pid: p.pid,
    kill: (/** @type {any} */ sig) => {
      try {
        p.kill(sig);
      } catch { /* already gone */ }
    },
    exited: p.status.then((/** @type {any} */ s) => ({ code: s.signal ? null : s.code, signal: s.signal })),
  };
}
