// Headers, Request, Response and the Body mixin: the WHATWG Fetch standard (no network).
import { area, bytes, eq, ok, rejects, throws } from "./harness.js";

export default area("fetch", (test) => {
  test("Headers: an invalid header name is a TypeError", () => throws(() => new Headers({ "a b": "c" }), TypeError));
  test("Headers: a value containing LF is a TypeError", () => throws(() => new Headers({ a: "x\ny" }), TypeError));
  test("Headers: a value is normalized (leading and trailing HTTP whitespace removed)", () => {
    const h = new Headers();
    h.set("a", " \t x y \t");
    eq(h.get("a"), "x y");
  });
  test("Headers.get: values of one name are combined with \", \"", () => {
    const h = new Headers();
    h.append("a", "1");
    h.append("A", "2");
    eq(h.get("a"), "1, 2");
  });
  test("Headers iteration: sorted, lowercased, set-cookie values kept apart", () => {
    const h = new Headers([["B", "1"], ["Set-Cookie", "x=1"], ["a", "2"], ["set-cookie", "y=2"]]);
    eq([...h], [["a", "2"], ["b", "1"], ["set-cookie", "x=1"], ["set-cookie", "y=2"]]);
  });
  test("Headers.getSetCookie returns each value", () => {
    const h = new Headers([["set-cookie", "a=1, b=2"], ["set-cookie", "c=3"]]);
    eq(h.getSetCookie(), ["a=1, b=2", "c=3"]);
  });
  test("Headers.get of an absent name is null", () => eq(new Headers().get("x"), null));
  test("Headers from a sequence: a pair that is not two items is a TypeError", () => throws(() => new Headers([["a"]]), TypeError));
  test("Request: GET with a body is a TypeError (constructor step 36)", () => throws(() => new Request("http://a/", { method: "GET", body: "x" }), TypeError));
  test("Request: method is normalized for the standard names only", () => {
    eq(new Request("http://a/", { method: "post" }).method, "POST");
    eq(new Request("http://a/", { method: "patch" }).method, "patch");
  });
  test("Request: a forbidden method (CONNECT) is a TypeError", () => throws(() => new Request("http://a/", { method: "CONNECT" }), TypeError));
  test("Request: an invalid method token is a TypeError", () => throws(() => new Request("http://a/", { method: "GE T" }), TypeError));
  test("Request: a URL with credentials is a TypeError", () => throws(() => new Request("http://u:p@a/"), TypeError));
  test("Request: the defaults", () => {
    const r = new Request("http://a/");
    eq([r.method, r.redirect, r.bodyUsed, r.body], ["GET", "follow", false, null]);
  });
  test("Request.signal is an AbortSignal that follows init.signal", () => {
    const r = new Request("http://a/", { signal: AbortSignal.abort() });
    ok(r.signal instanceof AbortSignal && r.signal.aborted, "aborted signal");
  });
  test("Request.clone: both bodies can be read", async () => {
    const a = new Request("http://a/", { method: "POST", body: "hi" });
    const b = a.clone();
    eq([await a.text(), await b.text()], ["hi", "hi"]);
  });
  test("Response: a status outside 200-599 is a RangeError", () => {
    throws(() => new Response(null, { status: 199 }), RangeError);
    throws(() => new Response(null, { status: 600 }), RangeError);
  });
  test("Response: a null body status with a body is a TypeError", () => throws(() => new Response("x", { status: 204 }), TypeError));
  test("Response: a statusText that is not a reason-phrase is a TypeError", () => throws(() => new Response(null, { statusText: "a\nb" }), TypeError));
  test("Response defaults: 200, ok, type default, empty statusText", () => {
    const r = new Response();
    eq([r.status, r.ok, r.type, r.statusText, r.redirected], [200, true, "default", "", false]);
  });
  test("Response.json sets content-type and serializes", async () => {
    const r = Response.json({ a: 1 }, { status: 201 });
    eq([r.status, r.headers.get("content-type"), await r.text()], [201, "application/json", '{"a":1}']);
  });
  test("Response.json of a value JSON cannot serialize is a TypeError", () => throws(() => Response.json(Symbol("x")), TypeError));
  test("Response.redirect: location set, a non-redirect status is a RangeError", () => {
    eq(Response.redirect("http://a/x", 301).headers.get("location"), "http://a/x");
    throws(() => Response.redirect("http://a/", 200), RangeError);
  });
  test("Response.redirect's headers are immutable", () => throws(() => Response.redirect("http://a/").headers.set("x", "1"), TypeError));
  test("Response.error: type error, status 0, immutable headers", () => {
    const r = Response.error();
    eq([r.type, r.status], ["error", 0]);
    throws(() => r.headers.set("a", "b"), TypeError);
  });
  test("Body: reading twice rejects with a TypeError, bodyUsed set", async () => {
    const r = new Response("x");
    await r.text();
    ok(r.bodyUsed, "bodyUsed");
    await rejects(() => r.text(), TypeError);
  });
  test("Response.clone of a used body is a TypeError", async () => {
    const r = new Response("x");
    await r.arrayBuffer();
    throws(() => r.clone(), TypeError);
  });
  test("Body: json() of invalid JSON rejects with a SyntaxError", () => rejects(() => new Response("{").json(), SyntaxError));
  test("extract a body: URLSearchParams sets the urlencoded content-type", () =>
    eq(new Response(new URLSearchParams("a=1")).headers.get("content-type"), "application/x-www-form-urlencoded;charset=UTF-8"));
  test("extract a body: a string is text/plain;charset=UTF-8", () => eq(new Response("x").headers.get("content-type"), "text/plain;charset=UTF-8"));
  test("extract a body: a Blob's type becomes the content-type", () => eq(new Response(new Blob(["x"], { type: "image/png" })).headers.get("content-type"), "image/png"));
  test("Body.arrayBuffer is UTF-8 of a string body", async () => eq(bytes(new Uint8Array(await new Response("\u20ac").arrayBuffer())), [0xe2, 0x82, 0xac]));
  test("Body.bytes returns a Uint8Array", async () => {
    const b = await new Response("ab").bytes();
    ok(b instanceof Uint8Array, "a Uint8Array");
    eq(Array.from(b), [97, 98]);
  });
  test("Body.formData parses application/x-www-form-urlencoded", async () => {
    const fd = await new Response("a=1&b=x+y", { headers: { "content-type": "application/x-www-form-urlencoded" } }).formData();
    eq([fd.get("a"), fd.get("b")], ["1", "x y"]);
  });
  test("Body.formData of text/plain rejects with a TypeError", () => rejects(() => new Response("a=1").formData(), TypeError));
  test("a ReadableStream body is read through", async () => {
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("a"));
        c.enqueue(new TextEncoder().encode("b"));
        c.close();
      },
    });
    eq(await new Response(body).text(), "ab");
  });
  test("Response.body is a ReadableStream of Uint8Array chunks", async () => {
    const reader = new Response("xyz").body.getReader();
    const { value } = await reader.read();
    ok(value instanceof Uint8Array, "a Uint8Array chunk");
  });
  // Headers: header names, values and the guard (https://fetch.spec.whatwg.org/#headers-class).
  test("Headers append step 1: normalization strips leading and trailing CR and LF (HTTP whitespace)", () => eq(new Headers({ a: "\r\n x \r\n" }).get("a"), "x"));
  test("Headers: a value above U+00FF is a TypeError (WebIDL ByteString), a Latin-1 one is kept", () => {
    throws(() => new Headers({ a: "\u0100" }), TypeError);
    eq(new Headers({ a: "\u00e9" }).get("a"), "\u00e9");
  });
  test("Headers get, has and delete: an empty or invalid name is a TypeError", () => {
    const h = new Headers();
    throws(() => h.get(""), TypeError);
    throws(() => h.has("a b"), TypeError);
    throws(() => h.delete("a:b"), TypeError);
  });
  test("Headers from a record: a symbol key is a TypeError (WebIDL record<ByteString, ByteString>)", () => throws(() => new Headers({ [Symbol("k")]: "v" }), TypeError));
  // The Request constructor (https://fetch.spec.whatwg.org/#dom-request).
  test("Request constructor step 10: a non-null init.window is a TypeError", () => throws(() => new Request("http://a/", { window: {} }), TypeError));
  test("Request constructor step 17: mode \"navigate\" is a TypeError", () => throws(() => new Request("http://a/", { mode: "navigate" }), TypeError));
  test("Request constructor step 32.1: no-cors mode with a method that is not CORS-safelisted is a TypeError", () =>
    throws(() => new Request("http://a/", { mode: "no-cors", method: "PUT" }), TypeError));
  test("Request constructor step 39.1: a ReadableStream body without duplex is a TypeError", () =>
    throws(() => new Request("http://a/", { method: "POST", body: new ReadableStream() }), TypeError));
  test("extract a body: a ReadableStream with keepalive is a TypeError", () =>
    throws(() => new Request("http://a/", { method: "POST", body: new ReadableStream(), duplex: "half", keepalive: true }), TypeError));
  test("Request defaults: mode cors, credentials same-origin, referrer about:client, empty destination and integrity", () => {
    const r = new Request("http://a/");
    eq([r.mode, r.credentials, r.referrer, r.destination, r.integrity, r.keepalive], ["cors", "same-origin", "about:client", "", "", false]);
  });
  test("Request.duplex is \"half\"", () => eq(new Request("http://a/").duplex, "half"));
  // Response (https://fetch.spec.whatwg.org/#response-class).
  test("initialize a response: status (step 1) is checked before statusText (step 2)", () => throws(() => new Response(null, { status: 100, statusText: "\n" }), RangeError));
  test("ResponseInit.status is an unsigned short: 65736 wraps to 200 (WebIDL)", () => eq(new Response(null, { status: 65736 }).status, 200));
  test("Response.redirect: the URL is parsed (step 2, TypeError) before the status is checked (step 3)", () => throws(() => Response.redirect("http://[", 200), TypeError));
  // Bodies (https://fetch.spec.whatwg.org/#concept-bodyinit-extract and the Body mixin).
  test("extract a body: a non-stream body is a byte stream (BYOB reader)", async () => {
    const reader = new Response("abc").body.getReader({ mode: "byob" });
    const { value } = await reader.read(new Uint8Array(8));
    eq(Array.from(value), [97, 98, 99]);
  });
  test("Body.formData: a multipart file part without Content-Type is text/plain", async () => {
    const text = '--B\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nhi\r\n--B--\r\n';
    const fd = await new Response(text, { headers: { "content-type": "multipart/form-data; boundary=B" } }).formData();
    const f = fd.get("f");
    eq([f instanceof File, f.name, f.type, await f.text()], [true, "a.txt", "text/plain", "hi"]);
  });
  // fetch() of data: URLs (https://fetch.spec.whatwg.org/#scheme-fetch, "data"), which needs no network.
  test("fetch of a data: URL: 200 OK, type basic, URL without fragment, text/plain;charset=US-ASCII by default", async () => {
    const r = await fetch("data:,A%20B#frag");
    eq([r.status, r.statusText, r.type, r.url, r.headers.get("content-type"), await r.text()], [200, "OK", "basic", "data:,A%20B", "text/plain;charset=US-ASCII", "A B"]);
  });
  test("data: URL processor step 11.3: a body that is not forgiving-base64 is a network error (TypeError)", () => rejects(() => fetch("data:;base64,!!"), TypeError));
  test("fetch: the headers of a fetched response are immutable", async () => {
    const r = await fetch("data:,x");
    throws(() => r.headers.set("x", "1"), TypeError);
  });
  test("fetch step 4: an already aborted signal rejects with its reason, an AbortError", () =>
    rejects(() => fetch("data:,x", { signal: AbortSignal.abort() }), "AbortError"));
  test("fetch step 2: an unparsable URL rejects the promise rather than throwing", async () => {
    let promise;
    try {
      promise = fetch("http://[");
    } catch (e) {
      throw new Error(`fetch threw synchronously: ${e}`);
    }
    await rejects(promise, TypeError);
  });
  test("fetch has length 1 (WebIDL: one required argument)", () => eq(fetch.length, 1));
  test("Response.json and Response.redirect have length 1 (WebIDL: data and url are required)", () => eq([Response.json.length, Response.redirect.length], [1, 1]));
});
