// The consumer of the `jobs` queue, and a schedule. Jobs with `"fail": true` are retried (with a
// delay) until their retries run out and they land in `jobs-dlq`; `islet queues replay-dlq jobs`
// puts them back. It has no routes of its own: it runs on events only.
export default {
  async queue(batch, env, ctx) {
    for (const message of batch.messages) {
      if (message.body?.fail) {
        console.warn(`job ${message.id} failed (attempt ${message.attempts}); retrying in 1 s`);
        message.retry({ delaySeconds: 1 });
        continue;
      }
      console.log(`job ${message.id} done:`, JSON.stringify(message.body));
      message.ack();
    }
  },

  async scheduled(controller, env, ctx) {
    console.log(`tick ${controller.cron} at ${new Date(controller.scheduledTime).toISOString()}`);
  },
};
