// A small JSON API routed on method and path, keeping its items in KV (`env.ITEMS`, bound in
// examples/islet.toml): every isolate on every thread, and the node after a restart, sees the same
// items. Ids come from a counter updated with a checked atomic commit, so two POSTs at once never
// get the same id. Served as a plain directory (no bindings), it keeps items in the isolate's
// memory instead, which other isolates do not see.
import { json, notFound } from "./respond.js";

// Served both as json-api.localhost/items and as localhost/json-api/items.
const routes = new URLPattern({ pathname: "{/json-api}?/items{/:id}?" });

export default {
  async fetch(request, env) {
    const store = env.ITEMS ? kvStore(env.ITEMS) : memoryStore;
    const url = new URL(request.url);
    const match = routes.exec(url);
    if (!match) {
      if (url.pathname === "/" || url.pathname === "/json-api" || url.pathname === "/json-api/") {
        return json({ name: "json-api", greeting: env.GREETING ?? "hello", items: await store.count() });
      }
      return notFound(url.pathname);
    }
    const id = match.pathname.groups.id;
    switch (request.method) {
      case "GET": {
        if (id === undefined) return json(await store.all());
        const item = await store.get(id);
        return item === null ? notFound(`item ${id}`) : json(item);
      }
      case "POST": {
        let body;
        try {
          body = await request.json();
        } catch {
          return json({ error: "the body must be JSON" }, 400);
        }
        if (body === null || typeof body !== "object" || Array.isArray(body)) {
          return json({ error: "the body must be a JSON object" }, 400);
        }
        const item = await store.add(body);
        return item === null ? json({ error: "too many writes at once; try again" }, 503) : json(item, 201);
      }
      case "DELETE":
        return (await store.delete(id)) ? new Response(null, { status: 204 }) : notFound(`item ${id}`);
      default:
        return json({ error: `method ${request.method} not allowed` }, 405);
    }
  },
};

function kvStore(kv) {
  return {
    async get(id) {
      return await kv.get(`item:${id}`, "json");
    },
    async all() {
      const { keys } = await kv.list({ prefix: "item:", limit: 100 });
      if (keys.length === 0) return [];
      const items = await kv.get(keys.map((k) => k.name), "json");
      return [...items.values()].filter((item) => item !== null);
    },
    async count() {
      return (await kv.list({ prefix: "item:", limit: 1000 })).keys.length;
    },
    // The next id and the item, committed together only if no other POST took that id first;
    // a POST that lost the race waits a moment (more after each loss) and tries the next id.
    async add(fields) {
      for (let attempt = 0; attempt < 50; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * 2 * attempt));
        const counter = await kv.getWithMetadata("next-id");
        const id = String(Number(counter.value ?? "0") + 1);
        const { id: _ignored, ...rest } = fields; // the id is the store's to give
        const item = { id, ...rest };
        const { ok } = await kv.atomic()
          .check({ key: "next-id", version: counter.version })
          .set("next-id", id)
          .set(`item:${id}`, JSON.stringify(item))
          .commit();
        if (ok) return item;
      }
      return null;
    },
    async delete(id) {
      const entry = await kv.getWithMetadata(`item:${id}`);
      if (entry.value === null) return false;
      const { ok } = await kv.atomic().check({ key: `item:${id}`, version: entry.version }).delete(`item:${id}`).commit();
      return ok;
    },
  };
}

const items = new Map();
let nextId = 1;

const memoryStore = {
  get: (id) => items.get(id) ?? null,
  all: () => [...items.values()],
  count: () => items.size,
  add(fields) {
    const item = { id: String(nextId++), ...fields };
    items.set(item.id, item);
    return item;
  },
  delete: (id) => items.delete(id),
};
