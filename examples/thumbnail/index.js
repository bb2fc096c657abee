// The second step of the photo pipeline: run by the `photos` bucket's object-create notifications
// for keys under `uploads/`, it writes JPEG thumbnails 100, 300 and 500 px wide (aspect kept) under
// `thumbnails/<width>/<name>`. Thumbnails are written outside `uploads/`, so they do not run it
// again. Delivery is at least once: a notification seen before (same source etag) is skipped.
const WIDTHS = [100, 300, 500];

async function thumbnails(env, event) {
  const key = event.object.key;
  const name = key.slice("uploads/".length);
  const done = await env.PHOTOS.head(`thumbnails/${WIDTHS.at(-1)}/${name}`);
  if (done?.customMetadata?.sourceEtag === event.object.eTag) return "already done";
  const source = await env.PHOTOS.get(key);
  if (source === null) return "gone"; // deleted since: nothing to make
  const bytes = await source.arrayBuffer();
  for (const width of WIDTHS) {
    const image = await env.IMAGES.input(bytes).transform({ width }).output({ format: "image/jpeg", quality: 80 });
    await env.PHOTOS.put(`thumbnails/${width}/${name}`, image.response().body, {
      httpMetadata: { contentType: image.contentType() },
      customMetadata: { source: key, sourceEtag: source.etag },
    });
  }
  return "made";
}

export default {
  async queue(batch, env) {
    for (const message of batch.messages) {
      const outcome = await thumbnails(env, message.body);
      console.log(`thumbnails of ${message.body.object.key}: ${outcome}`);
      message.ack();
    }
  },
};
