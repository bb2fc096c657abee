// Accepts a PUT body and answers with its size and SHA-256, computed with crypto.subtle.
// (A later version stores the body in object storage through an env binding.)
export default {
  async fetch(request) {
    if (request.method !== "PUT") {
      return Response.json({ error: "use PUT with the file as the body" }, { status: 405, headers: { allow: "PUT" } });
    }
    const bytes = new Uint8Array(await request.arrayBuffer());
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    const sha256 = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    return Response.json({ size: bytes.byteLength, sha256 }, { status: 201 });
  },
};
