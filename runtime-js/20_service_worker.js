// Islet edge layer, step 20: the service-worker handler form,
// `addEventListener("fetch", (event) => event.respondWith(...))`.
import { core, primordials } from "ext:core/mod.js";
import { DOMException } from "ext:islet_runtime/00_web_globals.js";

const {
  ArrayPrototypePush,
  ArrayPrototypeSplice,
  FunctionPrototypeCall,
  ObjectDefineProperties,
  TypeError,
} = primordials;

const fetchListeners = [];

// Only "fetch" listeners mean anything to an edge function; other event types are accepted and never
// fired, as on Workers for events the platform does not send.
function addEventListener(type, listener) {
  if (type === "fetch" && typeof listener === "function") {
    ArrayPrototypePush(fetchListeners, listener);
  }
}

function removeEventListener(type, listener) {
  if (type !== "fetch") return;
  for (let i = 0; i < fetchListeners.length; i++) {
    if (fetchListeners[i] === listener) {
      ArrayPrototypeSplice(fetchListeners, i, 1);
      return;
    }
  }
}

ObjectDefineProperties(globalThis, {
  addEventListener: core.propWritable(addEventListener),
  removeEventListener: core.propWritable(removeEventListener),
});

/** Whether the module registered any fetch listener while it was evaluated. */
export function hasFetchListeners() {
  return fetchListeners.length > 0;
}

class FetchEvent {
  #request;
  #ctx;
  /** @type {Response | Promise<Response> | undefined} */
  response = undefined;
  responded = false;

  constructor(request, ctx) {
    this.#request = request;
    this.#ctx = ctx;
  }

  get type() {
    return "fetch";
  }

  get request() {
    return this.#request;
  }

  respondWith(response) {
    if (this.responded) {
      throw new DOMException("respondWith() was already called", "InvalidStateError");
    }
    this.responded = true;
    this.response = response;
  }

  waitUntil(promise) {
    this.#ctx.waitUntil(promise);
  }

  passThroughOnException() {}
}

/**
 * Runs the fetch listeners for one request and returns what the first `respondWith` was given.
 * @param {Request} request
 * @param {import("./10_context.js").ExecutionContext} ctx
 */
export function dispatchFetchEvent(request, ctx) {
  const event = new FetchEvent(request, ctx);
  for (let i = 0; i < fetchListeners.length && !event.responded; i++) {
    FunctionPrototypeCall(fetchListeners[i], globalThis, event);
  }
  if (!event.responded) {
    throw new TypeError("no fetch listener called event.respondWith()");
  }
  return event.response;
}
