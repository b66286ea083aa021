// The node:https adapter's response bodies (Node, and Deno with a cluster CA):
// data the body emits after its end, error or cancel is ignored, not thrown
// from an event handler (which would end the process).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { PassThrough, Readable } from "node:stream";
import { webBody } from "../lib/transport_node.ts";

/** Reads a web stream to its end. */
async function readAll(s: ReadableStream<Uint8Array>): Promise<string> {
  const r = s.getReader();
  let out = "";
  for (;;) {
    const { done, value } = await r.read();
    if (done) return out;
    out += new TextDecoder().decode(value);
  }
}

test("webBody: data emitted after the end is ignored (Readable.toWeb throws there)", async () => {
  const body = new PassThrough();
  const stream = webBody(body);
  body.end("whole");
  assert.equal(await readAll(stream), "whole");
  // What Deno's node:http does after a response was destroyed: one more data event.
  assert.doesNotThrow(() => body.emit("data", Buffer.from("late")));
  // Node's and Deno's own adapter (what the transport used) throws from the event handler there.
  if ("Bun" in globalThis) return;
  const other = new PassThrough();
  const web = Readable.toWeb(other) as unknown as ReadableStream<Uint8Array>;
  other.end("whole");
  await readAll(web);
  assert.throws(() => other.emit("data", Buffer.from("late")), /close|enqueue|closed|Invalid state/i);
});

test("webBody: data after a cancel or an error is ignored; a body cut short is an error", async () => {
  const a = new PassThrough();
  const sa = webBody(a);
  a.write("x");
  await sa.getReader().cancel(new Error("stop"));
  assert.doesNotThrow(() => a.emit("data", Buffer.from("late")));
  assert.equal(a.destroyed, true, "cancel destroys the body");

  const b = new PassThrough();
  const sb = webBody(b);
  b.destroy(new Error("boom"));
  await assert.rejects(readAll(sb), /boom/);
  assert.doesNotThrow(() => b.emit("data", Buffer.from("late")));

  const c = new PassThrough();
  const sc = webBody(c);
  c.write("part");
  c.destroy();
  await assert.rejects(readAll(sc), /ended before it was complete/);
});

test("webBody: back pressure pauses the body until it is read", async () => {
  const body = new PassThrough();
  const stream = webBody(body);
  for (let i = 0; i < 100; i++) body.write("x".repeat(1000));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(body.isPaused(), true, "paused while nobody reads");
  body.end();
  assert.equal((await readAll(stream)).length, 100000);
});
