// An HTTP handler: GET /{{name}}/?name=you answers {"message":"hello, you", ...}.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const name = url.searchParams.get("name") ?? "world";
    console.log(`greeting ${name}`);
    return Response.json({ message: `${env.GREETING}, ${name}`, method: request.method, path: url.pathname });
  },
};
