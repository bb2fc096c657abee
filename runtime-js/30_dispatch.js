// Islet edge layer, step 30: calling the handler for each request and handing its Response to Rust.
//
// Rust calls `dispatch` synchronously for every request routed to this isolate; everything after
// that is driven by the isolate's event loop. The response leaves through one of three ops: a body
// known in full (the fast path), a streamed body, or the error the handler threw.
import { core, primordials } from "ext:core/mod.js";
import {
  op_islet_respond,
  op_islet_respond_error,
  op_islet_respond_stream,
} from "ext:core/ops";
import { body, consoleModule, request, response, streams } from "ext:islet_runtime/00_web_globals.js";
import { runInRequest } from "ext:islet_runtime/01_request_context.js";
import { logUncaught } from "ext:islet_runtime/02_console.js";
import { ExecutionContext } from "ext:islet_runtime/10_context.js";
import { dispatchFetchEvent, hasFetchListeners } from "ext:islet_runtime/20_service_worker.js";

const {
  ErrorPrototype,
  FunctionPrototypeCall,
  JSONParse,
  ObjectFreeze,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeCatch,
  PromisePrototypeThen,
  TypeError,
} = primordials;
const { InnerBody } = body;
const { newInnerRequest, fromInnerRequest } = request;
const { ResponsePrototype, toInnerResponse, wireHeaderList } = response;
const {
  ReadableStreamPrototype,
  getReadableStreamResourceBacking,
  isReadableStreamDisturbed,
  isReadableStreamLocked,
  readableStreamForRid,
  resourceForReadableStream,
} = streams;

/** @type {null | ((request: Request, ctx: ExecutionContext) => unknown)} */
let handler = null;

/**
 * Binds the function's handler once its module has been evaluated.
 * @param {object} namespace the entry module's namespace
 * @param {string} envJson the function's `env`, as JSON
 * @returns {string | undefined} why the module cannot serve, if it cannot
 */
export function installHandler(namespace, envJson) {
  const env = ObjectFreeze(JSONParse(envJson));
  const exported = namespace.default;
  if (exported !== null && typeof exported === "object" && typeof exported.fetch === "function") {
    // `this` is the exported object, as on Workers, so handlers may call their own helpers.
    handler = (req, ctx) => FunctionPrototypeCall(exported.fetch, exported, req, env, ctx);
    return undefined;
  }
  if (hasFetchListeners()) {
    handler = dispatchFetchEvent;
    return undefined;
  }
  if (exported !== undefined) {
    return "the default export has no fetch(request, env, ctx) method";
  }
  return "the module exports no handler: write `export default { fetch(request, env, ctx) { ... } }` " +
    'or call addEventListener("fetch", (event) => event.respondWith(...))';
}

// The header list is built only if the handler reads it: many handlers never look at headers.
function lazyHeaderList(flat) {
  return () => {
    const list = [];
    for (let i = 0; i < flat.length; i += 2) {
      list[i >> 1] = [flat[i], flat[i + 1]];
    }
    return list;
  };
}

/**
 * Runs the handler for one request. Called from Rust; never throws.
 * @param {number} slot the op-side key of this request
 * @param {string} requestId the id in logs and error bodies
 * @param {string} method
 * @param {string} url the full original URL
 * @param {string[]} flatHeaders [name, value, name, value, ...]
 * @param {number} bodyRid the request body resource, or -1 for none
 */
export function dispatch(slot, requestId, method, url, flatHeaders, bodyRid) {
  runInRequest(requestId, () => {
    let result;
    try {
      const innerBody = bodyRid === -1 ? null : new InnerBody(readableStreamForRid(bodyRid));
      const inner = newInnerRequest(method, url, lazyHeaderList(flatHeaders), innerBody, false);
      result = handler(fromInnerRequest(inner, "immutable"), new ExecutionContext());
    } catch (error) {
      fail(slot, error);
      return;
    }
    if (result !== null && typeof result === "object" && typeof result.then === "function") {
      PromisePrototypeThen(
        result,
        (resolved) => respond(slot, resolved),
        (error) => fail(slot, error),
      );
    } else {
      respond(slot, result);
    }
  });
}

function describe(value) {
  if (value === null) return "null";
  if (typeof value === "object") return `an object (${consoleModule.inspect(value, { depth: 0 })})`;
  return typeof value;
}

function respond(slot, res) {
  try {
    if (!ObjectPrototypeIsPrototypeOf(ResponsePrototype, res)) {
      throw new TypeError(`the fetch handler must return a Response, but it returned ${describe(res)}`);
    }
    const inner = toInnerResponse(res);
    if (inner.type === "error") {
      throw new TypeError("the fetch handler returned Response.error()");
    }
    const headerList = wireHeaderList(inner);
    const innerBody = inner.body;
    if (innerBody === null) {
      op_islet_respond(slot, inner.status, headerList, null);
      return;
    }
    const source = innerBody.streamOrStatic;
    if (!ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, source)) {
      // A body known in full: one op, no stream machinery.
      source.consumed = true;
      const bytes = typeof source.body === "string" ? core.encode(source.body) : source.body;
      op_islet_respond(slot, inner.status, headerList, bytes);
      return;
    }
    // A stream. If it is an untouched resource (a request body or a fetch() response passed
    // straight through), Rust pumps the resource itself and no chunk crosses into JS.
    const backing = getReadableStreamResourceBacking(source);
    const rid = backing != null && !isReadableStreamLocked(source) &&
        !isReadableStreamDisturbed(source)
      ? backing.rid
      : resourceForReadableStream(source, innerBody.length);
    PromisePrototypeCatch(
      op_islet_respond_stream(slot, inner.status, headerList, rid),
      (error) => logUncaught(error, "while streaming the response body"),
    );
  } catch (error) {
    fail(slot, error);
  }
}

function fail(slot, error) {
  let message;
  let stack = null;
  if (ObjectPrototypeIsPrototypeOf(ErrorPrototype, error)) {
    message = `${error.name}: ${error.message}`;
    stack = typeof error.stack === "string" ? error.stack : null;
  } else {
    message = `Uncaught ${consoleModule.inspect(error)}`;
  }
  try {
    op_islet_respond_error(slot, message, stack);
  } catch (opError) {
    // Already answered (e.g. a streamed body failed mid-way): the log is all that is left.
    logUncaught(error, "after the response was sent");
  }
}
