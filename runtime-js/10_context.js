// Islet edge layer, step 10: the `ctx` argument of `fetch(request, env, ctx)`.
import { primordials } from "ext:core/mod.js";
import { logUncaught } from "ext:islet_runtime/02_console.js";

const { PromisePrototypeCatch, PromiseResolve } = primordials;

/** Work kept alive past the response; the isolate keeps running it while it lives. */
export class ExecutionContext {
  /**
   * Keeps `promise` running after the response has been sent; a rejection is logged against the
   * request instead of being reported as unhandled.
   * @param {Promise<unknown>} promise
   */
  waitUntil(promise) {
    PromisePrototypeCatch(PromiseResolve(promise), (error) => logUncaught(error, "in waitUntil"));
  }

  /**
   * Accepted for Workers compatibility. Islet has no origin behind a function to fall back to, so
   * an exception still answers 500.
   */
  passThroughOnException() {}
}
