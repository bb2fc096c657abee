// A small JSON API routed on method and path, keeping its items in the isolate's memory (globals
// persist across requests served by the same isolate, as on Workers; durable state is what KV is for).
import { json, notFound } from "./respond.js";

const items = new Map();
let nextId = 1;

// Served both as json-api.localhost/items and as localhost/json-api/items.
const routes = new URLPattern({ pathname: "{/json-api}?/items{/:id}?" });

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const match = routes.exec(url);
    if (!match) {
      if (url.pathname === "/" || url.pathname === "/json-api" || url.pathname === "/json-api/") {
        return json({ name: "json-api", greeting: env.GREETING ?? "hello", items: items.size });
      }
      return notFound(url.pathname);
    }
    const id = match.pathname.groups.id;
    switch (request.method) {
      case "GET":
        if (id === undefined) return json([...items.values()]);
        return items.has(id) ? json(items.get(id)) : notFound(`item ${id}`);
      case "POST": {
        let body;
        try {
          body = await request.json();
        } catch {
          return json({ error: "the body must be JSON" }, 400);
        }
        const item = { id: String(nextId++), ...body };
        items.set(item.id, item);
        return json(item, 201);
      }
      case "DELETE":
        return items.delete(id) ? new Response(null, { status: 204 }) : notFound(`item ${id}`);
      default:
        return json({ error: `method ${request.method} not allowed` }, 405);
    }
  },
};
