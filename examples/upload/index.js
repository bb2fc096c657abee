// The first step of the photo pipeline: `PUT /upload/<name>` stores the request body in the
// `photos` bucket under `uploads/<name>`, streamed (never buffered whole), with its content type.
// Storing it sends an object-create notification, which runs the `thumbnail` function.
const TYPES = { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp" };
const NAME = /^[A-Za-z0-9._ -]{1,200}$/;

export default {
  async fetch(request, env) {
    if (request.method !== "PUT") {
      return Response.json(
        { error: "use PUT /upload/<name> with the file as the body" },
        { status: 405, headers: { allow: "PUT" } },
      );
    }
    if (!env.PHOTOS) {
      return Response.json({ error: "no bucket is bound to this function (serve examples/islet.toml)" }, { status: 503 });
    }
    const name = decodeURIComponent(new URL(request.url).pathname.replace(/^\/upload\/?/, ""));
    if (!NAME.test(name) || name.startsWith(".")) {
      return Response.json(
        { error: "name the file: PUT /upload/<name>, of letters, digits, '.', '_', '-' and spaces" },
        { status: 400 },
      );
    }
    const extension = name.includes(".") ? name.slice(name.lastIndexOf(".") + 1).toLowerCase() : "";
    const contentType = request.headers.get("content-type") ?? TYPES[extension] ?? "application/octet-stream";
    const object = await env.PHOTOS.put(`uploads/${name}`, request.body, { httpMetadata: { contentType } });
    return Response.json(
      { key: object.key, size: object.size, etag: object.etag },
      { status: 201, headers: { etag: object.httpEtag, location: `/photos/${object.key}` } },
    );
  },
};
