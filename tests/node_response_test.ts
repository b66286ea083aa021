// The response of the node:https adapter stands in for the global Response:
// header lookup, the body readers, clone, and request headers in every form.
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { headerRecord, ResponseHeaders, StreamResponse } from "../lib/node_response.ts";

const stream = (...parts: string[]) => new Blob(parts).stream();

test("node response: headers are case-insensitive, repeats joined, iterated in name order", () => {
  const h = new ResponseHeaders(["Content-Type", "application/json", "X-B", "1", "x-b", "2", "A", "z"]);
  assert.equal(h.get("content-type"), "application/json");
  assert.equal(h.get("CONTENT-TYPE"), "application/json");
  assert.equal(h.get("x-b"), "1, 2");
  assert.equal(h.get("missing"), null);
  assert.equal(h.has("X-B"), true);
  assert.deepEqual([...h], [["a", "z"], ["content-type", "application/json"], ["x-b", "1, 2"]]);
  const seen: string[] = [];
  h.forEach((v, k) => seen.push(`${k}=${v}`));
  assert.deepEqual(seen, ["a=z", "content-type=application/json", "x-b=1, 2"]);
});

test("node response: text, json, bytes, blob; a body reads once; ok follows the status", async () => {
  const r = new StreamResponse(stream('{"a":', "1}"), 200, "OK", new ResponseHeaders(["content-type", "x/y"]));
  assert.equal(r.ok, true);
  assert.equal(r.bodyUsed, false);
  assert.deepEqual(await r.json(), { a: 1 });
  assert.equal(r.bodyUsed, true);
  await assert.rejects(() => r.text(), TypeError);
  assert.equal(await new StreamResponse(stream("é"), 500, "", new ResponseHeaders()).text(), "é");
  assert.equal(new StreamResponse(null, 404, "Not Found", new ResponseHeaders()).ok, false);
  assert.deepEqual([...await new StreamResponse(stream("ab"), 200, "", new ResponseHeaders()).bytes()], [97, 98]);
  assert.equal((await new StreamResponse(stream("ab"), 200, "", new ResponseHeaders()).arrayBuffer()).byteLength, 2);
  const blob = await new StreamResponse(stream("ab"), 200, "", new ResponseHeaders(["content-type", "x/y"])).blob();
  assert.equal(blob.type, "x/y");
  assert.equal(await new StreamResponse(null, 204, "", new ResponseHeaders()).text(), "");
});

test("node response: a clone reads the same body independently", async () => {
  const r = new StreamResponse(stream("hello"), 200, "OK", new ResponseHeaders());
  const c = r.clone();
  assert.equal(await c.text(), "hello");
  assert.equal(await r.text(), "hello");
});

test("node response: request headers from a record, pairs or a Headers, names lower-case", () => {
  assert.deepEqual(headerRecord({ Accept: "a", "X-Y": "b" }), { accept: "a", "x-y": "b" });
  assert.deepEqual(headerRecord([["A", "1"], ["a", "2"]]), { a: "1, 2" });
  assert.deepEqual(headerRecord(new Headers({ Authorization: "Bearer t" })), { authorization: "Bearer t" });
  assert.deepEqual(headerRecord(undefined), {});
});
