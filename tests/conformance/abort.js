// AbortController and AbortSignal: the WHATWG DOM standard, and the events they fire.
import { area, eq, ok, sleep, throws } from "./harness.js";

export default area("abort", (test) => {
  test("AbortSignal.abort(): the default reason is an AbortError DOMException", () => {
    const s = AbortSignal.abort();
    ok(s.aborted, "aborted");
    ok(s.reason instanceof DOMException && s.reason.name === "AbortError", `AbortError, got ${s.reason}`);
  });
  test("AbortSignal.abort(reason) keeps any reason", () => eq(AbortSignal.abort("x").reason, "x"));
  test("abort fires one abort event; a second abort is ignored (signal abort step 1)", () => {
    const c = new AbortController();
    let n = 0;
    c.signal.addEventListener("abort", () => n++);
    c.abort("first");
    c.abort("second");
    eq([n, c.signal.reason], [1, "first"]);
  });
  test("the onabort attribute handler is called", () => {
    const c = new AbortController();
    let called = false;
    c.signal.onabort = () => { called = true; };
    c.abort();
    ok(called, "called");
  });
  test("throwIfAborted throws the reason", () => {
    const c = new AbortController();
    c.signal.throwIfAborted();
    c.abort(new RangeError("r"));
    throws(() => c.signal.throwIfAborted(), RangeError);
  });
  test("AbortSignal.timeout aborts with a TimeoutError DOMException", async () => {
    const s = AbortSignal.timeout(5);
    await sleep(50);
    ok(s.aborted && s.reason instanceof DOMException && s.reason.name === "TimeoutError", `TimeoutError, got ${s.reason}`);
  });
  test("AbortSignal.any follows the first source to abort, with its reason", () => {
    const a = new AbortController();
    const b = new AbortController();
    const any = AbortSignal.any([a.signal, b.signal]);
    b.abort("b");
    eq([any.aborted, any.reason], [true, "b"]);
  });
  test("AbortSignal.any of an already aborted signal is aborted at once", () => eq(AbortSignal.any([AbortSignal.abort("now")]).reason, "now"));
  test("AbortSignal cannot be constructed (TypeError)", () => throws(() => new AbortSignal(), TypeError));
  test("a listener with once runs once", () => {
    const t = new EventTarget();
    let n = 0;
    t.addEventListener("x", () => n++, { once: true });
    t.dispatchEvent(new Event("x"));
    t.dispatchEvent(new Event("x"));
    eq(n, 1);
  });
  test("a listener's signal removes it when aborted", () => {
    const t = new EventTarget();
    const c = new AbortController();
    let n = 0;
    t.addEventListener("x", () => n++, { signal: c.signal });
    c.abort();
    t.dispatchEvent(new Event("x"));
    eq(n, 0);
  });
  test("dispatchEvent of an event being dispatched is an InvalidStateError", () => {
    const t = new EventTarget();
    const e = new Event("x");
    let error;
    t.addEventListener("x", () => {
      try {
        t.dispatchEvent(e);
      } catch (err) {
        error = err;
      }
    });
    t.dispatchEvent(e);
    ok(error instanceof DOMException && error.name === "InvalidStateError", `InvalidStateError, got ${error}`);
  });
  test("preventDefault on a cancelable event makes dispatchEvent return false", () => {
    const t = new EventTarget();
    t.addEventListener("x", (e) => e.preventDefault());
    eq([t.dispatchEvent(new Event("x", { cancelable: true })), t.dispatchEvent(new Event("x"))], [false, true]);
  });
  test("a Request's signal follows the init signal's abort", () => {
    const c = new AbortController();
    const r = new Request("http://a/", { signal: c.signal });
    c.abort("gone");
    eq([r.signal.aborted, r.signal.reason], [true, "gone"]);
  });
});
