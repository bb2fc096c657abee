// ReadableStream, WritableStream and TransformStream: the WHATWG Streams standard.
import { area, eq, ok, readAll, rejects, sleep, throws } from "./harness.js";

const from = (items) =>
  new ReadableStream({
    start(c) {
      for (const i of items) c.enqueue(i);
      c.close();
    },
  });

export default area("streams", (test) => {
  test("chunks are read in the order enqueued, then done", async () => {
    const r = from([1, 2]).getReader();
    eq([await r.read(), await r.read(), await r.read()], [{ value: 1, done: false }, { value: 2, done: false }, { done: true }]);
  });
  test("getReader on a locked stream is a TypeError (AcquireReadableStreamDefaultReader step 1)", () => {
    const s = from([]);
    s.getReader();
    throws(() => s.getReader(), TypeError);
  });
  test("releaseLock lets a new reader be acquired", () => {
    const s = from([]);
    s.getReader().releaseLock();
    ok(!s.locked, "unlocked");
    s.getReader();
  });
  test("cancel: the reason reaches the underlying source", async () => {
    let reason;
    const s = new ReadableStream({ cancel: (r) => { reason = r; } });
    await s.cancel("why");
    eq(reason, "why");
  });
  test("an errored stream rejects read with the stored error", async () => {
    const s = new ReadableStream({ start: (c) => c.error(new RangeError("boom")) });
    await rejects(() => s.getReader().read(), RangeError);
  });
  test("enqueue after close is a TypeError (ReadableStreamDefaultControllerEnqueue)", () => {
    new ReadableStream({
      start(c) {
        c.close();
        throws(() => c.enqueue(1), TypeError);
      },
    });
  });
  test("a negative highWaterMark is a RangeError (ExtractHighWaterMark step 3)", () =>
    throws(() => new ReadableStream({}, { highWaterMark: -1 }), RangeError));
  test("desiredSize is highWaterMark minus queued size", () => {
    new ReadableStream(
      {
        start(c) {
          c.enqueue("a");
          eq(c.desiredSize, 2);
        },
      },
      { highWaterMark: 3 },
    );
  });
  test("tee: both branches see every chunk", async () => {
    const [a, b] = from(["x", "y"]).tee();
    eq([await readAll(a), await readAll(b)], [["x", "y"], ["x", "y"]]);
  });
  test("async iteration, and return() cancels the stream", async () => {
    let cancelled = false;
    const s = new ReadableStream({
      pull: (c) => c.enqueue(1),
      cancel: () => { cancelled = true; },
    });
    for await (const v of s) {
      eq(v, 1);
      break;
    }
    ok(cancelled, "cancelled by break");
  });
  test("ReadableStream.from an async iterable", async () => {
    async function* gen() {
      yield "a";
      yield "b";
    }
    eq(await readAll(ReadableStream.from(gen())), ["a", "b"]);
  });
  test("pipeThrough a TransformStream", async () => {
    const upper = new TransformStream({ transform: (chunk, c) => c.enqueue(chunk.toUpperCase()) });
    eq(await readAll(from(["a", "b"]).pipeThrough(upper)), ["A", "B"]);
  });
  test("TransformStream flush runs at the end and can enqueue", async () => {
    const t = new TransformStream({ transform: (chunk, c) => c.enqueue(chunk), flush: (c) => c.enqueue("end") });
    eq(await readAll(from(["a"]).pipeThrough(t)), ["a", "end"]);
  });
  test("pipeTo with preventClose leaves the destination open", async () => {
    const seen = [];
    const w = new WritableStream({ write: (c) => { seen.push(c); } });
    await from([1, 2]).pipeTo(w, { preventClose: true });
    const writer = w.getWriter();
    await writer.write(3);
    eq(seen, [1, 2, 3]);
  });
  test("pipeTo rejects with the source's error and aborts the destination", async () => {
    let aborted;
    const w = new WritableStream({ abort: (r) => { aborted = r; } });
    const s = new ReadableStream({ start: (c) => c.error(new TypeError("src")) });
    await rejects(() => s.pipeTo(w), TypeError);
    ok(aborted instanceof TypeError, "destination aborted with the error");
  });
  test("pipeTo with an aborted signal rejects with the signal's reason", async () => {
    await rejects(() => from([1]).pipeTo(new WritableStream(), { signal: AbortSignal.abort() }), "AbortError");
  });
  test("WritableStream: writes reach the sink in order, close resolves after them", async () => {
    const seen = [];
    const w = new WritableStream({ write: async (c) => seen.push(c), close: () => seen.push("closed") });
    const writer = w.getWriter();
    writer.write(1);
    writer.write(2);
    await writer.close();
    eq(seen, [1, 2, "closed"]);
  });
  test("a write after close is rejected with a TypeError", async () => {
    const writer = new WritableStream().getWriter();
    writer.close();
    await rejects(() => writer.write(1), TypeError);
  });
  test("byte stream: a BYOB reader reads into the given buffer", async () => {
    const s = new ReadableStream({
      type: "bytes",
      pull(c) {
        const v = c.byobRequest.view;
        v[0] = 7;
        c.byobRequest.respond(1);
      },
    });
    const { value } = await s.getReader({ mode: "byob" }).read(new Uint8Array(4));
    eq([value.byteLength, value[0]], [1, 7]);
  });
  test("getReader({ mode: 'byob' }) on a default stream is a TypeError", () => throws(() => from([]).getReader({ mode: "byob" }), TypeError));
  test("byte stream: enqueue of a non-view is a TypeError", () => {
    new ReadableStream({
      type: "bytes",
      start(c) {
        throws(() => c.enqueue("x"), TypeError);
      },
    });
  });
  test("CountQueuingStrategy and ByteLengthQueuingStrategy sizes", () => {
    eq(new CountQueuingStrategy({ highWaterMark: 2 }).size(), 1);
    eq(new ByteLengthQueuingStrategy({ highWaterMark: 2 }).size(new Uint8Array(5)), 5);
  });
  test("a byte stream with a size function is a RangeError (ReadableStream constructor step 4.1)", () =>
    throws(() => new ReadableStream({ type: "bytes" }, { size: () => 1 }), RangeError));
  test("a NaN highWaterMark is a RangeError (ExtractHighWaterMark step 3)", () =>
    throws(() => new ReadableStream({}, { highWaterMark: NaN }), RangeError));
  test("the size function's result is validated: NaN makes enqueue throw a RangeError and errors the stream (EnqueueValueWithSize step 2)", async () => {
    let controller;
    const s = new ReadableStream({ start: (c) => { controller = c; } }, { size: () => NaN });
    throws(() => controller.enqueue("x"), RangeError);
    await rejects(() => s.getReader().read(), RangeError);
  });
  test("start runs synchronously in the constructor; pull waits for start's promise (SetUpReadableStreamDefaultController steps 9-11)", async () => {
    const seen = [];
    let finishStart;
    new ReadableStream({
      start: () => {
        seen.push("start");
        return new Promise((resolve) => { finishStart = resolve; });
      },
      pull: () => { seen.push("pull"); },
    });
    seen.push("constructed");
    await sleep(0);
    seen.push("tick");
    finishStart();
    await sleep(0);
    eq(seen, ["start", "constructed", "tick", "pull"]);
  });
  test("with a highWaterMark of 0 pull is not called until a read is pending (ReadableStreamDefaultControllerShouldCallPull steps 4 and 7)", async () => {
    let pulls = 0;
    const s = new ReadableStream({ pull: (c) => { pulls++; c.enqueue(pulls); } }, { highWaterMark: 0 });
    await sleep(0);
    eq(pulls, 0, "pulls before a read");
    eq((await s.getReader().read()).value, 1);
  });
  test("read() of a queued chunk settles before a promise job queued after it (read-request chunk steps resolve synchronously)", async () => {
    const seen = [];
    const r = from(["a"]).getReader();
    r.read().then(() => seen.push("read"));
    Promise.resolve().then(() => seen.push("later"));
    await sleep(0);
    eq(seen, ["read", "later"]);
  });
  test("releaseLock rejects a pending read with a TypeError (ReadableStreamDefaultReaderRelease steps 2-3)", async () => {
    const r = new ReadableStream().getReader();
    const pending = r.read();
    r.releaseLock();
    await rejects(pending, TypeError);
  });
  test("tee: cancelling both branches cancels the source with an array of both reasons (ReadableStreamDefaultTee cancel2Algorithm step 3.1)", async () => {
    let reason;
    const [a, b] = new ReadableStream({ cancel: (r) => { reason = r; } }).tee();
    await Promise.all([a.cancel("r1"), b.cancel("r2")]);
    ok(Array.isArray(reason), `an array, got ${reason}`);
    eq(reason, ["r1", "r2"]);
  });
  test("pipeTo a value that is not a WritableStream rejects with a TypeError (WebIDL, promise-returning operation)", async () => {
    let p;
    try {
      p = from([]).pipeTo({});
    } catch (e) {
      throw new Error(`threw synchronously: ${e}`);
    }
    await rejects(p, TypeError);
  });
  test("byte stream: enqueue of a zero-length view is a TypeError (ReadableByteStreamController enqueue step 1)", () => {
    new ReadableStream({
      type: "bytes",
      start(c) {
        throws(() => c.enqueue(new Uint8Array(0)), TypeError);
      },
    });
  });
  test("byte stream: autoAllocateChunkSize of 0 is a TypeError (SetUpReadableByteStreamControllerFromUnderlyingSource step 9)", () =>
    throws(() => new ReadableStream({ type: "bytes", autoAllocateChunkSize: 0 }), TypeError));
  test("byte stream: respond(0) while readable is a TypeError, and beyond the view a RangeError (ReadableByteStreamControllerRespond step 5)", async () => {
    const errors = [];
    const s = new ReadableStream({
      type: "bytes",
      pull(c) {
        const req = c.byobRequest;
        try { req.respond(0); } catch (e) { errors.push(e.constructor.name); }
        try { req.respond(5); } catch (e) { errors.push(e.constructor.name); }
        req.view[0] = 1;
        req.respond(1);
      },
    });
    await s.getReader({ mode: "byob" }).read(new Uint8Array(4));
    eq(errors, ["TypeError", "RangeError"]);
  });
  test("BYOB read transfers the view's buffer: the original is detached (ReadableByteStreamControllerPullInto step 10)", async () => {
    const s = new ReadableStream({
      type: "bytes",
      pull(c) {
        c.byobRequest.view[0] = 9;
        c.byobRequest.respond(1);
      },
    });
    const view = new Uint8Array(4);
    const { value } = await s.getReader({ mode: "byob" }).read(view);
    eq([view.byteLength, value.buffer.byteLength, value[0]], [0, 4, 9]);
  });
  test("WritableStream: an underlying sink type is a RangeError (WritableStream constructor step 3)", () =>
    throws(() => new WritableStream({ type: "bytes" }), RangeError));
  test("a transform that throws errors the readable side and rejects the write (TransformStreamDefaultControllerPerformTransform step 2)", async () => {
    const t = new TransformStream({ transform: () => { throw new RangeError("t"); } });
    const read = t.readable.getReader().read();
    await rejects(() => t.writable.getWriter().write("x"), RangeError);
    await rejects(read, RangeError);
  });
  test("CountQueuingStrategy's size function is shared by every instance (count queuing strategy size function)", () =>
    ok(new CountQueuingStrategy({ highWaterMark: 1 }).size === new CountQueuingStrategy({ highWaterMark: 2 }).size, "same function"));
});
