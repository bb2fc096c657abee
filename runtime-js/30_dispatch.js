// Islet edge layer, step 30: calling the handler for each request and handing its Response to Rust.
//
// Rust calls `dispatch` synchronously for every request routed to this isolate; everything after
// that is driven by the isolate's event loop. The response leaves through one op of three kinds: a
// body known in full (`respondFast` for the simplest responses, else text or bytes with a header
// list), a streamed body, or the error the handler threw.
//
// The functions a cold start runs before and around a handler's first call (`installHandler`,
// `dispatch`, `callHandler`, `callFetch`, `respond`, `respondFast`; `callQueue` and `callScheduled`
// for events) are parenthesized function expressions: V8 compiles those when it compiles the
// module, while the snapshot is made, so every isolate restored from it has them compiled.
// Declared as plain functions, each would be parsed and compiled again in every isolate on its
// first call, a cold start's critical path. (`warmUp` cannot run them: they call ops, which need a
// request.)
import { core, primordials } from "ext:core/mod.js";
import {
  op_islet_respond,
  op_islet_respond_error,
  op_islet_respond_stream,
  op_islet_respond_text,
} from "ext:core/ops";
import { ops } from "ext:islet_runtime/00_ops.js";
import { body, consoleModule, request, response, streams } from "ext:islet_runtime/00_web_globals.js";
import { enterRequest, leaveRequest, runInRequest } from "ext:islet_runtime/01_request_context.js";
import { logUncaught } from "ext:islet_runtime/02_console.js";
import { eventOutcome, makeEnv, QueueBatch, ScheduledController } from "ext:islet_runtime/07_bindings.js";
import { ExecutionContext } from "ext:islet_runtime/10_context.js";
import { dispatchFetchEvent, hasFetchListeners } from "ext:islet_runtime/20_service_worker.js";

const {
  ArrayPrototypePush,
  ErrorPrototype,
  FunctionPrototypeCall,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeCatch,
  PromisePrototypeThen,
  PromiseResolve,
  StringPrototypeSlice,
  StringPrototypeSplit,
  TypeError,
} = primordials;
const { InnerBody } = body;
const { fromInnerRequest } = request;
const {
  ResponsePrototype,
  SERVE_FAST_HEADER_DEFAULT_TEXT,
  SERVE_FAST_HEADER_NONE,
  serveFastBodyKey,
  serveFastConsumedKey,
  serveFastContentTypeKey,
  serveFastHeaderKindKey,
  serveFastStatusKey,
  toInnerResponse,
  wireHeaderList,
} = response;
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
/** The event handlers: `queue(batch, env, ctx)` and `scheduled(controller, env, ctx)`. */
let queueHandler = null;
let scheduledHandler = null;

// The default export, its methods and the function's env, once installed (an isolate runs one
// function). The handlers above call them through the functions below, not through closures made
// at install, which V8 would compile on every cold start's first call.
let exported = null;
let env = null;
let fetchMethod = null;
let queueMethod = null;
let scheduledMethod = null;

// `this` is the exported object, as on Workers, so handlers may call their own helpers.
const callFetch = (function callFetch(req, ctx) {
  return FunctionPrototypeCall(fetchMethod, exported, req, env, ctx);
});
const callQueue = (function callQueue(batch, ctx) {
  return FunctionPrototypeCall(queueMethod, exported, batch, env, ctx);
});
const callScheduled = (function callScheduled(controller, ctx) {
  return FunctionPrototypeCall(scheduledMethod, exported, controller, env, ctx);
});

function noFetchHandler() {
  throw new TypeError("the function has no fetch(request, env, ctx) handler: it runs on events only");
}

/**
 * Binds the function's handlers once its module has been evaluated.
 * @param {object} namespace the entry module's namespace
 * @param {string} envJson the function's variables, as JSON
 * @param {string} bindingsJson its bindings, `{ NAME: { type } }`
 * @returns {string | undefined} why the module cannot serve, if it cannot
 */
