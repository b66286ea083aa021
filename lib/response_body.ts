/**
 * Response helpers of the client: racing a promise against a signal, and a
 * body that lets go of the caller's signal once it ended.
 *
 * @module
 */

import { StreamResponse } from "./node_response.ts";

/** Resolves like `p`, or rejects with the signal's reason when it aborts first. */
export function raceSignal<T>(p: Promise<T> | undefined, signal: AbortSignal): Promise<T | undefined> {
  if (p === undefined) return Promise.resolve(undefined);
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * The same response with a body that calls `release` once it ended, failed or
 * was cancelled, so nothing stays attached to the caller's signal afterwards.
 */
export function releasingBody(res: Response, release: () => void): Response {
  if (!res.body) {
    release();
    return res;
  }
  const reader = res.body.getReader();
  let released = false;
  const once = () => {
    if (!released) {
      released = true;
      release();
    }
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          once();
          ctl.close();
        } else ctl.enqueue(value);
      } catch (e) {
        once();
        ctl.error(e);
      }
    },
    async cancel(reason) {
      once();
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
  // The Node adapter's small response stays one: the global Response loads undici on Node 20.
  if (res instanceof StreamResponse) {
    return new StreamResponse(body, res.status, res.statusText, res.headers) as unknown as Response;
  }
  return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
}
