// A TypeScript function: its types are stripped when it is loaded or deployed (positions stay, so
// errors point at this file as written). GET /greet-ts?name=Ada
interface Greeting {
  greeting: string;
  at: string;
}

function greet(name: string): Greeting {
  return { greeting: `Hello, ${name}!`, at: new Date().toISOString() };
}

interface Env {
  readonly DEFAULT_NAME?: string;
}

export default {
  fetch(request: Request, env: Env): Response {
    const name = new URL(request.url).searchParams.get("name") ?? env.DEFAULT_NAME ?? "world";
    return Response.json(greet(name));
  },
};
