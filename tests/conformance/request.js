// The Request a handler is given (Fetch's Request, as a server hands it over): its URL, method,
// headers, body and signal. Each case gets the incoming request of `GET /<prefix>/request?q=1`
// sent with a `x-case: A` header (what tools/conformance.sh and tests/web/conformance.rs send).
import { area, eq, ok, rejects, throws } from "./harness.js";

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
  test("headers iterate sorted by name, each name once (sort and combine)", ({ request }) => {
    const names = [...request.headers].map(([name]) => name);
    eq(names, [...new Set(names)].sort());
  });
  test("headers and signal are [SameObject] attributes", ({ request }) =>
    ok(request.headers === request.headers && request.signal === request.signal, "the same objects on each get"));
  test("headers of the incoming request: append and delete throw a TypeError too", ({ request }) => {
    throws(() => request.headers.append("x", "1"), TypeError);
    throws(() => request.headers.delete("x-case"), TypeError);
  });
  test("clone: the clone's headers keep the immutable guard", ({ request }) => throws(() => request.clone().headers.set("x", "1"), TypeError));
  test("clone: a new Request with the same url and method, and its own signal", ({ request }) => {
    const c = request.clone();
    ok(c !== request && c.signal !== request.signal && c.headers !== request.headers, "distinct objects");
    eq([c.url, c.method, c.signal.aborted, c.headers.get("x-case")], [request.url, "GET", false, "A"]);
  });
  test("new Request(request) gets headers with the request guard, which can be changed", ({ request }) => {
    const copy = new Request(request);
    copy.headers.set("x-more", "1");
    eq([copy.headers.get("x-more"), copy.headers.get("x-case"), request.headers.get("x-more")], ["1", "A", null]);
  });
  test("the url is a URL serialization: parsing it again gives the same string", ({ request }) => eq(new URL(request.url).href, request.url));
  test("a null body is never unusable: text() twice resolves to empty strings", async ({ request }) => {
    eq([await request.text(), await request.text(), request.bodyUsed], ["", "", false]);
  });
  test("arrayBuffer(), bytes() and blob() of a null body are empty", async ({ request }) => {
    const [buffer, view, blob] = [await request.arrayBuffer(), await request.bytes(), await request.blob()];
    eq([buffer.byteLength, view instanceof Uint8Array, view.length, blob.size], [0, true, 0, 0]);
  });
  test("json() of the empty body rejects with a SyntaxError", ({ request }) => rejects(() => request.json(), SyntaxError));
  test("formData() without a Content-Type rejects with a TypeError", ({ request }) => rejects(() => request.formData(), TypeError));
  test("new Request(request, { body }) keeps the GET method: TypeError (constructor step 35)", ({ request }) =>
    throws(() => new Request(request, { body: "x" }), TypeError));
  test("new Request(request, { method: \"POST\", body }) adds text/plain;charset=UTF-8", async ({ request }) => {
    const post = new Request(request, { method: "POST", body: "x" });
    eq([post.method, post.headers.get("content-type"), await post.text()], ["POST", "text/plain;charset=UTF-8", "x"]);
  });
  test("headers.getSetCookie() is empty when no Set-Cookie was sent", ({ request }) => eq(request.headers.getSetCookie(), []));
});
