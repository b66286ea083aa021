/**
 * Starts tests/support/frozen_proxy.mjs under Node and drives it: a TLS server
 * (HTTP/2 and HTTP/1.1) behind a proxy whose established connections can be
 * frozen without closing.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** A running frozen-connection proxy. */
export interface FrozenProxy {
  /** `https://127.0.0.1:<port>` of the proxy. */
  url: string;
  /** Stops forwarding on every open connection (sockets stay open); resolves with how many. */
  freeze(): Promise<number>;
  /** Forwards again on frozen connections. */
  heal(): Promise<number>;
  /** Connections the proxy accepted so far, open ones, and requests the server answered. */
  stats(): Promise<{ connections: number; open: number; requests: number }>;
  /** Stops the child process it started. */
  close(): Promise<void>;
}

/**
 * Starts the proxy with the given serving certificate files; with `clientCaFile`
 * the server asks for a client certificate and reports its CN.
 */
export async function startFrozenProxy(certFile: string, keyFile: string, clientCaFile?: string): Promise<FrozenProxy> {
  const script = fileURLToPath(new URL("./frozen_proxy.mjs", import.meta.url));
  const args = [script, certFile, keyFile, ...(clientCaFile ? [clientCaFile] : [])];
  const child: ChildProcess = spawn("node", args, { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  const queued: string[] = [];
  lines.on("line", (l) => {
    const w = waiting.shift();
    if (w) w(l);
    else queued.push(l);
  });
  const next = () =>
    new Promise<string>((resolve, reject) => {
      const q = queued.shift();
      if (q !== undefined) return resolve(q);
      const onExit = () => reject(new Error("frozen proxy exited"));
      child.once("exit", onExit);
      waiting.push((l) => {
        child.off("exit", onExit);
        resolve(l);
      });
    });
  const ask = async (cmd: string) => {
    child.stdin!.write(cmd + "\n");
    return JSON.parse(await next());
  };
  const { url } = JSON.parse(await next());
  return {
    url,
    freeze: async () => (await ask("freeze")).frozen,
    heal: async () => (await ask("heal")).healed,
    stats: () => ask("stats"),
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.stdin!.end();
        child.kill("SIGTERM");
      }),
  };
}
