// Islet edge layer, step 10: the `ctx` argument of `fetch(request, env, ctx)`.
import { primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";
import { logUncaught } from "ext:islet_runtime/02_console.js";

const { PromisePrototypeThen, PromiseResolve, SymbolFor } = primordials;

const slotKey = SymbolFor("islet.requestSlot");

/** Work kept alive past the response; the request's CPU limit still counts it. */
export class ExecutionContext {
  /** @param {number} slot the op-side key of the request this context belongs to */
  constructor(slot) {
    this[slotKey] = slot;
  }

  /**
   * Keeps `promise` running after the response has been sent; the request stays in flight (and its
   * CPU time counted) until it settles. A rejection is logged against the request instead of being
   * reported as unhandled.
   * @param {Promise<unknown>} promise
   */
  waitUntil(promise) {
    const slot = this[slotKey];
    // Resolved first: a `constructor` getter that throws must not leave the request counted as
    // waiting for ever.
    const settled = PromiseResolve(promise);
    ops.op_islet_wait_until(slot, true);
    PromisePrototypeThen(
      settled,
      () => ops.op_islet_wait_until(slot, false),
      (error) => {
        ops.op_islet_wait_until(slot, false);
        logUncaught(error, "in waitUntil");
      },
    );
  }

  /**
   * Accepted for Workers compatibility. Islet has no origin behind a function to fall back to, so
   * an exception still answers 500.
   */
  passThroughOnException() {}
}
