// setTimeout and setInterval: HTML's timer initialization steps.
import { area, eq, ok, sleep } from "./harness.js";

export default area("timers", (test) => {
  test("timers fire in order of their timeout", async () => {
    const seen = [];
    setTimeout(() => seen.push(20), 20);
    setTimeout(() => seen.push(1), 1);
    setTimeout(() => seen.push(10), 10);
    await sleep(60);
    eq(seen, [1, 10, 20]);
  });
  test("timers of equal timeout fire in the order they were set", async () => {
    const seen = [];
    for (let i = 0; i < 5; i++) setTimeout(() => seen.push(i), 0);
    await sleep(20);
    eq(seen, [0, 1, 2, 3, 4]);
  });
  test("extra arguments are passed to the callback", async () => {
    const got = await new Promise((resolve) => setTimeout((a, b) => resolve([a, b]), 0, "x", 2));
    eq(got, ["x", 2]);
  });
  test("clearTimeout prevents the callback", async () => {
    let ran = false;
    clearTimeout(setTimeout(() => { ran = true; }, 5));
    await sleep(30);
    eq(ran, false);
  });
  test("clearTimeout of an unknown id or undefined does nothing", () => {
    clearTimeout(undefined);
    clearTimeout(123456789);
  });
  test("setInterval repeats until cleared", async () => {
    let n = 0;
    const id = setInterval(() => { n++; if (n === 3) clearInterval(id); }, 1);
    await sleep(60);
    eq(n, 3);
  });
  test("a negative timeout is treated as 0 (timer initialization step 4)", async () => {
    const seen = [];
    setTimeout(() => seen.push("neg"), -100);
    setTimeout(() => seen.push("ten"), 10);
    await sleep(40);
    eq(seen, ["neg", "ten"]);
  });
  test("setTimeout returns a positive integer id, distinct per call", () => {
    const a = setTimeout(() => {}, 1000);
    const b = setTimeout(() => {}, 1000);
    clearTimeout(a);
    clearTimeout(b);
    ok(Number(a) > 0 && Number(b) > 0 && Number(a) !== Number(b), "ids");
  });
  test("the timeout is a WebIDL long: 2^32 + 5 wraps to 5 ms", async () => {
    const seen = [];
    setTimeout(() => seen.push("wrapped"), 2 ** 32 + 5);
    setTimeout(() => seen.push("forty"), 40);
    await sleep(80);
    eq(seen, ["wrapped", "forty"]);
  });
  test("the timeout is a WebIDL long: NaN and a non-numeric string are 0", async () => {
    const seen = [];
    setTimeout(() => seen.push("nan"), NaN);
    setTimeout(() => seen.push("str"), "soon");
    setTimeout(() => seen.push("ten"), 10);
    await sleep(40);
    eq(seen, ["nan", "str", "ten"]);
  });
  test("the callback's this is the global object (timer initialization step 8.2, thisArg)", async () => {
    const self = await new Promise((resolve) =>
      setTimeout(function () {
        resolve(this);
      }, 0),
    );
    ok(self === globalThis, "this is globalThis");
  });
  test("clearTimeout clears an interval, and clearInterval a timeout (one map of active timers)", async () => {
    let n = 0;
    clearTimeout(setInterval(() => n++, 1));
    clearInterval(setTimeout(() => n++, 1));
    await sleep(30);
    eq(n, 0);
  });
  test("a timer cleared by an earlier timer's callback does not run", async () => {
    let ran = false;
    let second;
    setTimeout(() => clearTimeout(second), 5);
    second = setTimeout(() => { ran = true; }, 5);
    await sleep(40);
    eq(ran, false);
  });
});
