// Times KV operations from inside a handler: `?op=get|put|put-concurrent&n=N&size=BYTES`.
// get and put run one after another, each timed on its own (p50, p99); put-concurrent starts N
// puts at once and times them together. Answers the figures as JSON.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const op = url.searchParams.get("op");
    const n = Number(url.searchParams.get("n") ?? 500);
    const value = "v".repeat(Number(url.searchParams.get("size") ?? 100));
    const kv = env.KV;
    const times = [];
    if (op === "get") await kv.put("bench-key", value);
    const started = performance.now();
    if (op === "get") {
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        await kv.get("bench-key");
        times.push(performance.now() - t);
      }
    } else if (op === "put") {
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        await kv.put(`key-${i % 100}`, value);
        times.push(performance.now() - t);
      }
    } else if (op === "put-concurrent") {
      await Promise.all(Array.from({ length: n }, (_, i) => kv.put(`many-${i}`, value)));
    } else {
      return new Response("op is get, put or put-concurrent", { status: 400 });
    }
    const elapsed = performance.now() - started;
    times.sort((a, b) => a - b);
    const at = (q) => (times.length ? times[Math.min(times.length - 1, Math.floor(times.length * q))] * 1000 : null);
    return Response.json({ op, n, per_second: n / (elapsed / 1000), p50_us: at(0.5), p99_us: at(0.99) });
  },
};
