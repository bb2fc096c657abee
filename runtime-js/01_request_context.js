// Islet edge layer, step 1: which request is running.
//
// An AsyncVariable (V8's continuation-preserved embedder data) carries the current request's id
// across awaits, timers and microtasks, so a console.log deep inside a handler's promise chain is
// still attributed to the request that caused it, even with many requests interleaved in one isolate.
import { core } from "ext:core/mod.js";

const requestIdVariable = new core.AsyncVariable();

/** The id of the request whose code is running, or "" outside any request (module top level). */
export function currentRequestId() {
  return requestIdVariable.get() ?? "";
}

/**
 * Runs `fn` as part of request `requestId`; everything it schedules inherits the id.
 * @template T
 * @param {string} requestId
 * @param {() => T} fn
 * @returns {T}
 */
export function runInRequest(requestId, fn) {
  const previous = requestIdVariable.enter(requestId);
  try {
    return fn();
  } finally {
    core.setAsyncContext(previous);
  }
}
