// Reads the `photos` bucket: `GET /photos/<key>` streams an object with its content type and etag
// (304 on a matching If-None-Match, 206 for a Range), `GET /photos/?prefix=thumbnails/` lists keys.
export default {
  async fetch(request, env) {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return Response.json({ error: "use GET" }, { status: 405, headers: { allow: "GET, HEAD" } });
    }
    if (!env.PHOTOS) {
      return Response.json({ error: "no bucket is bound to this function (serve examples/islet.toml)" }, { status: 503 });
    }
    const url = new URL(request.url);
    const key = decodeURIComponent(url.pathname.replace(/^\/photos\/?/, ""));
    if (key === "") {
      const listed = await env.PHOTOS.list({
        prefix: url.searchParams.get("prefix") ?? "",
        cursor: url.searchParams.get("cursor") ?? undefined,
        delimiter: url.searchParams.get("delimiter") ?? undefined,
      });
      return Response.json({
        keys: listed.objects.map((o) => ({ key: o.key, size: o.size, etag: o.etag, uploaded: o.uploaded })),
        prefixes: listed.delimitedPrefixes,
        cursor: listed.truncated ? listed.cursor : null,
      });
    }
    const ranged = request.headers.has("range");
    const object = await env.PHOTOS.get(key, { onlyIf: request.headers, range: ranged ? request.headers : undefined });
    if (object === null) {
      return Response.json({ error: `no object '${key}'` }, { status: 404 });
    }
    const headers = new Headers();
    object.writeHttpMetadata(headers);
    headers.set("etag", object.httpEtag);
    headers.set("accept-ranges", "bytes");
    if (!("body" in object)) {
      return new Response(null, { status: 304, headers });
    }
    if (ranged && object.range) {
      const { offset, length } = object.range;
      headers.set("content-range", `bytes ${offset}-${offset + length - 1}/${object.size}`);
      return new Response(request.method === "HEAD" ? null : object.body, { status: 206, headers });
    }
    return new Response(request.method === "HEAD" ? null : object.body, { headers });
  },
};
