// structuredClone: HTML's StructuredSerializeWithTransfer and StructuredDeserialize.
import { area, eq, ok, throws } from "./harness.js";

export default area("structured_clone", (test) => {
  test("primitives, Date, RegExp, Map and Set are cloned", () => {
    const d = new Date(5);
    const c = structuredClone({ d, r: /a+/gi, m: new Map([[1, "x"]]), s: new Set([2]), n: -0, b: 10n });
    ok(c.d instanceof Date && c.d.getTime() === 5 && c.d !== d, "Date");
    eq([c.r.source, c.r.flags], ["a+", "gi"]);
    eq([c.m.get(1), c.s.has(2), Object.is(c.n, -0), c.b], ["x", true, true, 10n]);
  });
  test("cycles and shared references are preserved (the memory map)", () => {
    const a = { };
    a.self = a;
    const shared = [1];
    const c = structuredClone({ a, x: shared, y: shared });
    ok(c.a.self === c.a && c.x === c.y, "identity kept");
  });
  test("a function is a DataCloneError (serialize step 26)", () => throws(() => structuredClone(() => {}), "DataCloneError"));
  test("a Symbol is a DataCloneError (serialize step 5)", () => throws(() => structuredClone(Symbol("s")), "DataCloneError"));
  test("a WeakMap is a DataCloneError", () => throws(() => structuredClone(new WeakMap()), "DataCloneError"));
  test("transfer detaches the original ArrayBuffer", () => {
    const buf = new ArrayBuffer(8);
    const c = structuredClone(buf, { transfer: [buf] });
    eq([buf.byteLength, c.byteLength], [0, 8]);
  });
  test("transferring the same buffer twice is a DataCloneError (step 1.3)", () => {
    const buf = new ArrayBuffer(1);
    throws(() => structuredClone(buf, { transfer: [buf, buf] }), "DataCloneError");
  });
  test("transferring an object that is not transferable is a DataCloneError (step 1.1)", () =>
    throws(() => structuredClone({}, { transfer: [{}] }), "DataCloneError"));
  test("transferring a detached buffer is a DataCloneError (step 1.4)", () => {
    const buf = new ArrayBuffer(1);
    structuredClone(buf, { transfer: [buf] });
    throws(() => structuredClone(buf, { transfer: [buf] }), "DataCloneError");
  });
  test("a transferred buffer inside a typed array is moved with it", () => {
    const view = new Uint8Array([1, 2, 3]);
    const c = structuredClone({ view }, { transfer: [view.buffer] });
    eq([view.byteLength, Array.from(c.view)], [0, [1, 2, 3]]);
  });
  test("Error objects keep name and message (serializable errors)", () => {
    const c = structuredClone(new RangeError("far"));
    ok(c instanceof RangeError, "a RangeError");
    eq(c.message, "far");
  });
  test("typed arrays sharing a buffer keep sharing it", () => {
    const buf = new ArrayBuffer(4);
    const c = structuredClone([new Uint8Array(buf), new Uint16Array(buf)]);
    ok(c[0].buffer === c[1].buffer, "one buffer");
  });
  test("sparse arrays keep their length and holes", () => {
    const a = [];
    a[3] = 1;
    const c = structuredClone(a);
    eq([c.length, 0 in c], [4, false]);
  });
  test("getters run, the clone holds plain values; prototypes are not kept", () => {
    class P {
      get v() { return 7; }
    }
    const c = structuredClone(Object.assign(new P(), { own: 1 }));
    eq([Object.getPrototypeOf(c) === Object.prototype, c.own, c.v], [true, 1, undefined]);
  });
  test("boxed primitives are cloned as boxed", () => {
    const c = structuredClone(new String("s"));
    ok(c instanceof String && c.valueOf() === "s", "a String object");
  });
  test("structuredClone() with no argument is a TypeError", () => throws(() => structuredClone(), TypeError));
  test("structuredClone(undefined) is undefined", () => eq(structuredClone(undefined), undefined));
  test("a Blob is cloned with its type and bytes", async () => {
    const c = structuredClone(new Blob(["ab"], { type: "text/plain" }));
    eq([c.type, await c.text()], ["text/plain", "ab"]);
  });
  test("a DOMException is cloned with its name and message", () => {
    const c = structuredClone(new DOMException("m", "NotFoundError"));
    ok(c instanceof DOMException, "a DOMException");
    eq([c.name, c.message], ["NotFoundError", "m"]);
  });
});
