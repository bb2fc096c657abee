// PUT /{{name}}/<file> stores a photo under uploads/<file>; its object-create event makes a 100 px
// wide JPEG under thumbnails/<file>; GET /{{name}}/<file> serves the thumbnail (404 until made).
const WIDTH = 100;

export default {
  async fetch(request, env) {
    const file = new URL(request.url).pathname.split("/").filter(Boolean).slice(1).join("/");
    if (!file) return new Response("PUT or GET /{{name}}/<file>\n", { status: 400 });
    if (request.method === "PUT") {
      const contentType = request.headers.get("content-type") ?? "application/octet-stream";
      await env.PHOTOS.put(`uploads/${file}`, request.body, { httpMetadata: { contentType } });
      return Response.json({ uploaded: file }, { status: 201 });
    }
    const thumbnail = await env.PHOTOS.get(`thumbnails/${file}`);
    if (thumbnail === null) return new Response("no thumbnail yet\n", { status: 404 });
    return new Response(thumbnail.body, { headers: { "content-type": thumbnail.httpMetadata.contentType ?? "image/jpeg" } });
  },

  async queue(batch, env) {
    for (const message of batch.messages) {
      const key = message.body.object.key;
      const source = await env.PHOTOS.get(key);
      if (source !== null) {
        const image = await env.IMAGES.input(await source.arrayBuffer())
          .transform({ width: WIDTH })
          .output({ format: "image/jpeg", quality: 80 });
        await env.PHOTOS.put(`thumbnails/${key.slice("uploads/".length)}`, image.response().body, {
          httpMetadata: { contentType: image.contentType() },
        });
        console.log(`thumbnail of ${key} made`);
      }
      message.ack();
    }
  },
};
