// The Request a handler is given (Fetch's Request, as a server hands it over): its URL, method,
// headers, body and signal. Each case gets the incoming request of `GET /<prefix>/request?q=1`
// sent with a `x-case: A` header (what tools/conformance.sh and tests/web/conformance.rs send).
import { area, eq, ok, throws } from "./harness.js";

export default area("request", (test) => {
  test("it is a Request", ({ request }) => ok(request instanceof Request, "instanceof Request"));
  test("url is absolute, http(s), with the path and query sent", ({ request }) => {
    const u = new URL(request.url);
    ok(u.protocol === "http:" || u.protocol === "https:", `scheme ${u.protocol}`);
    eq([u.pathname.endsWith("/request"), u.search], [true, "?q=1"]);
  });
  test("method is GET and a GET has a null body", async ({ request }) => {
    eq([request.method, request.body, request.bodyUsed], ["GET", null, false]);
    eq(await request.clone().text(), "");
  });
  test("headers: names are lowercase, the sent header is there", ({ request }) => {
    eq(request.headers.get("X-Case"), "A");
    ok([...request.headers.keys()].every((k) => k === k.toLowerCase()), "lowercase names");
  });
  test("headers of the incoming request are immutable", ({ request }) => throws(() => request.headers.set("x", "1"), TypeError));
  test("signal is an AbortSignal, not aborted while the request is live", ({ request }) => {
    ok(request.signal instanceof AbortSignal, "an AbortSignal");
    eq(request.signal.aborted, false);
  });
  test("a new Request built from it keeps url, method and headers", ({ request }) => {
    const copy = new Request(request, { headers: { "x-extra": "1" } });
    eq([copy.url, copy.method, copy.headers.get("x-extra"), copy.headers.get("x-case")], [request.url, "GET", "1", null]);
  });
  test("redirect mode is follow, and cache is default", ({ request }) => eq([request.redirect, request.cache], ["follow", "default"]));
});
