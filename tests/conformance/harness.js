// The conformance suite's harness. The same files run unchanged on Islet, `deno serve` and workerd:
// plain Web APIs only, no runtime-specific global. An area file calls `area(name, define)`; each
// `test(title, fn)` is one case, named after the spec step it checks; `fn({ request })` gets the
// request that asked for the area. A case passes when `fn`
// returns (or its promise fulfils) and fails with a description of what went wrong.

const CASE_TIMEOUT_MS = 5000;

export function area(name, define) {
  const cases = [];
  define((title, fn) => cases.push({ title, fn }));
  return {
    name,
    titles: () => cases.map((c) => c.title),
    /** Runs every case; each gets `{ request }`, the request that asked for the area. */
    async run(request) {
      const results = [];
      for (const { title, fn } of cases) {
        let timer;
        const timeout = new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer in ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS);
        });
        try {
          await Promise.race([(async () => fn({ request }))(), timeout]);
          results.push({ case: title, pass: true });
        } catch (e) {
          results.push({ case: title, pass: false, error: describe(e) });
        } finally {
          clearTimeout(timer);
        }
      }
      return results;
    },
  };
}

/** What a thrown value is, in words: its class, name and message. */
export function describe(e) {
  if (e === undefined) return "undefined";
  if (e === null) return "null";
  if (typeof e !== "object" && typeof e !== "function") return `${typeof e} ${String(e)}`;
  let cls = "Object";
  try {
    cls = e instanceof DOMException ? "DOMException" : (e.constructor?.name ?? "Object");
  } catch {
    // a revoked proxy or a hostile getter: keep the default
  }
  let text;
  try {
    text = `${cls}(${e.name}): ${e.message}`;
  } catch {
    text = cls;
  }
  return text;
}

export class Failure extends Error {
  name = "Failure";
}

export function ok(value, message = "expected a truthy value") {
  if (!value) throw new Failure(message);
}

/** Equality of primitives, and of arrays and plain objects by their JSON form. */
export function eq(actual, expected, what = "value") {
  const same =
    typeof expected === "object" && expected !== null
      ? show(actual) === show(expected)
      : Object.is(actual, expected);
  if (!same) throw new Failure(`${what}: expected ${show(expected)}, got ${show(actual)}`);
}

function show(v) {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  try {
    return JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * Checks a thrown or rejected value against what the spec says: a constructor (`TypeError`: an
 * instance of it whose name is the constructor's) or a string (a DOMException of that name).
 */
export function matches(e, expected) {
  if (typeof expected === "string") {
    if (!(e instanceof DOMException) || e.name !== expected) {
      throw new Failure(`expected DOMException ${expected}, got ${describe(e)}`);
    }
    return;
  }
  if (!(e instanceof expected) || e.name !== expected.name) {
    throw new Failure(`expected ${expected.name}, got ${describe(e)}`);
  }
}

export function throws(fn, expected) {
  try {
    fn();
  } catch (e) {
    matches(e, expected);
    return e;
  }
  throw new Failure(`expected ${typeof expected === "string" ? `DOMException ${expected}` : expected.name}, nothing was thrown`);
}

export async function rejects(fnOrPromise, expected) {
  try {
    await (typeof fnOrPromise === "function" ? fnOrPromise() : fnOrPromise);
  } catch (e) {
    matches(e, expected);
    return e;
  }
  throw new Failure(`expected ${typeof expected === "string" ? `DOMException ${expected}` : expected.name}, it fulfilled`);
}

export function bytes(view) {
  return Array.from(new Uint8Array(view.buffer ?? view, view.byteOffset ?? 0, view.byteLength));
}

export function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

export async function readBytes(stream) {
  const chunks = await readAll(stream);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
