// Islet edge layer, step 3: timers.
//
// Deno's timers, with each callback guarded: an exception thrown by a timer is logged against its
// request (02_console.js) rather than escaping into the event loop, where it would stop the isolate.
import { core, primordials } from "ext:core/mod.js";
import { timers, webidl } from "ext:islet_runtime/00_web_globals.js";
import { logUncaught } from "ext:islet_runtime/02_console.js";

const { ObjectDefineProperties, ReflectApply } = primordials;
// Called unbound: Deno's timers refuse a `this` other than globalThis or undefined.
const { clearInterval, clearTimeout, setInterval: webSetInterval, setTimeout: webSetTimeout } = timers;

function guard(callback, where) {
  if (typeof callback !== "function") {
    return callback; // a string: Deno's timers decide what to do with it
  }
  return function guardedTimerCallback(...args) {
    try {
      ReflectApply(callback, globalThis, args);
    } catch (error) {
      logUncaught(error, where);
    }
  };
}

// The handler is a required argument (WebIDL): with none, Deno's timers would schedule the
// string "undefined" as code.
function setTimeout(callback, delay = 0, ...args) {
  webidl.requiredArguments(arguments.length, 1, "Failed to execute 'setTimeout'");
  return webSetTimeout(guard(callback, "in setTimeout callback"), delay, ...args);
}

function setInterval(callback, delay = 0, ...args) {
  webidl.requiredArguments(arguments.length, 1, "Failed to execute 'setInterval'");
  return webSetInterval(guard(callback, "in setInterval callback"), delay, ...args);
}

ObjectDefineProperties(globalThis, {
  setTimeout: core.propWritable(setTimeout),
  setInterval: core.propWritable(setInterval),
  clearTimeout: core.propWritable(clearTimeout),
  clearInterval: core.propWritable(clearInterval),
});
