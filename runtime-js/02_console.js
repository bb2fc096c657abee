// Islet edge layer, step 2: console.
//
// Deno's Console formats the arguments; op_islet_log turns each call into a structured log line
// carrying the function name and the request id.
import { core, primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";
import { consoleModule, event } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";

const { ObjectDefineProperty, ErrorPrototype, ObjectPrototypeIsPrototypeOf, StringPrototypeSlice } = primordials;

/**
 * The most characters of one message handed to the log: the log ring keeps 8 KiB of it, and the
 * node's own log line no more than this. Cutting here, before the op, keeps a huge message from
 * being copied out of V8, escaped and written whole (uninterruptibly, inside the op).
 */
const MAX_LOGGED = 16 * 1024;

/**
 * @param {number} level
 * @param {string} message
 */
function log(level, message) {
  if (message.length > MAX_LOGGED) {
    message = `${StringPrototypeSlice(message, 0, MAX_LOGGED)}\u2026 (${message.length - MAX_LOGGED} characters cut)`;
  }
  ops.op_islet_log(level, message, currentRequestId());
}

// Log lines are data, not a terminal: never ANSI colours.
consoleModule.setNoColorFns(() => true, () => true);

// Console levels: 0 debug, 1 log/info, 2 warn, 3 error (the op's numbering).
const console = new consoleModule.Console((message, level) => log(level, message));

ObjectDefineProperty(globalThis, "console", core.propNonEnumerable(console));

/**
 * Logs an error nobody caught (a throwing timer callback, an unhandled rejection, a failed
 * waitUntil) instead of letting it take the isolate down: other requests in it are unaffected.
 * @param {unknown} error
 * @param {string} where
 */
export function logUncaught(error, where) {
  const text = ObjectPrototypeIsPrototypeOf(ErrorPrototype, error) && error.stack
    ? error.stack
    : consoleModule.inspect(error);
  log(3, `Uncaught (${where}) ${text}`);
}

core.setReportExceptionCallback((error) => logUncaught(error, "in microtask"));
core.setUnhandledPromiseRejectionHandler((_promise, reason) => {
  logUncaught(reason, "in promise");
  return true;
});

// An exception thrown by an event listener (an AbortSignal's "abort" listener, say) is reported
// and dispatch goes on to the next listener (DOM's "inner invoke", step 10; HTML's "report an
// exception"). deno_web reports it by firing an ErrorEvent at the global it was given and, unless
// that is cancelled, handing the error to `core.reportUnhandledException`, which ends the event
// loop, as Deno does (its process exits). Islet gave it no global, so the report itself threw and
// the isolate was lost with every request in it. Now the "global" is a bare object (not an
// EventTarget: `EventTarget.prototype.addEventListener.call(undefined)` still throws) that logs the
// error against its request and cancels the event. deno_web still ends the loop for a report made
// inside a report (a listener throwing while the error's own `stack` getter runs, or at the edge of
// the stack); `core` is frozen, so that stays a way for a function to end its own isolate, and
// only its own.
{
  function report(error) {
    try {
      logUncaught(error, "in event listener");
    } catch {
      // An error that cannot even be described (a revoked Proxy, a throwing inspect hook).
      ops.op_islet_log(3, "Uncaught (in event listener) [a value that could not be described]", currentRequestId());
    }
  }
  event.saveGlobalThisReference({
    __proto__: null,
    dispatchEvent(errorEvent) {
      report(errorEvent.error);
      return false;
    },
  });
}
