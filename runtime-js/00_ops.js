// Islet edge layer, step 0: the ops our layer calls, reached through V8's fast calls.
//
// deno_core bakes every op into the snapshot as a plain function: V8 cannot serialize a function
// with a fast-call overload. A module that imports an op from "ext:core/ops" therefore keeps
// calling its slow path (argument checks, handle scopes, a return value slot) for good. When an
// isolate is restored, deno_core binds every op afresh with its fast overload on `core.ops`;
// `useFastOps`, which `__isletBoot` calls, takes those. Ops whose signature V8 cannot call fast
// (serde arguments, returned strings) are imported where they are used.
import { core, primordials } from "ext:core/mod.js";

const { TypeError } = primordials;

const NAMES = [
  "op_islet_charge",
  "op_islet_fetch_begin",
  "op_islet_fetch_end",
  "op_islet_log",
  "op_islet_reserve_memory",
  "op_islet_respond_fast_bytes",
  "op_islet_respond_fast_text",
  "op_islet_wait_until",
];

/** Read at each call (`ops.op_islet_log(...)`), never destructured: `useFastOps` replaces them. */
export const ops = { __proto__: null };

/**
 * Takes this isolate's functions from `core.ops`: with their fast calls once it is restored. A
 * name with no op fails the snapshot build (or the boot), not some later request.
 */
export function useFastOps() {
  for (let i = 0; i < NAMES.length; i++) {
    const op = core.ops[NAMES[i]];
    if (typeof op !== "function") {
      throw new TypeError(`00_ops.js names ${NAMES[i]}, which is no op`);
    }
    ops[NAMES[i]] = op;
  }
}

// While the snapshot is made: the snapshot's (slow) functions, so no call ever finds an op missing.
useFastOps();
