export function json(value, status = 200) {
  return Response.json(value, { status });
}

export function notFound(what) {
  return json({ error: `not found: ${what}` }, 404);
}
