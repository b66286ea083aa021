/**
 * A structural check of PEM certificates without a crypto module: each block
 * must be base64 of one DER `Certificate` (a SEQUENCE of the to-be-signed
 * SEQUENCE, the algorithm SEQUENCE and the signature BIT STRING, with lengths
 * that add up). It catches a cut, garbled or mis-pasted CA file at start, where
 * parsing it with `node:crypto`'s `X509Certificate` would cost about 1 MiB
 * (Deno) to 2.5 MiB (Bun) of resident memory for the life of the process.
 *
 * @module
 */

/**
 * The PEM certificate blocks of a bundle, in order.
 *
 * @example Usage
 * ```ts
 * import { certificateBlocks } from "./pem.ts";
 * console.log(certificateBlocks("x\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n").length); // 1
 * ```
 */
export function certificateBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Why a PEM certificate block is not one well-formed DER certificate, or
 * undefined when it is.
 *
 * @example Usage
 * ```ts
 * import { certificateProblem } from "./pem.ts";
 * console.log(certificateProblem("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----"));
 * // "the block is not base64"
 * ```
 */
export function certificateProblem(block: string): string | undefined {
  const body = block.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
  if (!body) return "the block is empty";
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) return "the block is not base64";
  let der: Uint8Array;
  try {
    der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  } catch {
    return "the block is not base64";
  }
  const outer = tlv(der, 0);
  if (!outer || outer.tag !== 0x30 || outer.end !== der.length) {
    return "the block is not one DER certificate (no outer SEQUENCE spanning it)";
  }
  const tags: number[] = [];
  for (let at = outer.start; at < outer.end;) {
    const part = tlv(der, at);
    if (!part || part.end > outer.end) return "the certificate's DER is cut short";
    tags.push(part.tag);
    at = part.end;
  }
  if (tags.join() !== "48,48,3") {
    return "the DER is not a certificate (expected to-be-signed, algorithm and signature)";
  }
  return undefined;
}

/** One DER tag-length-value at `at`: its tag, where its content starts and where it ends; undefined if cut short. */
function tlv(der: Uint8Array, at: number): { tag: number; start: number; end: number } | undefined {
  if (at + 2 > der.length) return undefined;
  const tag = der[at];
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > der.length) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i];
    start += n;
  }
  const end = start + len;
  return end > der.length ? undefined : { tag, start, end };
}
