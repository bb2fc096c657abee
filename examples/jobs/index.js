// A queue producer: POST a JSON job (or an array of them) and it is stored durably on the `jobs`
// queue; the `jobs-worker` function consumes it. `send` resolves once the node has the message.
export default {
  async fetch(request, env) {
    if (request.method !== "POST") {
      return Response.json({ usage: "POST a JSON job, or an array of jobs, to queue them" }, { status: 405 });
    }
    let jobs;
    try {
      jobs = await request.json();
    } catch {
      return Response.json({ error: "the body is not JSON" }, { status: 400 });
    }
    if (Array.isArray(jobs)) {
      await env.JOBS.sendBatch(jobs.map((body) => ({ body })));
      return Response.json({ queued: jobs.length }, { status: 202 });
    }
    const delaySeconds = Number(new URL(request.url).searchParams.get("delay") ?? 0);
    await env.JOBS.send(jobs, { delaySeconds });
    return Response.json({ queued: 1 }, { status: 202 });
  },
};
