// Islet edge layer, step 2: console.
//
// Deno's Console formats the arguments; op_islet_log turns each call into a structured log line
// carrying the function name and the request id.
import { core, primordials } from "ext:core/mod.js";
import { ops } from "ext:islet_runtime/00_ops.js";
import { consoleModule, event } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";

const { ObjectDefineProperty, ErrorPrototype, ObjectPrototypeIsPrototypeOf } = primordials;

// Log lines are data, not a terminal: never ANSI colours.
consoleModule.setNoColorFns(() => true, () => true);

// Console levels: 0 debug, 1 log/info, 2 warn, 3 error (the op's numbering).
const console = new consoleModule.Console((message, level) => {
  ops.op_islet_log(level, message, currentRequestId());
});

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
  ops.op_islet_log(3, `Uncaught (${where}) ${text}`, currentRequestId());
}

core.setReportExceptionCallback((error) => logUncaught(error, "in microtask"));
core.setUnhandledPromiseRejectionHandler((_promise, reason) => {
  logUncaught(reason, "in promise");
  return true;
});

// An exception thrown by an event listener (an AbortSignal's "abort" listener, say) is reported
// and dispatch goes on to the next listener (DOM's "inner invoke", step 10; HTML's "report an
// exception"). deno_web reports it by firing an ErrorEvent at the global it was given and, unless
// that is cancelled, handing the error to deno_core as fatal, as Deno does (its process exits).
// Islet gave it no global, so the report itself threw and the isolate was lost with every request
// in it. The global it gets now logs the error against its request, like a throwing timer
// callback, and cancels the event.
{
  const reporter = new event.EventTarget();
  ObjectDefineProperty(reporter, "dispatchEvent", {
    __proto__: null,
    value: function dispatchEvent(errorEvent) {
      try {
        logUncaught(errorEvent.error, "in event listener");
      } catch {
        // An error whose getters throw: there is nothing more to say about it.
      }
      return false;
    },
  });
  event.saveGlobalThisReference(reporter);
}
