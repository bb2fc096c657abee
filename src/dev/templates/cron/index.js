// A schedule: each run counts itself in KV; GET /{{name}}/ answers how many runs there were.
export default {
  async scheduled(controller, env) {
    const runs = Number((await env.STATE.get("runs")) ?? 0) + 1;
    await env.STATE.put("runs", String(runs));
    await env.STATE.put("last", JSON.stringify({ cron: controller.cron, at: new Date(controller.scheduledTime).toISOString() }));
    console.log(`run ${runs} (${controller.cron})`);
  },

  async fetch(request, env) {
    const runs = Number((await env.STATE.get("runs")) ?? 0);
    return Response.json({ runs, last: await env.STATE.get("last", "json") });
  },
};
