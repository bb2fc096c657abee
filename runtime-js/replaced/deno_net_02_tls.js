// Stands in for Deno's "ext:deno_net/02_tls.js", which deno_fetch's 22_http_client.js loads only for
// Deno.createHttpClient (client certificates, proxies, custom CAs). Handlers get no Deno namespace,
// so that path is unreachable; this keeps the whole deno_net extension (sockets, QUIC) out of Islet.
(function () {
const { primordials } = __bootstrap;
const { TypeError } = primordials;

function loadTlsKeyPair(api) {
  throw new TypeError(`${api} is not available in Islet`);
}

return { loadTlsKeyPair };
})();
