// POST /{{name}}/ with a JSON job queues it (202); the queue handler finishes jobs in batches and
// records them; GET /{{name}}/ lists the finished ones.
export default {
  async fetch(request, env) {
    if (request.method === "POST") {
      const job = await request.json();
      await env.JOBS.send(job);
      return Response.json({ queued: job }, { status: 202 });
    }
    const { keys } = await env.DONE.list();
    return Response.json({ done: keys.map((key) => key.name) });
  },

  async queue(batch, env) {
    for (const message of batch.messages) {
      const id = String(message.body?.id ?? message.id);
      console.log(`job ${id}: ${JSON.stringify(message.body)}`);
      await env.DONE.put(id, JSON.stringify(message.body));
      message.ack();
    }
  },
};
