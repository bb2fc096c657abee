// The conformance suite's entry: one handler serving every area, the same on Islet, `deno serve`
// and workerd. GET /<anything>/<area>?q=1 (with `x-case: A`) runs that area's cases and answers
// { area, cases: [{ case, pass, error? }] }; GET /<anything>/areas lists the areas.
import abort from "./abort.js";
import base64 from "./base64.js";
import blob from "./blob.js";
import compression from "./compression.js";
import encoding from "./encoding.js";
import fetchArea from "./fetch.js";
import microtask from "./microtask.js";
import requestArea from "./request.js";
import streams from "./streams.js";
import structuredCloneArea from "./structured_clone.js";
import timers from "./timers.js";
import url from "./url.js";
import webcrypto from "./webcrypto.js";

const areas = [abort, base64, blob, compression, encoding, fetchArea, microtask, requestArea, streams, structuredCloneArea, timers, url, webcrypto];

export default {
  async fetch(request) {
    const name = new URL(request.url).pathname.split("/").pop();
    if (name === "areas") return Response.json(areas.map((a) => a.name));
    const found = areas.find((a) => a.name === name);
    if (!found) return new Response(`no area ${name}\n`, { status: 404 });
    return Response.json({ area: found.name, cases: await found.run(request) });
  },
};