export const installHandler = (function installHandler(namespace, envJson, bindingsJson) {
  env = makeEnv(envJson, bindingsJson);
  exported = namespace.default;
  if (exported !== null && typeof exported === "object") {
    const { fetch, queue, scheduled } = exported;
    if (typeof queue === "function") {
      queueMethod = queue;
      queueHandler = callQueue;
    }
    if (typeof scheduled === "function") {
      scheduledMethod = scheduled;
      scheduledHandler = callScheduled;
    }
    if (typeof fetch === "function") {
      fetchMethod = fetch;
      handler = callFetch;
      return undefined;
    }
  }
  if (hasFetchListeners()) {
    handler = dispatchFetchEvent;
    return undefined;
  }
  if (queueHandler !== null || scheduledHandler !== null) {
    handler = noFetchHandler;
    return undefined;
  }
  if (exported !== undefined) {
    return "the default export has no fetch(request, env, ctx), queue(batch, env, ctx) or scheduled(controller, env, ctx) method";
  }
  return "the module exports no handler: write `export default { fetch(request, env, ctx) { ... } }` " +
    'or call addEventListener("fetch", (event) => event.respondWith(...))';
});

// The standard methods, in the order of `METHODS` in src/isolate/request.rs: Rust names one by its
// index, and every request with that method shares this one string.
const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"];

/**
 * The header list packed in `head` after its URL: "\n" name "\n" value, for each header. Built
 * only if the handler reads the headers: many handlers never look at them.
 */
function headerPairs(head, urlEnd) {
  const list = [];
  if (urlEnd === head.length) {
    return list;
  }
  const flat = StringPrototypeSplit(StringPrototypeSlice(head, urlEnd + 1), "\n");
  for (let i = 0; i + 1 < flat.length; i += 2) {
    ArrayPrototypePush(list, [flat[i], flat[i + 1]]);
  }
  return list;
}

/**
 * The inner request of an incoming request: the same members as deno_fetch's `newInnerRequest`
 * builds, but as a class, so every request object has one shape and its accessors live on the
 * prototype. (An object literal with getters makes V8 define the accessors afresh on each
 * request, which cost ~5% of a warm request.) The URL and the header list are cut from the packed
 * head only when first read.
 */
class IncomingInnerRequest {
  constructor(method, head, urlEnd, body) {
    this.methodInner = method;
    this.head = head;
    this.urlEnd = urlEnd;
    this.urlInner = null;
    this.headerListInner = null;
    this.urlListInner = null;
    this.urlListProcessedInner = null;
    this.body = body;
    this.redirectMode = "follow";
    this.redirectCount = 0;
    this.clientRid = null;
    this.blobUrlEntry = null;
  }

  get method() {
    return this.methodInner;
  }

  set method(value) {
    this.methodInner = value;
  }

  get headerList() {
    if (this.headerListInner === null) {
      this.headerListInner = headerPairs(this.head, this.urlEnd);
    }
    return this.headerListInner;
  }

  set headerList(value) {
    this.headerListInner = value;
  }

  get urlList() {
    if (this.urlListInner === null) {
      const url = this.url();
      this.urlListInner = [() => url];
    }
    return this.urlListInner;
  }

  set urlList(value) {
    this.urlListInner = value;
  }

  get urlListProcessed() {
    if (this.urlListProcessedInner === null) {
      this.urlListProcessedInner = [this.url()];
    }
    return this.urlListProcessedInner;
  }

  set urlListProcessed(value) {
    this.urlListProcessedInner = value;
  }

  url() {
    if (this.urlInner === null) {
      this.urlInner = StringPrototypeSlice(this.head, 0, this.urlEnd);
    }
    return this.urlInner;
  }

  currentUrl() {
    if (this.urlListInner === null) {
      return this.url();
    }
    const urlList = this.urlList;
    const urlListProcessed = this.urlListProcessed;
    const last = urlList.length - 1;
    if (urlListProcessed[last] === undefined) {
      urlListProcessed[last] = urlList[last]();
    }
    return urlListProcessed[last];
  }
}

