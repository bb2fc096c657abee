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
});
