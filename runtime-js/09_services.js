// Islet edge layer, step 9: service bindings (`env.THUMBS.fetch(request)`), in the shape of
// Cloudflare's: another function of the node answers, in its own isolate and under its own limits,
// as if it had been sent the request over HTTP, with no network in between.
//
// The request body crosses as a resource (an untouched request body is handed over whole, any
// other stream is pumped by Rust), and the response body comes back as one, read on demand.
import { core, primordials } from "ext:core/mod.js";
import { op_islet_service_fetch } from "ext:core/ops";
import { request as requestModule, response as responseModule, streams } from "ext:islet_runtime/00_web_globals.js";
import { currentRequestId } from "ext:islet_runtime/01_request_context.js";

const {
  ArrayPrototypeIncludes,
  ObjectFreeze,
  ObjectGetOwnPropertyDescriptor,
  ObjectPrototypeIsPrototypeOf,
  FunctionPrototypeCall,
  RangeError,
  TypeError,
} = primordials;

const { Request, RequestPrototype, toInnerRequest } = requestModule;
const { Response } = responseModule;
const {
  getReadableStreamResourceBacking,
  isReadableStreamDisturbed,
  isReadableStreamLocked,
  readableStreamForRid,
  resourceForReadableStream,
} = streams;

// The body getter as it was at boot: a tenant may replace the one on Request.prototype.
const requestBody = ObjectGetOwnPropertyDescriptor(RequestPrototype, "body").get;
const NULL_BODY_STATUSES = [204, 205, 304];
// Kept in step with MAX_HEADERS in src/isolate/ext/ops.rs.
const MAX_HEADERS = 1000;

/** A service binding: `env.AUTH`. */
class Fetcher {
  #binding;

  constructor(binding) {
    this.#binding = binding;
  }

  /**
   * Calls the bound function's `fetch` handler; resolves to its response (its error response when
   * it fails or hits a limit), or rejects when it cannot be called or does not answer within this
   * request's wall clock.
   * @param {RequestInfo} input
   * @param {RequestInit} [init]
   */
  async fetch(input, init = undefined) {
    // A Request passed on as it is keeps its own body stream (a new Request would pipe it through
    // a TransformStream in JavaScript): an untouched request body then reaches the callee whole.
    const request = init === undefined && ObjectPrototypeIsPrototypeOf(RequestPrototype, input)
      ? input
      : new Request(input, init);
    const inner = toInnerRequest(request);
    const headerList = inner.headerList;
    if (headerList.length > MAX_HEADERS) {
      throw new RangeError(`a service call carries at most ${MAX_HEADERS} headers`);
    }
    const body = FunctionPrototypeCall(requestBody, request);
    let rid = -1;
    if (body !== null) {
      if (isReadableStreamLocked(body) || isReadableStreamDisturbed(body)) {
        throw new TypeError("the request body has already been read");
      }
      // An untouched request body: Rust hands it over without its bytes entering JavaScript.
      const backing = getReadableStreamResourceBacking(body);
      rid = backing != null ? backing.rid : resourceForReadableStream(body);
    }
    const answer = await op_islet_service_fetch(
      this.#binding,
      currentRequestId(),
      inner.method,
      inner.url(),
      headerList,
      rid,
    );
    const status = answer[0];
    let responseRid = answer[2];
    if (responseRid >= 0 && ArrayPrototypeIncludes(NULL_BODY_STATUSES, status)) {
      core.tryClose(responseRid);
      responseRid = -1;
    }
    // A small body known whole came with the answer; a larger or streamed one is read on demand.
    let responseBody = responseRid >= 0 ? readableStreamForRid(responseRid) : answer[3];
    if (ArrayPrototypeIncludes(NULL_BODY_STATUSES, status)) responseBody = null;
    return new Response(responseBody, { status, headers: answer[1] });
  }
}

/** The binding object for a service. */
export function serviceBinding(name) {
  return ObjectFreeze(new Fetcher(name));
}