/**
 * Runs the handler for one request. Called from Rust; never throws.
 * @param {number} slot the op-side key of this request
 * @param {string} requestId the id in logs and error bodies
 * @param {number | string} method an index into METHODS, or the method itself if not standard
 * @param {string} head the URL, then "\n" name "\n" value for each header
 * @param {number} urlEnd where the URL ends in `head`
 * @param {number} bodyRid the request body resource, or -1 for none
 */
export const dispatch = (function dispatch(slot, requestId, method, head, urlEnd, bodyRid) {
  const previous = enterRequest(requestId);
  try {
    if (method === EVENT_QUEUE || method === EVENT_SCHEDULED) {
      callEventHandler(slot, method, head);
    } else {
      callHandler(slot, method, head, urlEnd, bodyRid);
    }
  } finally {
    leaveRequest(previous);
  }
});

// Event invocations: Rust passes one of these in place of a method (never an HTTP method, which is
// an index of METHODS or a string), and the event's JSON in place of the head.
const EVENT_QUEUE = -1;
const EVENT_SCHEDULED = -2;

/**
 * Runs the queue or scheduled handler for one event and answers with what became of it: a JSON
 * outcome (which messages to ack or retry, or whether to retry the tick) that Rust reads back.
 */
function callEventHandler(slot, method, json) {
  let event;
  try {
    event = method === EVENT_QUEUE ? new QueueBatch(json, slot) : new ScheduledController(json);
  } catch (error) {
    fail(slot, error);
    return;
  }
  const settle = (error) => {
    try {
      op_islet_respond_text(slot, 200, [], eventOutcome(method === EVENT_QUEUE, event, error));
    } catch (opError) {
      logUncaught(opError, "while answering an event");
    }
  };
  const failed = (error) => {
    let message = "the handler threw";
    try {
      logUncaught(error, method === EVENT_QUEUE ? "in the queue handler" : "in the scheduled handler");
      if (ObjectPrototypeIsPrototypeOf(ErrorPrototype, error)) {
        // Getters of the tenant's: read once, and a throwing one must not leave the event unanswered.
        message = `${error.name}: ${error.message}`;
      }
    } catch {
      // The description failed; the plain message stands.
    }
    settle(message);
  };
  try {
    const run = method === EVENT_QUEUE ? queueHandler : scheduledHandler;
    if (run === null) {
      throw new TypeError(
        method === EVENT_QUEUE
          ? "the function has no queue(batch, env, ctx) handler"
          : "the function has no scheduled(controller, env, ctx) handler",
      );
    }
    PromisePrototypeThen(PromiseResolve(run(event, new ExecutionContext(slot))), () => settle(null), failed);
  } catch (error) {
    failed(error);
  }
}

/** `dispatch` inside the request's async context: calls the handler and answers with its result. */
const callHandler = (function callHandler(slot, method, head, urlEnd, bodyRid) {
  try {
    const innerBody = bodyRid === -1 ? null : new InnerBody(readableStreamForRid(bodyRid));
    const name = typeof method === "number" ? METHODS[method] : method;
    const inner = new IncomingInnerRequest(name, head, urlEnd, innerBody);
    const result = handler(fromInnerRequest(inner, "immutable"), new ExecutionContext(slot));
    if (ObjectPrototypeIsPrototypeOf(ResponsePrototype, result)) {
      respond(slot, result);
      return;
    }
    // Anything else is awaited as `await` would await it: a promise, a thenable (whose `then`,
    // tenant code, runs in a microtask and may throw), or a plain value that respond() refuses.
    PromisePrototypeThen(
      PromiseResolve(result),
      (resolved) => respond(slot, resolved),
      (error) => fail(slot, error),
    );
  } catch (error) {
    // The handler threw, or reading its result's `constructor` (a getter) did.
    fail(slot, error);
  }
});

function describe(value) {
  if (value === null) return "null";
  if (typeof value === "object") return `an object (${consoleModule.inspect(value, { depth: 0 })})`;
  return typeof value;
}

/**
 * What a Response amounts to on the wire: status, headers, and either the whole body (bytes or
 * text, or null for none) or the stream to pump.
 * @param {unknown} res what the handler returned
 */
