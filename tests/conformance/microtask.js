// queueMicrotask: HTML's "queue a microtask", and how it interleaves with promise jobs and timers.
import { area, eq, sleep, throws } from "./harness.js";

export default area("microtask", (test) => {
  test("microtasks run before a timer of 0 ms", async () => {
    const seen = [];
    setTimeout(() => seen.push("timer"), 0);
    queueMicrotask(() => seen.push("micro"));
    Promise.resolve().then(() => seen.push("promise"));
    await sleep(10);
    eq(seen, ["micro", "promise", "timer"]);
  });
  test("queueMicrotask callbacks run in FIFO order with promise reactions", async () => {
    const seen = [];
    Promise.resolve().then(() => seen.push(1));
    queueMicrotask(() => seen.push(2));
    Promise.resolve().then(() => seen.push(3));
    await sleep(0);
    eq(seen, [1, 2, 3]);
  });
  test("queueMicrotask of a non-function is a TypeError (WebIDL callback)", () => throws(() => queueMicrotask(1), TypeError));
  test("a microtask queued by a microtask runs before the next timer", async () => {
    const seen = [];
    setTimeout(() => seen.push("timer"), 0);
    queueMicrotask(() => queueMicrotask(() => seen.push("nested")));
    await sleep(10);
    eq(seen, ["nested", "timer"]);
  });
  test("the callback is invoked with an undefined this (WebIDL invoke a callback function)", async () => {
    let self = "unset";
    queueMicrotask(function () {
      self = this;
    });
    await sleep(0);
    eq(self, undefined);
  });
  test("queueMicrotask returns undefined", () => eq(queueMicrotask(() => {}), undefined));
  test("microtasks queued by a timer callback run before the next timer callback (perform a microtask checkpoint after each task)", async () => {
    const seen = [];
    setTimeout(() => {
      seen.push("t1");
      queueMicrotask(() => seen.push("m1"));
      Promise.resolve().then(() => seen.push("p1"));
    }, 0);
    setTimeout(() => seen.push("t2"), 0);
    await sleep(30);
    eq(seen, ["t1", "m1", "p1", "t2"]);
  });
  test("queueMicrotask with no argument, null or an object is a TypeError (WebIDL callback function)", () => {
    throws(() => queueMicrotask(), TypeError);
    throws(() => queueMicrotask(null), TypeError);
    throws(() => queueMicrotask({ call() {} }), TypeError);
  });
  test("the callback is invoked with an empty argument list (queue a microtask: invoke callback with no arguments)", async () => {
    const n = await new Promise((resolve) => queueMicrotask((...args) => resolve(args.length)));
    eq(n, 0);
  });
  test("a long chain of microtasks all runs before a 0 ms timer (the checkpoint drains the queue)", async () => {
    let n = 0;
    let atTimer;
    setTimeout(() => { atTimer = n; }, 0);
    const step = () => {
      if (++n < 1000) queueMicrotask(step);
    };
    queueMicrotask(step);
    await sleep(20);
    eq(atTimer, 1000);
  });
  test("a microtask queued by a microtask runs after one queued earlier from script (FIFO)", async () => {
    const seen = [];
    queueMicrotask(() => {
      seen.push(1);
      queueMicrotask(() => seen.push(3));
    });
    Promise.resolve().then(() => seen.push(2));
    await sleep(0);
    eq(seen, [1, 2, 3]);
  });
  test("a microtask queued during dispatchEvent runs after every listener and after dispatchEvent returns (JS stack not empty)", async () => {
    const seen = [];
    const t = new EventTarget();
    t.addEventListener("x", () => {
      queueMicrotask(() => seen.push("micro"));
      seen.push("l1");
    });
    t.addEventListener("x", () => seen.push("l2"));
    t.dispatchEvent(new Event("x"));
    seen.push("returned");
    await sleep(0);
    eq(seen, ["l1", "l2", "returned", "micro"]);
  });
  test("abort() fires the abort event synchronously; a microtask queued by the listener runs later", async () => {
    const seen = [];
    const c = new AbortController();
    c.signal.addEventListener("abort", () => {
      seen.push("event");
      queueMicrotask(() => seen.push("micro"));
    });
    c.abort();
    seen.push("returned");
    await sleep(0);
    eq(seen, ["event", "returned", "micro"]);
  });
  test("an interval's microtasks run before its next run", async () => {
    const seen = [];
    let n = 0;
    const id = setInterval(() => {
      const run = n++;
      seen.push(`run${run}`);
      queueMicrotask(() => seen.push(`micro${run}`));
      if (n === 2) clearInterval(id);
    }, 1);
    await sleep(60);
    eq(seen, ["run0", "micro0", "run1", "micro1"]);
  });
  test("a microtask queued from a resolved promise's reaction runs before the next timer, however deep", async () => {
    const seen = [];
    setTimeout(() => seen.push("timer"), 0);
    let p = Promise.resolve();
    for (let i = 0; i < 50; i++) p = p.then(() => {});
    p.then(() => queueMicrotask(() => seen.push("deep")));
    await sleep(20);
    eq(seen, ["deep", "timer"]);
  });
  test("a stream's first pull runs in the microtask that reacts to start's promise, between microtasks queued around the constructor (Streams SetUpReadableStreamDefaultController step 11)", async () => {
    const seen = [];
    queueMicrotask(() => seen.push("before"));
    new ReadableStream({ pull: () => { seen.push("pull"); } });
    queueMicrotask(() => seen.push("after"));
    await sleep(0);
    eq(seen, ["before", "pull", "after"]);
  });
  test("queueMicrotask.length is 1 and it is not a constructor (WebIDL operation)", () => {
    eq(queueMicrotask.length, 1);
    throws(() => new queueMicrotask(() => {}), TypeError);
  });
});
