// ReadableStream, WritableStream and TransformStream: the WHATWG Streams standard.
import { area, eq, ok, readAll, rejects, throws } from "./harness.js";

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
});
