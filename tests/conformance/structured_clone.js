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
  test("an Error whose name is a NativeError name is cloned with that prototype (serialize step 17.2)", () => {
    const e = new Error("m");
    e.name = "TypeError";
    const c = structuredClone(e);
    ok(c instanceof TypeError, `a TypeError, got ${Object.prototype.toString.call(c)} ${c.name}`);
    eq(c.message, "m");
  });
  test("an Error subclass with another name is cloned as a plain Error (serialize step 17.2)", () => {
    class MyError extends Error {
      name = "MyError";
    }
    const c = structuredClone(new MyError("m"));
    eq([Object.getPrototypeOf(c) === Error.prototype, c.name, c.message], [true, "Error", "m"]);
  });
  test("a Proxy is a DataCloneError (exotic object, serialize step 23)", () => throws(() => structuredClone(new Proxy({}, {})), "DataCloneError"));
  test("an exception thrown by a getter propagates unchanged (serialize step 26.4.1.1, ? Get)", () =>
    throws(() => structuredClone({ get x() { throw new RangeError("g"); } }), RangeError));
  test("a property deleted by an earlier getter is skipped (serialize step 26.4.1: HasOwnProperty)", () => {
    const c = structuredClone({
      get a() {
        delete this.b;
        return 1;
      },
      b: 2,
    });
    eq([c.a, "b" in c], [1, false]);
  });
  test("an own __proto__ data property stays a data property (deserialize: CreateDataProperty)", () => {
    const c = structuredClone(JSON.parse('{"__proto__": {"polluted": true}}'));
    eq([Object.getPrototypeOf(c) === Object.prototype, Object.hasOwn(c, "__proto__"), c.polluted], [true, true, undefined]);
  });
  test("a typed array keeps its byteOffset, length and whole buffer (serialize step 14)", () => {
    const buf = new ArrayBuffer(8);
    const c = structuredClone(new Uint16Array(buf, 2, 2));
    eq([c.byteOffset, c.length, c.buffer.byteLength], [2, 2, 8]);
  });
  test("a resizable ArrayBuffer stays resizable with its maxByteLength (serialize step 13.2.5)", () => {
    const buf = new ArrayBuffer(2, { maxByteLength: 16 });
    const c = structuredClone(buf);
    eq([c.resizable, c.maxByteLength, c.byteLength], [true, 16, 2]);
  });
  test("a view of a detached buffer is a DataCloneError (serialize step 14.1)", () => {
    const view = new Uint8Array(4);
    structuredClone(view.buffer, { transfer: [view.buffer] });
    throws(() => structuredClone(view), "DataCloneError");
  });
  test("transfer that is not a sequence (a string) is a TypeError (WebIDL sequence<object>)", () =>
    throws(() => structuredClone(1, { transfer: "ab" }), TypeError));
  test("a File keeps its name, lastModified and type", async () => {
    const c = structuredClone(new File(["x"], "f.txt", { type: "text/plain", lastModified: 42 }));
    ok(c instanceof File, "a File");
    eq([c.name, c.lastModified, c.type, await c.text()], ["f.txt", 42, "text/plain", "x"]);
  });
  test("a URL (a platform object that is not [Serializable]) is a DataCloneError (serialize step 20)", () => throws(() => structuredClone(new URL("http://a/")), "DataCloneError"));
  test("an EventTarget, an Event and a TextEncoder (platform objects, not [Serializable]) are DataCloneErrors (serialize step 20)", () => {
    throws(() => structuredClone(new EventTarget()), "DataCloneError");
    throws(() => structuredClone(new Event("x")), "DataCloneError");
    throws(() => structuredClone(new TextEncoder()), "DataCloneError");
  });
  test("a Headers object is a DataCloneError (platform object, not [Serializable]: serialize step 20)", () => throws(() => structuredClone(new Headers()), "DataCloneError"));
  test("a CryptoKey is [Serializable]: the clone keeps its type, algorithm, usages and key (serialize step 19)", async () => {
    const key = await crypto.subtle.importKey("raw", new Uint8Array(16), "AES-GCM", true, ["encrypt", "decrypt"]);
    const c = structuredClone(key);
    ok(c instanceof CryptoKey && c !== key, `a new CryptoKey, got ${Object.prototype.toString.call(c)} with keys [${Object.keys(c)}]`);
    eq([c.type, c.extractable, c.algorithm.name, c.algorithm.length, c.usages], ["secret", true, "AES-GCM", 128, ["encrypt", "decrypt"]]);
    const iv = new Uint8Array(12);
    const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, c, new Uint8Array([1, 2]));
    eq(Array.from(new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv }, key, ct))), [1, 2], "the clone holds the same key material");
  });
  test("structuredClone.length is 1 (WebIDL: one required argument)", () => eq(structuredClone.length, 1));
  test("a transferred buffer is detached even when the value does not reference it (StructuredSerializeWithTransfer: each listed buffer is detached)", () => {
    const buf = new ArrayBuffer(4);
    structuredClone("x", { transfer: [buf] });
    eq(buf.byteLength, 0);
  });
  test("a clone that fails detaches nothing (serialization comes before transfer)", () => {
    const buf = new ArrayBuffer(16);
    throws(() => structuredClone({ f() {} }, { transfer: [buf] }), "DataCloneError");
    eq(buf.byteLength, 16);
  });
  test("a Blob in the transfer list is a DataCloneError, and nothing is detached (step 1.1)", () => {
    const buf = new ArrayBuffer(4);
    throws(() => structuredClone(buf, { transfer: [buf, new Blob(["x"])] }), "DataCloneError");
    eq(buf.byteLength, 4);
  });
});
