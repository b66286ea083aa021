/**
 * What an identity (`spec.holderIdentity`) may be.
 *
 * @module
 */

/** Longest holderIdentity accepted: a pod name (a DNS subdomain) has at most 253 characters. */
export const MAX_IDENTITY_LENGTH = 253;

/**
 * Checks an identity for use as `spec.holderIdentity`; returns the problem, or
 * `undefined` when fine. The API server stores any string, but an identity is
 * logged, compared across replicas and (with coordinated leader election) must
 * equal an object name: so it must be 1 to 253 characters, without control
 * characters (newlines included) or surrounding spaces.
 *
 * @example Usage
 * ```ts
 * import { invalidIdentity } from "@leasehold/leasehold/cli";
 * console.log(invalidIdentity("pod-a")); // undefined
 * console.log(invalidIdentity("a\nb") !== undefined); // true
 * ```
 */
export function invalidIdentity(id: string): string | undefined {
  if (id === "") return "is empty";
  if (id.length > MAX_IDENTITY_LENGTH) {
    return `has ${id.length} characters; at most ${MAX_IDENTITY_LENGTH} (a pod name) are allowed`;
  }
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(id)) return "contains a control character (e.g. a newline)";
  if (id.trim() !== id) return "starts or ends with a space";
  return undefined;
}
