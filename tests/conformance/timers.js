// setTimeout and setInterval: HTML's timer initialization steps.
import { area, eq, ok, sleep, throws } from "./harness.js";

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
  test("setTimeout with no arguments is a TypeError (WebIDL: handler is required)", () => throws(() => setTimeout(), TypeError));
  test("the timeout is converted once, synchronously, with ToNumber (WebIDL long)", async () => {
    let calls = 0;
    const seen = [];
    setTimeout(() => seen.push("ran"), { valueOf: () => { calls++; return 0; } });
    eq(calls, 1, "valueOf calls at setTimeout");
    await sleep(30);
    eq([calls, seen], [1, ["ran"]]);
  });
  test("a timeout that throws in conversion propagates the exception (WebIDL long, ToNumber)", () =>
    throws(() => setTimeout(() => {}, { valueOf() { throw new RangeError("v"); } }), RangeError));
  test("a BigInt timeout is a TypeError (WebIDL long: ToNumber of a BigInt throws)", () => throws(() => setTimeout(() => {}, 1n), TypeError));
  test("the timeout is a WebIDL long: Infinity is 0", async () => {
    const seen = [];
    setTimeout(() => seen.push("inf"), Infinity);
    setTimeout(() => seen.push("forty"), 40);
    await sleep(100);
    eq(seen, ["inf", "forty"]);
  });
  test("the timeout is a WebIDL long: 2^31 wraps to a negative value, treated as 0 (timer initialization step 4)", async () => {
    const seen = [];
    setTimeout(() => seen.push("wrapped"), 2 ** 31);
    setTimeout(() => seen.push("forty"), 40);
    await sleep(100);
    eq(seen, ["wrapped", "forty"]);
  });
  test("a numeric string timeout is converted: \"40\" waits longer than 0", async () => {
    const seen = [];
    setTimeout(() => seen.push("forty"), "40");
    setTimeout(() => seen.push("zero"), 0);
    await sleep(100);
    eq(seen, ["zero", "forty"]);
  });
  test("setTimeout returns a number (WebIDL long)", () => {
    const id = setTimeout(() => {}, 1000);
    clearTimeout(id);
    eq(typeof id, "number");
  });
  test("clearTimeout converts its argument as a WebIDL long: a numeric string clears that timer", async () => {
    let ran = false;
    const id = setTimeout(() => { ran = true; }, 5);
    clearTimeout(String(id));
    await sleep(40);
    eq(ran, false);
  });
  test("clearTimeout propagates an exception from converting its argument (WebIDL long)", () =>
    throws(() => clearTimeout({ valueOf() { throw new RangeError("v"); } }), RangeError));
  test("setTimeout and setInterval share one id space (map of setTimeout and setInterval IDs)", () => {
    const ids = [setTimeout(() => {}, 1000), setInterval(() => {}, 1000), setTimeout(() => {}, 1000), setInterval(() => {}, 1000)];
    for (const id of ids) clearTimeout(id);
    eq(new Set(ids.map(Number)).size, 4);
  });
  test("a timer set inside a timer callback runs after timers already due with the same timeout", async () => {
    const seen = [];
    setTimeout(() => {
      seen.push("a");
      setTimeout(() => seen.push("c"), 0);
    }, 0);
    setTimeout(() => seen.push("b"), 0);
    await sleep(50);
    eq(seen, ["a", "b", "c"]);
  });
  test("setInterval passes its extra arguments on every run", async () => {
    const got = [];
    const id = setInterval((a, b) => {
      got.push(a + b);
      if (got.length === 2) clearInterval(id);
    }, 1, "x", "y");
    await sleep(80);
    eq(got, ["xy", "xy"]);
  });
  test("an interval callback's this is the global object too (timer initialization steps: callback this value thisArg)", async () => {
    const self = await new Promise((resolve) => {
      const id = setInterval(function () {
        clearInterval(id);
        resolve(this);
      }, 1);
    });
    ok(self === globalThis, "this is globalThis");
  });
  test("the callback is called with exactly the extra arguments given (no added lateness argument)", async () => {
    const n = await new Promise((resolve) => setTimeout((...args) => resolve(args.length), 0));
    eq(n, 0);
  });
});
