// Starts tests/support/frozen_proxy.mjs under Node and drives it: a TLS server
// (HTTP/2 and HTTP/1.1) behind a proxy whose established connections can be
// frozen without closing. Plain JavaScript, shared by the Deno, Bun and Node tests.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/**
 * Starts the proxy with the given serving certificate files; with `clientCaFile`
 * the server asks for a client certificate and reports its CN.
 * @param {string} certFile
 * @param {string} keyFile
 * @param {string} [clientCaFile]
 * @returns {Promise<{ url: string, freeze(): Promise<number>, heal(): Promise<number>,
 *   stats(): Promise<{ connections: number, open: number, requests: number }>, close(): Promise<void> }>}
 */
export async function startFrozenProxy(certFile, keyFile, clientCaFile) {
  const script = fileURLToPath(new URL("./frozen_proxy.mjs", import.meta.url));
  const args = [script, certFile, keyFile, ...(clientCaFile ? [clientCaFile] : [])];
  const child = spawn("node", args, { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  const waiting = [];
  const queued = [];
  lines.on("line", (l) => {
    const w = waiting.shift();
    if (w) w(l);
    else queued.push(l);
  });
  const next = () =>
    new Promise((resolve, reject) => {
      const q = queued.shift();
      if (q !== undefined) return resolve(q);
      const onExit = () => reject(new Error("frozen proxy exited"));
      child.once("exit", onExit);
      waiting.push((l) => {
        child.off("exit", onExit);
        resolve(l);
      });
    });
  const ask = async (cmd) => {
    child.stdin.write(cmd + "\n");
    return JSON.parse(await next());
  };
  const { url } = JSON.parse(await next());
  return {
    url,
    freeze: async () => (await ask("freeze")).frozen,
    heal: async () => (await ask("heal")).healed,
    stats: () => ask("stats"),
    close: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.stdin.end();
        child.kill("SIGTERM");
      }),
  };
}