function wireResponse(res) {
  if (!ObjectPrototypeIsPrototypeOf(ResponsePrototype, res)) {
    throw new TypeError(`the fetch handler must return a Response, but it returned ${describe(res)}`);
  }
  const inner = toInnerResponse(res);
  if (inner.type === "error") {
    throw new TypeError("the fetch handler returned Response.error()");
  }
  const wire = { status: inner.status, headerList: wireHeaderList(inner), bytes: null, stream: null, length: null };
  const innerBody = inner.body;
  if (innerBody === null) {
    return wire;
  }
  const source = innerBody.streamOrStatic;
  if (!ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, source)) {
    // A body known in full: one op, no stream machinery.
    source.consumed = true;
    // Text goes to Rust as a string: no Uint8Array to allocate (and collect) per response.
    wire.bytes = source.body;
  } else {
    wire.stream = source;
    wire.length = innerBody.length;
  }
  return wire;
}

/**
 * The fast path for the most common response: status 200, a text or byte body known in full, and
 * no header but content-type. deno_fetch's Response records such a response in its "serve fast"
 * fields as it is constructed (and drops them if the handler then touches its headers), so it can
 * be answered without materialising the inner response or decoding a header list.
 * @returns {boolean} whether the response was sent
 */
const respondFast = (function respondFast(slot, res) {
  const status = res[serveFastStatusKey];
  if (status === 0 || res[serveFastConsumedKey]) {
    return false;
  }
  const kind = res[serveFastHeaderKindKey];
  const contentType = kind === SERVE_FAST_HEADER_NONE
    ? ""
    : kind === SERVE_FAST_HEADER_DEFAULT_TEXT
    ? "text/plain;charset=UTF-8"
    : res[serveFastContentTypeKey];
  const body = res[serveFastBodyKey];
  // Not marked as consumed: a Response kept in a global and returned for every request keeps
  // working, as it does on the normal path.
  if (typeof body === "string") {
    ops.op_islet_respond_fast_text(slot, status, contentType, body);
  } else {
    ops.op_islet_respond_fast_bytes(slot, status, contentType, body);
  }
  return true;
});

const respond = (function respond(slot, res) {
  try {
    if (ObjectPrototypeIsPrototypeOf(ResponsePrototype, res) && respondFast(slot, res)) {
      return;
    }
    const { status, headerList, bytes, stream, length } = wireResponse(res);
    if (stream === null) {
      if (typeof bytes === "string") {
        op_islet_respond_text(slot, status, headerList, bytes);
      } else {
        op_islet_respond(slot, status, headerList, bytes);
      }
      return;
    }
    // If the stream is an untouched resource (a request body or a fetch() response passed straight
    // through), Rust pumps the resource itself and no chunk crosses into JS.
    const backing = getReadableStreamResourceBacking(stream);
    const rid = backing != null && !isReadableStreamLocked(stream) && !isReadableStreamDisturbed(stream)
      ? backing.rid
      : resourceForReadableStream(stream, length);
    PromisePrototypeCatch(
      op_islet_respond_stream(slot, status, headerList, rid),
      (error) => logUncaught(error, "while streaming the response body"),
    );
  } catch (error) {
    fail(slot, error);
  }
});

/**
 * Runs the request and response path of a typical handler once, without any op. The pool calls it
 * on each blank isolate it prepares ahead of need, so V8 compiles these functions then, and not on
 * a cold start's first request. Leaves nothing behind but garbage and compiled code.
 */
export function warmUp() {
  const url = "http://warm.localhost/up?x=1";
  const inner = new IncomingInnerRequest("POST", `${url}\ncontent-type\napplication/json\nx-warm\nup`, url.length, null);
  const request = fromInnerRequest(inner, "immutable");
  new URL(request.url).searchParams.get("x");
  request.headers.get("content-type");
  runInRequest("warm-up", () => new ExecutionContext(0));
  wireResponse(new Response("Hello from Islet!\n"));
  wireResponse(Response.json({ warm: true }, { status: 201 }));
  wireResponse(new Response(new Uint8Array(8), { headers: { "content-type": "application/octet-stream" } }));
  wireResponse(new Response(null, { status: 204 }));
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
