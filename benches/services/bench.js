// `?n=N`: N calls of hello's handler as a direct call (the same module imported here) and N calls
// through the service binding, each timed on its own and its body read; answers p50 and p99 of
// each in microseconds, and the binding's overhead (the difference of the p50s).
import hello from "./hello.js";

export default {
  async fetch(request, env) {
    const n = Number(new URL(request.url).searchParams.get("n") ?? 500);
    const direct = [];
    const bound = [];
    for (let i = 0; i < n; i++) {
      let t = performance.now();
      await (await hello.fetch(new Request("http://hello/"))).text();
      direct.push(performance.now() - t);
      t = performance.now();
      await (await env.HELLO.fetch("http://hello/")).text();
      bound.push(performance.now() - t);
    }
    const at = (times, q) => {
      times.sort((a, b) => a - b);
      return times[Math.min(times.length - 1, Math.floor(times.length * q))] * 1000;
    };
    const figures = {
      n,
      direct_p50_us: at(direct, 0.5),
      direct_p99_us: at(direct, 0.99),
      service_p50_us: at(bound, 0.5),
      service_p99_us: at(bound, 0.99),
    };
    figures.overhead_p50_us = figures.service_p50_us - figures.direct_p50_us;
    return Response.json(figures);
  },
};
