// The smallest Islet function: answers every request with a line of text.
export default {
  fetch() {
    return new Response("Hello from Islet!\n");
  },
};
