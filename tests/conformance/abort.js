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
  test("AbortSignal.any: the dependent signal is already aborted when the source's listeners run, and its event fires after (signal abort steps 4-6)", () => {
    const c = new AbortController();
    const any = AbortSignal.any([c.signal]);
    const seen = [];
    c.signal.addEventListener("abort", () => seen.push(`source:${any.aborted}`));
    any.addEventListener("abort", () => seen.push("dependent"));
    c.abort();
    eq(seen, ["source:true", "dependent"]);
  });
  test("AbortSignal.any of a signal made by AbortSignal.any follows the original source (create a dependent abort signal step 4.2)", () => {
    const c = new AbortController();
    const outer = AbortSignal.any([AbortSignal.any([c.signal])]);
    c.abort("deep");
    eq([outer.aborted, outer.reason], [true, "deep"]);
  });
  test("AbortSignal.timeout of a negative or NaN time is a TypeError ([EnforceRange] unsigned long long)", () => {
    throws(() => AbortSignal.timeout(-1), TypeError);
    throws(() => AbortSignal.timeout(NaN), TypeError);
  });
  test("abort(null) keeps null as the reason; abort(undefined) makes an AbortError (signal abort step 2)", () => {
    const a = new AbortController();
    a.abort(null);
    const b = new AbortController();
    b.abort(undefined);
    eq([a.signal.reason, b.signal.reason instanceof DOMException && b.signal.reason.name], [null, "AbortError"]);
  });
  test("throwIfAborted throws the reason itself, even a primitive", () => {
    const c = new AbortController();
    c.abort("why");
    let thrown;
    try {
      c.signal.throwIfAborted();
    } catch (e) {
      thrown = e;
    }
    eq(thrown, "why");
  });
  test("the abort event is trusted, does not bubble and is not cancelable (fire an event)", () => {
    const c = new AbortController();
    let e;
    c.signal.addEventListener("abort", (ev) => { e = ev; });
    c.abort();
    eq([e.type, e.isTrusted, e.bubbles, e.cancelable, e.target === c.signal], ["abort", true, false, false, true]);
  });
  test("onabort keeps the position where it was first set among the listeners (HTML event handler attributes)", () => {
    const c = new AbortController();
    const seen = [];
    c.signal.addEventListener("abort", () => seen.push("a"));
    c.signal.onabort = () => seen.push("first handler");
    c.signal.addEventListener("abort", () => seen.push("c"));
    c.signal.onabort = () => seen.push("handler");
    c.abort();
    eq(seen, ["a", "handler", "c"]);
  });
  test("onabort set to a non-object is null ([LegacyTreatNonObjectAsNull])", () => {
    const c = new AbortController();
    c.signal.onabort = () => {};
    c.signal.onabort = 1;
    eq(c.signal.onabort, null);
  });
  test("a listener added during dispatch is not called by that dispatch; one removed is not called (invoke: a clone of the listener list; inner invoke: the removed flag)", () => {
    const t = new EventTarget();
    const seen = [];
    const late = () => seen.push("late");
    const removed = () => seen.push("removed");
    t.addEventListener("x", () => {
      seen.push("first");
      t.addEventListener("x", late);
      t.removeEventListener("x", removed);
    });
    t.addEventListener("x", removed);
    t.dispatchEvent(new Event("x"));
    eq(seen, ["first"]);
  });
  test("the same callback is added once per capture value (add an event listener step 4)", () => {
    const t = new EventTarget();
    let n = 0;
    const f = () => n++;
    t.addEventListener("x", f);
    t.addEventListener("x", f);
    t.addEventListener("x", f, { capture: true });
    t.dispatchEvent(new Event("x"));
    eq(n, 2);
  });
  test("preventDefault in a passive listener is ignored (set the canceled flag)", () => {
    const t = new EventTarget();
    t.addEventListener("x", (e) => e.preventDefault(), { passive: true });
    const e = new Event("x", { cancelable: true });
    eq([t.dispatchEvent(e), e.defaultPrevented], [true, false]);
  });
  test("returnValue = false cancels a cancelable event (legacy returnValue setter)", () => {
    const t = new EventTarget();
    t.addEventListener("x", (e) => { e.returnValue = false; });
    eq(t.dispatchEvent(new Event("x", { cancelable: true })), false);
  });
  test("an object listener's handleEvent is looked up at each dispatch, with the object as this (call a user object's operation)", () => {
    const t = new EventTarget();
    const seen = [];
    const listener = { handleEvent() { seen.push(this === listener ? "one" : "wrong this"); } };
    t.addEventListener("x", listener);
    t.dispatchEvent(new Event("x"));
    listener.handleEvent = () => seen.push("two");
    t.dispatchEvent(new Event("x"));
    eq(seen, ["one", "two"]);
  });
  test("during dispatch eventPhase is AT_TARGET and currentTarget the target; after it, NONE and null", () => {
    const t = new EventTarget();
    const e = new Event("x");
    let during;
    t.addEventListener("x", (ev) => { during = [ev.eventPhase, ev.currentTarget === t, ev.composedPath().length]; });
    t.dispatchEvent(e);
    eq([during, e.eventPhase, e.currentTarget, e.composedPath().length], [[2, true, 1], 0, null, 0]);
  });
  test("dispatchEvent of a non-Event is a TypeError, and new Event() without a type too (WebIDL)", () => {
    throws(() => new EventTarget().dispatchEvent({ type: "x" }), TypeError);
    throws(() => new Event(), TypeError);
  });
});
