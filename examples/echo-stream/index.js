// Streams the request body straight back: nothing is buffered, however large the body is.
export default {
  fetch(request) {
    const headers = { "content-type": request.headers.get("content-type") ?? "application/octet-stream" };
    return new Response(request.body, { headers });
  },
};
