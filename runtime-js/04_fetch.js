// Islet edge layer, step 4: outbound fetch() under the function's limits.
//
// deno_fetch does the fetching, and the isolate's net permissions (built by src/limits/outbound.rs)
// refuse private addresses on every hop, after DNS resolution. This wrapper counts each call
// against the running request (op_islet_fetch_begin refuses one past the function's limit, or
// outside any request), aborts it when the invocation's time runs out (its wall-clock deadline, or
// for `waitUntil` work that long after the response), so no socket outlives the work that opened
// it, and rewords deno_permissions' refusal, which is written for Deno's command line, in terms a
// handler's author can act on.
import { primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";
import { abortSignal, fetchModule, request as requestModule } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";

const {
  ErrorPrototype,
  ObjectDefineProperty,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeCatch,
  SafePromisePrototypeFinally,
  PromiseReject,
  RegExpPrototypeExec,
  TypeError,
} = primordials;

const denoFetch = fetchModule.fetch;
const { Request } = requestModule;
const { AbortSignal } = abortSignal;
const AbortSignalAny = AbortSignal.any;
const AbortSignalTimeout = AbortSignal.timeout;
// `Requires net access to "127.0.0.1:8080", run again with the --allow-net flag`
const NET_REFUSAL = /Requires net access to "?([^",]+)"?/;

/** The refused address, if `error` or one of its causes is deno_permissions' refusal. */
function refusedAddress(error) {
  // deno_fetch reports "fetch failed" with the connector's error as its cause.
  for (let depth = 0; depth < 4 && ObjectPrototypeIsPrototypeOf(ErrorPrototype, error); depth++) {
    const refusal = RegExpPrototypeExec(NET_REFUSAL, String(error.message));
    if (refusal !== null) {
      return refusal[1];
    }
    error = error.cause;
  }
  return null;
}

function explainRefusal(error) {
  const address = refusedAddress(error);
  if (address === null) {
    throw error;
  }
  throw new TypeError(
    `fetch() refused: ${address} is a loopback, private, link-local or otherwise internal address, ` +
      "which handlers may not reach (the node's operator can allow it)",
  );
}

/**
 * https://fetch.spec.whatwg.org/#fetch-method, counted against the running request.
 * @param {RequestInfo} input
 * @param {RequestInit} [init]
 */
function fetch(input, init = undefined) {
  let left;
  try {
    left = ops.op_islet_fetch_begin(currentRequestId());
  } catch (error) {
    return PromiseReject(new TypeError(error.message));
  }
  let fetched;
  try {
    const request = new Request(input, init);
    // https://fetch.spec.whatwg.org/#dom-global-fetch step 2 makes this same Request again; the
    // signal given here follows the caller's and the invocation's time, whichever ends first.
    const signal = AbortSignalAny([request.signal, AbortSignalTimeout(left)]);
    fetched = denoFetch(request, { signal });
  } catch (error) {
    ops.op_islet_fetch_end();
    return PromiseReject(error);
  }
  return PromisePrototypeCatch(
    SafePromisePrototypeFinally(fetched, () => ops.op_islet_fetch_end()),
    explainRefusal,
  );
}

ObjectDefineProperty(globalThis, "fetch", {
  value: fetch,
  writable: true,
  enumerable: true,
  configurable: true,
});
