// Islet edge layer, step 1: which request is running.
//
// V8's continuation-preserved embedder data (deno_core's "async context") carries the current
// request's id across awaits, timers and microtasks, so a console.log deep inside a handler's promise
// chain is still attributed to the request that caused it, even with many requests interleaved in one
// isolate. The value is the id string itself: nothing else in an Islet isolate uses async context
// (deno's AsyncVariable would cost a mapping object and a WeakMap entry per request).
import { core } from "ext:core/mod.js";

const { getAsyncContext, setAsyncContext } = core;

/** The id of the request whose code is running, or "" outside any request (module top level). */
export function currentRequestId() {
  const context = getAsyncContext();
  return typeof context === "string" ? context : "";
}

/**
 * Makes `requestId` the running request, for everything scheduled until `leaveRequest`; returns
 * what was running before, for `leaveRequest`. The pair lets the hot path avoid a closure per
 * request; `runInRequest` is the convenient form.
 * @param {string} requestId
 * @returns {unknown}
 */
export function enterRequest(requestId) {
  const previous = getAsyncContext();
  setAsyncContext(requestId);
  return previous;
}

/** Restores what `enterRequest` returned. */
export function leaveRequest(previous) {
  setAsyncContext(previous);
}

/**
 * Runs `fn` as part of request `requestId`; everything it schedules inherits the id.
 * @template T
 * @param {string} requestId
 * @param {() => T} fn
 * @returns {T}
 */
export function runInRequest(requestId, fn) {
  const previous = enterRequest(requestId);
  try {
    return fn();
  } finally {
    leaveRequest(previous);
  }
}
