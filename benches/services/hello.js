export default {
  fetch() {
    return new Response("Hello from Islet!");
  },
};
