// lib/pem.ts: the structural check of the cluster CA that replaced parsing it
// with node:crypto at start (to keep that module out of an idle replica).
import { test } from "./support/guard.mjs";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { certificateBlocks, certificateProblem } from "../lib/pem.ts";
import { makeTestCerts } from "./support/tls_certs.mjs";

function pemOf(der: Uint8Array): string {
  const b64 = btoa(String.fromCharCode(...der)).replace(/.{64}/g, "$&\n");
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----`;
}

function derOf(block: string): Uint8Array {
  const body = block.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

test("pem: real certificates pass, and a bundle is split into its blocks", () => {
  const certs = makeTestCerts();
  try {
    const bundle = `${certs.clusterCa}\n${certs.otherCa}\n${certs.server.cert}`;
    const blocks = certificateBlocks(bundle);
    assert.equal(blocks.length, 3);
    for (const b of blocks) {
      assert.equal(certificateProblem(b), undefined);
      new X509Certificate(b); // the oracle agrees
    }
  } finally {
    certs.cleanup();
  }
});

test("pem: garbage, empty, cut or padded blocks are refused, each with a reason", () => {
  const certs = makeTestCerts();
  try {
    const der = derOf(certificateBlocks(certs.clusterCa)[0]);
    // [block, reason, whether node:crypto refuses it too (Deno's accepts bytes after the certificate)]
    const bad: [string, RegExp, boolean?][] = [
      ["-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----", /not base64/],
      ["-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----", /empty/],
      [pemOf(new Uint8Array([0x02, 0x01, 0x00])), /no outer SEQUENCE/],
      [pemOf(new Uint8Array([...der, 0x00])), /no outer SEQUENCE/, false],
      [pemOf(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00])), /not a certificate/],
    ];
    // Every cut of the DER (a truncated file) is refused, as node:crypto refuses it.
    for (let n = 1; n < der.length; n += Math.max(1, Math.floor(der.length / 40))) {
      bad.push([pemOf(der.subarray(0, n)), /./]);
    }
    for (const [block, reason, oracle = true] of bad) {
      const problem = certificateProblem(block);
      assert.ok(problem, `accepted: ${block.slice(28, 80)}`);
      assert.match(problem, reason);
      if (oracle) {
        assert.throws(() => new X509Certificate(block), `node:crypto accepts what the check refuses: ${problem}`);
      }
    }
  } finally {
    certs.cleanup();
  }
});
